package virtio

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

// Layout of the split virtqueue (virtio 1.2, section 2.7).
const (
	descSize     = 16
	descFNext    = 1
	descFWrite   = 2
	descFIndir   = 4
	availFNoIRQ  = 1
	usedFNoKick  = 1
	usedElemSize = 8
	// MaxQueueSize is the largest split ring the spec allows.
	MaxQueueSize = 32768
	// maxIndirect bounds an indirect table; Linux never builds one longer
	// than the ring, and a hostile driver must not make us walk megabytes.
	maxIndirect = 1024
	// maxChainBytes bounds the bytes one chain may describe, so sums never
	// overflow and a device never trusts a multi-gigabyte request.
	maxChainBytes = 1 << 32
)

// Queue is one split virtqueue. It is not safe for concurrent use: each
// queue is served by exactly one worker.
type Queue struct {
	mem       GuestMemory
	cfg       QueueConfig
	eventIdx  bool
	indirect  bool
	nextAvail uint16 // next available-ring slot to consume
	nextUsed  uint16 // next used-ring slot to fill
	// signalled is the used index at the last interrupt decision, for the
	// event-index rule; valid once the first decision was made.
	signalled      uint16
	signalledValid bool
	// usedFlags is what the device last stored in the used ring's flags;
	// the device is their only writer and stores them with the index.
	usedFlags uint16
	// barrier is the target of fence's locked instruction; its value is
	// meaningless.
	barrier uint32

	desc, avail, used []byte // the three ring areas, bounds-checked once

	// The fields shared with the driver, accessed atomically (see
	// queue_unsafe.go). availFlags, availIdx and usedEvent are the
	// driver's; usedHeader (flags and idx) and availEvent the device's.
	availFlags, availIdx, usedEvent ringField
	usedHeader, availEvent          ringField
}

// NewQueue checks cfg against mem and the spec's alignment rules and
// returns a queue that resumes at nextAvail (0 for a fresh device; the
// vhost-user server passes what QEMU restored). The used index is read from
// the ring, so a queue restarted on the same ring continues where it was.
func NewQueue(mem GuestMemory, cfg QueueConfig, features uint64, nextAvail uint16) (*Queue, error) {
	n := uint64(cfg.Size)
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("queue size %d: want a power of two up to %d: %w", cfg.Size, MaxQueueSize, ErrBadRing)
	}
	if cfg.DescAddr%16 != 0 || cfg.AvailAddr%2 != 0 || cfg.UsedAddr%4 != 0 {
		return nil, fmt.Errorf("ring addresses desc %#x avail %#x used %#x: misaligned: %w",
			cfg.DescAddr, cfg.AvailAddr, cfg.UsedAddr, ErrBadRing)
	}
	q := &Queue{
		mem:       mem,
		cfg:       cfg,
		eventIdx:  features&FeatureRingEventIdx != 0,
		indirect:  features&FeatureRingIndirectDesc != 0,
		nextAvail: nextAvail,
	}
	var err error
	if q.desc, err = mem.Slice(cfg.DescAddr, descSize*n); err != nil {
		return nil, fmt.Errorf("descriptor table at %#x: %w: %w", cfg.DescAddr, ErrBadRing, err)
	}
	availLen, usedLen := 6+2*n, 6+usedElemSize*n
	avail, err := mapRingWords(mem, cfg.AvailAddr, availLen)
	if err != nil {
		return nil, fmt.Errorf("available ring at %#x: %w: %w", cfg.AvailAddr, ErrBadRing, err)
	}
	used, err := mapRingWords(mem, cfg.UsedAddr, usedLen)
	if err != nil {
		return nil, fmt.Errorf("used ring at %#x: %w: %w", cfg.UsedAddr, ErrBadRing, err)
	}
	q.avail, q.used = avail.ring(availLen), used.ring(usedLen)
	q.availFlags, q.availIdx, q.usedEvent = avail.field(0), avail.field(2), avail.field(4+2*n)
	q.usedHeader, q.availEvent = used.field(0), used.field(4+usedElemSize*n)
	q.usedFlags, q.nextUsed = q.usedHeader.loadHeader()
	return q, nil
}

// Size is the ring size the driver chose.
func (q *Queue) Size() uint16 { return q.cfg.Size }

// NextAvail is the available-ring index the device consumes next (what
// vhost-user's GET_VRING_BASE reports).
func (q *Queue) NextAvail() uint16 { return q.nextAvail }

// Memory ordering (virtio 1.2, section 2.7.13, and the notification
// suppression rules of 2.7.7 and 2.7.10). The driver runs on other CPUs
// and orders its side with Linux's virtio_wmb/virtio_rmb/virtio_mb; this
// is the device's side of each pairing. The shared 16-bit fields go
// through atomic accesses (queue_unsafe.go); the ring entries, used
// elements and descriptors are plain accesses ordered by them.
//
//  1. Buffers made available. The driver writes descriptors and the
//     available ring entry, then (wmb) the available idx. The device loads
//     the idx atomically (availIdx.load) and only then reads the entry and
//     the descriptors: the atomic load keeps those later loads after it
//     (x86 does not reorder loads; Go does not hoist across an atomic).
//     What is read after it is still hostile and checked: the driver may
//     rewrite a descriptor at any time, so each is copied once (readDesc).
//  2. Buffers made used. The device writes the used element (plain), then
//     stores the used idx atomically (Complete): the store is a release on
//     every architecture Go supports and a locked instruction on amd64, so
//     the element is visible first. The driver reads the idx, rmb, then
//     the element.
//  3. Interrupt suppression. The device stores the used idx and then loads
//     used_event (or the available flags) to decide on an interrupt; the
//     driver stores used_event, mb, and loads the used idx to decide
//     whether to wait. Each side's load must not pass its own earlier
//     store (the one reordering x86 allows, through the store buffer),
//     or both miss the other's update: a lost interrupt, a hung queue.
//     NeedsInterrupt fences before its loads.
//  4. Kick suppression, the mirror of 3. The device stores avail_event (or
//     clears NO_NOTIFY in the used flags) and then re-loads the available
//     idx (SetNotify(true), then HasAvailable); the driver stores the
//     available idx, mb, and loads avail_event or the used flags to decide
//     whether to kick. SetNotify fences after its store.
//
// In 3 and 4 the atomic store is already a full barrier on amd64 (XCHG or
// LOCK CMPXCHG), and an arm64 store-release followed by a load-acquire is
// ordered too, so the fence is formally redundant there. It is kept
// because it is the spec's mb at exactly the point that pairs with the
// driver's, it does not depend on how a Go port lowers atomic stores, and
// it costs one locked instruction per batch. Linux's vhost has smp_mb() at
// the same two points. Orderings 1 and 2 need no fence: x86 keeps loads
// in order and stores in order, and the atomics stop the compiler.

// fence is a full memory barrier: on amd64 an atomic add is a LOCK-prefixed
// instruction, which orders every earlier load and store before every later
// one, and the Go compiler never moves memory accesses across an atomic.
func (q *Queue) fence() { atomic.AddUint32(&q.barrier, 0) }

// HasAvailable reports whether the driver made buffers available that the
// device has not consumed yet.
func (q *Queue) HasAvailable() bool { return q.availIdx.load() != q.nextAvail }

// Next takes the next available chain. It returns (nil, nil) when the ring
// is empty. For a malformed chain it returns the chain (with Head set and
// no buffers) and an error wrapping ErrBadChain: the device should
// Complete it with 0 bytes so the driver gets the buffer back. An error
// with a nil chain (the driver's available index or head is impossible)
// means the queue is broken and the device should stop serving it.
func (q *Queue) Next() (*Chain, error) {
	avail := q.availIdx.load()
	if avail == q.nextAvail {
		return nil, nil
	}
	if uint16(avail-q.nextAvail) > q.cfg.Size {
		return nil, fmt.Errorf("available index %d is %d ahead of %d, more than the ring size %d: %w",
			avail, uint16(avail-q.nextAvail), q.nextAvail, q.cfg.Size, ErrBadRing)
	}
	slot := uint64(q.nextAvail % q.cfg.Size)
	head := binary.LittleEndian.Uint16(q.avail[4+2*slot:])
	if head >= q.cfg.Size {
		return nil, fmt.Errorf("head descriptor %d out of range (ring size %d): %w", head, q.cfg.Size, ErrBadRing)
	}
	q.nextAvail++
	c := &Chain{Head: head}
	if err := q.walk(c); err != nil {
		c.Readable, c.Writable = nil, nil
		return c, fmt.Errorf("chain at head %d: %w", head, err)
	}
	return c, nil
}

type descriptor struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func readDesc(table []byte, i uint64) descriptor {
	b := table[i*descSize:]
	return descriptor{
		addr:  binary.LittleEndian.Uint64(b),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// walk follows the chain starting at c.Head, direct or through one
// indirect table, and collects its buffers.
func (q *Queue) walk(c *Chain) error {
	table, count := q.desc, uint64(q.cfg.Size)
	i := uint64(c.Head)
	indirect := false
	var total uint64
	for seen := uint64(0); ; seen++ {
		if seen >= count {
			return fmt.Errorf("more than %d descriptors (a loop?): %w", count, ErrBadChain)
		}
		d := readDesc(table, i)
		if d.flags&descFIndir != 0 {
			// Linux (like the spec's simplest case) uses an indirect table as
			// the only descriptor of a chain; anything else is refused.
			if !q.indirect || indirect || seen != 0 {
				return fmt.Errorf("descriptor %d: unexpected indirect table: %w", i, ErrBadChain)
			}
			if d.flags&descFNext != 0 {
				return fmt.Errorf("descriptor %d: indirect with next: %w", i, ErrBadChain)
			}
			if d.len == 0 || d.len%descSize != 0 || d.len/descSize > maxIndirect {
				return fmt.Errorf("descriptor %d: indirect table of %d bytes: %w", i, d.len, ErrBadChain)
			}
			t, err := q.mem.Slice(d.addr, uint64(d.len))
			if err != nil {
				return fmt.Errorf("descriptor %d: indirect table at %#x: %w: %w", i, d.addr, ErrBadChain, err)
			}
			table, count, i, seen, indirect = t, uint64(d.len/descSize), 0, ^uint64(0), true
			continue // seen wraps to 0
		}
		if d.len > 0 {
			total += uint64(d.len)
			if total > maxChainBytes {
				return fmt.Errorf("chain longer than %d bytes: %w", uint64(maxChainBytes), ErrBadChain)
			}
			buf, err := q.mem.Slice(d.addr, uint64(d.len))
			if err != nil {
				return fmt.Errorf("descriptor %d: buffer [%#x, +%#x): %w: %w", i, d.addr, d.len, ErrBadChain, err)
			}
			if d.flags&descFWrite != 0 {
				c.Writable = append(c.Writable, buf)
			} else {
				if len(c.Writable) > 0 {
					return fmt.Errorf("descriptor %d: readable buffer after a writable one: %w", i, ErrBadChain)
				}
				c.Readable = append(c.Readable, buf)
			}
		}
		if d.flags&descFNext == 0 {
			return nil
		}
		if uint64(d.next) >= count {
			return fmt.Errorf("descriptor %d: next %d out of range %d: %w", i, d.next, count, ErrBadChain)
		}
		i = uint64(d.next)
	}
}

// Complete returns chain c to the driver with written bytes filled in its
// writable buffers.
func (q *Queue) Complete(c *Chain, written uint32) error {
	if c == nil || c.Head >= q.cfg.Size {
		return fmt.Errorf("complete: no such chain: %w", ErrBadChain)
	}
	slot := uint64(q.nextUsed % q.cfg.Size)
	e := q.used[4+usedElemSize*slot:]
	binary.LittleEndian.PutUint32(e, uint32(c.Head))
	binary.LittleEndian.PutUint32(e[4:], written)
	// The element is written before the index that publishes it (ordering
	// 2 above).
	q.nextUsed++
	q.usedHeader.storeHeader(q.usedFlags, q.nextUsed)
	return nil
}

// NeedsInterrupt says whether the driver wants an interrupt for the used
// buffers published since the last call (event index or the available
// ring's NO_INTERRUPT flag). Call it after a batch of Complete calls.
func (q *Queue) NeedsInterrupt() bool {
	q.fence() // the used index stored by Complete before the loads below
	if !q.eventIdx {
		return q.availFlags.load()&availFNoIRQ == 0
	}
	old, now := q.signalled, q.nextUsed
	valid := q.signalledValid
	q.signalled, q.signalledValid = now, true
	if !valid {
		return true
	}
	usedEvent := q.usedEvent.load()
	// vring_need_event: did the used index pass used_event since old?
	return uint16(now-usedEvent-1) < uint16(now-old)
}

// SetNotify asks the driver to kick (true) or not to bother (false) when it
// adds buffers. With the event index it publishes the index the device
// waits for. After enabling, check HasAvailable once more: the driver may
// have added buffers just before it saw the change.
func (q *Queue) SetNotify(enable bool) {
	if q.eventIdx {
		if enable {
			q.availEvent.store(q.nextAvail)
			q.fence() // before the caller re-reads the available index
		}
		return
	}
	if enable {
		q.usedFlags &^= usedFNoKick
	} else {
		q.usedFlags |= usedFNoKick
	}
	q.usedHeader.storeHeader(q.usedFlags, q.nextUsed)
	if enable {
		q.fence() // before the caller re-reads the available index
	}
}

// Chain is one request: buffers the device reads (driver → device) followed
// by buffers it writes (device → driver). The slices alias guest memory.
type Chain struct {
	Head     uint16
	Readable [][]byte
	Writable [][]byte
}

// ReadableLen is the total size of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return sumLen(c.Readable) }

// WritableLen is the total size of the writable buffers.
func (c *Chain) WritableLen() uint64 { return sumLen(c.Writable) }

func sumLen(bufs [][]byte) uint64 {
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b))
	}
	return n
}

// Reader reads the chain's readable buffers in order.
func (c *Chain) Reader() *SegmentReader { return &SegmentReader{segs: c.Readable} }

// Writer writes the chain's writable buffers in order.
func (c *Chain) Writer() *SegmentWriter { return &SegmentWriter{segs: c.Writable} }

// SegmentReader is an io.Reader over a list of buffers.
type SegmentReader struct {
	segs [][]byte
	off  int
}

// Read implements io.Reader.
func (r *SegmentReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.segs) > 0 {
		c := copy(p[n:], r.segs[0][r.off:])
		n += c
		r.off += c
		if r.off == len(r.segs[0]) {
			r.segs, r.off = r.segs[1:], 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Remaining is the number of bytes not read yet.
func (r *SegmentReader) Remaining() uint64 { return sumLen(r.segs) - uint64(r.off) }

// Segments returns the unread bytes as guest-memory slices, for
// vectored I/O (pwritev) without a copy; it does not advance the reader.
func (r *SegmentReader) Segments() [][]byte {
	if len(r.segs) == 0 {
		return nil
	}
	out := append([][]byte{r.segs[0][r.off:]}, r.segs[1:]...)
	return out
}

// SegmentWriter is an io.Writer over a list of buffers; writing past their
// end fails with io.ErrShortWrite.
type SegmentWriter struct {
	segs    [][]byte
	off     int
	written uint64
}

// Write implements io.Writer.
func (w *SegmentWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(w.segs) > 0 {
		c := copy(w.segs[0][w.off:], p[n:])
		n += c
		w.off += c
		if w.off == len(w.segs[0]) {
			w.segs, w.off = w.segs[1:], 0
		}
	}
	w.written += uint64(n)
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// Written is the number of bytes written so far.
func (w *SegmentWriter) Written() uint64 { return w.written }

// Remaining is the space left.
func (w *SegmentWriter) Remaining() uint64 { return sumLen(w.segs) - uint64(w.off) }

// Segments returns the space left as guest-memory slices, for vectored
// I/O (preadv) without a copy; it does not advance the writer. Call Skip
// with the bytes filled.
func (w *SegmentWriter) Segments() [][]byte {
	if len(w.segs) == 0 {
		return nil
	}
	return append([][]byte{w.segs[0][w.off:]}, w.segs[1:]...)
}

// Skip advances the writer by n bytes filled through Segments.
func (w *SegmentWriter) Skip(n uint64) error {
	if n > w.Remaining() {
		return io.ErrShortWrite
	}
	w.written += n
	for n > 0 {
		c := uint64(len(w.segs[0]) - w.off)
		if n < c {
			w.off += int(n)
			return nil
		}
		n -= c
		w.segs, w.off = w.segs[1:], 0
	}
	return nil
}
