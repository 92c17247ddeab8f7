// Package virtiotest plays the driver side of a split virtqueue over guest
// memory made of a plain byte slice, so device packages can test their
// request handling end to end without a VM.
package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// ErrOutside is returned for an access outside a Memory.
var ErrOutside = errors.New("outside test guest memory")

// Memory is guest RAM as one byte slice at guest-physical Base. It
// implements virtio.GuestMemory with the same checks as real memory.
type Memory struct {
	Base  uint64
	Bytes []byte
}

// NewMemory returns size zeroed bytes of guest memory at base.
func NewMemory(base, size uint64) *Memory {
	return &Memory{Base: base, Bytes: make([]byte, size)}
}

// Slice implements virtio.GuestMemory.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	size := uint64(len(m.Bytes))
	if gpa < m.Base || gpa-m.Base > size || n > size-(gpa-m.Base) {
		return nil, fmt.Errorf("[%#x, +%#x): %w", gpa, n, ErrOutside)
	}
	off := gpa - m.Base
	return m.Bytes[off : off+n : off+n], nil
}

// Buffer is one descriptor of a chain a Driver adds: Data is copied into a
// readable buffer; a writable buffer is Len zeroed bytes.
type Buffer struct {
	Data     []byte
	Len      int
	Writable bool
}

// In is a readable buffer holding data.
func In(data []byte) Buffer { return Buffer{Data: data, Len: len(data)} }

// Out is a writable buffer of n bytes.
func Out(n int) Buffer { return Buffer{Len: n, Writable: true} }

// Driver owns one ring in a Memory and adds chains to it as a guest driver
// would. Buffers are carved from the memory after the ring; Reset frees
// them all.
type Driver struct {
	mem       *Memory
	cfg       virtio.QueueConfig
	availIdx  uint16
	usedIdx   uint16
	nextDesc  uint16
	heap      uint64 // next free guest-physical byte for buffers
	heapStart uint64
}

// NewDriver lays out a ring of size entries at gpa (16-byte aligned) in mem.
func NewDriver(mem *Memory, size uint16, gpa uint64) *Driver {
	n := uint64(size)
	desc := gpa
	avail := desc + 16*n
	used := (avail + 6 + 2*n + 3) &^ 3
	heap := (used + 6 + 8*n + 15) &^ 15
	return &Driver{
		mem:       mem,
		cfg:       virtio.QueueConfig{Size: size, DescAddr: desc, AvailAddr: avail, UsedAddr: used},
		heap:      heap,
		heapStart: heap,
	}
}

// Config is the ring's configuration, as a transport would pass it.
func (d *Driver) Config() virtio.QueueConfig { return d.cfg }

// Queue makes the device side of the ring.
func (d *Driver) Queue(features uint64) (*virtio.Queue, error) {
	return virtio.NewQueue(d.mem, d.cfg, features, d.availIdx)
}

// Reset frees every buffer (the caller must be done with them).
func (d *Driver) Reset() { d.heap = d.heapStart }

func (d *Driver) bytes(gpa, n uint64) []byte {
	b, err := d.mem.Slice(gpa, n)
	if err != nil {
		panic(fmt.Sprintf("virtiotest: driver ring outside memory: %v", err))
	}
	return b
}

func (d *Driver) alloc(n uint64) uint64 {
	gpa := d.heap
	d.heap = (d.heap + n + 15) &^ 15
	if d.heap > d.mem.Base+uint64(len(d.mem.Bytes)) {
		panic("virtiotest: out of guest memory for buffers; call Reset")
	}
	return gpa
}

// Chain is a chain a Driver added: its head and where each buffer is.
type Chain struct {
	Head uint16
	// Addrs and Lens give each buffer's guest-physical address and size.
	Addrs []uint64
	Lens  []int
	drv   *Driver
}

// Buffer returns the bytes of buffer i (aliasing guest memory).
func (c *Chain) Buffer(i int) []byte { return c.drv.bytes(c.Addrs[i], uint64(c.Lens[i])) }

// Add chains bufs with consecutive descriptors (wrapping around the table)
// and makes the chain available.
func (d *Driver) Add(bufs ...Buffer) *Chain {
	c := &Chain{Head: d.nextDesc, drv: d}
	for i, b := range bufs {
		gpa := d.alloc(uint64(b.Len))
		copy(d.bytes(gpa, uint64(b.Len)), b.Data)
		c.Addrs = append(c.Addrs, gpa)
		c.Lens = append(c.Lens, b.Len)
		idx := d.nextDesc
		d.nextDesc = (d.nextDesc + 1) % d.cfg.Size
		var flags uint16
		if b.Writable {
			flags |= 2
		}
		if i < len(bufs)-1 {
			flags |= 1
		}
		d.putDesc(d.cfg.DescAddr, idx, gpa, uint32(b.Len), flags, d.nextDesc)
	}
	d.Publish(c.Head)
	return c
}

// AddIndirect puts bufs in an indirect table referenced by one descriptor.
func (d *Driver) AddIndirect(bufs ...Buffer) *Chain {
	table := d.alloc(16 * uint64(len(bufs)))
	c := &Chain{Head: d.nextDesc, drv: d}
	for i, b := range bufs {
		gpa := d.alloc(uint64(b.Len))
		copy(d.bytes(gpa, uint64(b.Len)), b.Data)
		c.Addrs = append(c.Addrs, gpa)
		c.Lens = append(c.Lens, b.Len)
		var flags uint16
		if b.Writable {
			flags |= 2
		}
		if i < len(bufs)-1 {
			flags |= 1
		}
		d.putDesc(table, uint16(i), gpa, uint32(b.Len), flags, uint16(i+1))
	}
	d.putDesc(d.cfg.DescAddr, c.Head, table, uint32(16*len(bufs)), 4, 0)
	d.nextDesc = (d.nextDesc + 1) % d.cfg.Size
	d.Publish(c.Head)
	return c
}

func (d *Driver) putDesc(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	b := d.bytes(table+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// Publish makes head available (Add does it; use Publish for hand-made
// descriptors).
func (d *Driver) Publish(head uint16) {
	slot := uint64(d.availIdx % d.cfg.Size)
	binary.LittleEndian.PutUint16(d.bytes(d.cfg.AvailAddr+4+2*slot, 2), head)
	d.availIdx++
	binary.LittleEndian.PutUint16(d.bytes(d.cfg.AvailAddr+2, 2), d.availIdx)
}

// Used returns the next used element the device published, if any. Like
// Linux's driver it then asks for an interrupt at the next completion
// (used_event = the index it has consumed up to), which matters only with
// VIRTIO_RING_F_EVENT_IDX.
func (d *Driver) Used() (id, n uint32, ok bool) {
	idx := binary.LittleEndian.Uint16(d.bytes(d.cfg.UsedAddr+2, 2))
	if idx != d.usedIdx {
		e := d.bytes(d.cfg.UsedAddr+4+8*uint64(d.usedIdx%d.cfg.Size), 8)
		d.usedIdx++
		id, n, ok = binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), true
	}
	binary.LittleEndian.PutUint16(d.bytes(d.cfg.AvailAddr+4+2*uint64(d.cfg.Size), 2), d.usedIdx)
	return id, n, ok
}
