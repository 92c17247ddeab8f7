package vnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// This file is a small virtio driver for tests: guest memory as a byte
// slice, split rings laid out in it by hand, kicks and interrupts as
// eventfds — what a guest's driver and a transport would do, without a
// guest.

// skipUnderRace skips a test in which the test, playing the guest driver,
// and the device's workers share ring memory: they synchronize the way a
// guest and a device do, through eventfds and the ring's own indices,
// which the race detector cannot see, so it reports races that are the
// protocol working as designed.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("SKIP under the race detector: driver and device share guest memory outside Go's memory model (eventfd handoff)")
	}
}

// guestMem is guest RAM starting at guest-physical address 0.
type guestMem []byte

func (m guestMem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m)) || n > uint64(len(m))-gpa {
		return nil, fmt.Errorf("[%#x, +%#x) outside %#x bytes of guest memory", gpa, n, len(m))
	}
	return m[gpa : gpa+n : gpa+n], nil
}

const testRingSize = 256

// testQueue is the driver side of one split virtqueue.
type testQueue struct {
	t        *testing.T
	mem      guestMem
	cfg      virtio.QueueConfig
	eventIdx bool
	free     []uint16            // free descriptors
	chains   map[uint16][]uint16 // head → its descriptors
	bufs     map[uint16][]uint64 // head → addresses of its writable buffers
	next     uint64              // bump allocator for buffers
	end      uint64
	availIdx uint16
	lastUsed uint16
	kick     *virtio.EventFD
	irq      *virtio.EventFD
}

// newTestQueue lays a ring out at base, with buffers allocated from
// [base+64 KiB, base+size).
func newTestQueue(t *testing.T, mem guestMem, base, size uint64, eventIdx bool) *testQueue {
	t.Helper()
	skipUnderRace(t)
	kick, err := virtio.NewEventFD()
	require.NoError(t, err)
	irq, err := virtio.NewEventFD()
	require.NoError(t, err)
	t.Cleanup(func() { kick.Close(); irq.Close() })
	q := &testQueue{
		t:   t,
		mem: mem,
		cfg: virtio.QueueConfig{
			Size:      testRingSize,
			DescAddr:  base,
			AvailAddr: base + 16*testRingSize,
			UsedAddr:  base + 16*testRingSize + 4096,
		},
		eventIdx: eventIdx,
		chains:   map[uint16][]uint16{},
		bufs:     map[uint16][]uint64{},
		next:     base + 64<<10,
		end:      base + size,
		kick:     kick,
		irq:      irq,
	}
	for i := testRingSize - 1; i >= 0; i-- {
		q.free = append(q.free, uint16(i))
	}
	return q
}

func (q *testQueue) active(features uint64) virtio.ActiveQueue {
	vq, err := virtio.NewQueue(q.mem, q.cfg, features, 0)
	require.NoError(q.t, err)
	return virtio.ActiveQueue{Queue: vq, Kick: q.kick, Interrupt: q.irq}
}

func (q *testQueue) alloc(n int) uint64 {
	q.next = (q.next + 15) &^ 15
	if q.next+uint64(n) > q.end {
		q.t.Fatalf("test queue out of buffer space")
	}
	a := q.next
	q.next += uint64(n)
	return a
}

// desc is one buffer of a chain to post: data for a readable one, size for
// a writable one. addr, if set, places it by hand (hostile tests).
type desc struct {
	data     []byte
	size     int
	writable bool
	addr     uint64
	len      uint32 // if set, the length written into the descriptor
}

// post makes a chain available and kicks; it returns the head.
func (q *testQueue) post(ds ...desc) uint16 {
	q.t.Helper()
	require.GreaterOrEqual(q.t, len(q.free), len(ds), "out of descriptors")
	idx := q.free[len(q.free)-len(ds):]
	q.free = q.free[:len(q.free)-len(ds)]
	head := idx[0]
	q.chains[head] = append([]uint16(nil), idx...)
	q.bufs[head] = nil
	for i, d := range ds {
		size := len(d.data)
		if d.writable {
			size = d.size
		}
		addr := d.addr
		if addr == 0 {
			addr = q.alloc(size)
			copy(q.mem[addr:], d.data)
		}
		length := uint32(size)
		if d.len != 0 {
			length = d.len
		}
		var flags, next uint16
		if i+1 < len(ds) {
			flags |= 1 // NEXT
			next = idx[i+1]
		}
		if d.writable {
			flags |= 2 // WRITE
			q.bufs[head] = append(q.bufs[head], addr)
		}
		e := q.mem[q.cfg.DescAddr+16*uint64(idx[i]):]
		binary.LittleEndian.PutUint64(e, addr)
		binary.LittleEndian.PutUint32(e[8:], length)
		binary.LittleEndian.PutUint16(e[12:], flags)
		binary.LittleEndian.PutUint16(e[14:], next)
	}
	avail := q.mem[q.cfg.AvailAddr:]
	binary.LittleEndian.PutUint16(avail[4+2*uint64(q.availIdx%testRingSize):], head)
	q.availIdx++
	binary.LittleEndian.PutUint16(avail[2:], q.availIdx)
	require.NoError(q.t, q.kick.Signal())
	return head
}

// used is one element the device returned.
type used struct {
	head uint16
	len  uint32
	// data is what the device wrote into the chain's writable buffers.
	data []byte
}

func (q *testQueue) usedIdx() uint16 {
	return binary.LittleEndian.Uint16(q.mem[q.cfg.UsedAddr+2:])
}

// wait blocks until the device returns a chain and takes it. It asks for
// an interrupt first (the event index, or interrupts are never
// suppressed), as Linux does before it sleeps.
func (q *testQueue) wait() used {
	q.t.Helper()
	for q.usedIdx() == q.lastUsed {
		if q.eventIdx {
			binary.LittleEndian.PutUint16(q.mem[q.cfg.AvailAddr+4+2*testRingSize:], q.lastUsed)
		}
		if q.usedIdx() != q.lastUsed {
			break
		}
		fds := []unix.PollFd{{Fd: int32(q.irq.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			q.t.Fatalf("poll interrupt: %v", err)
		}
		_, err := q.irq.Drain()
		require.NoError(q.t, err)
	}
	return q.take()
}

// take returns the next used element; the ring must have one.
func (q *testQueue) take() used {
	q.t.Helper()
	e := q.mem[q.cfg.UsedAddr+4+8*uint64(q.lastUsed%testRingSize):]
	u := used{head: uint16(binary.LittleEndian.Uint32(e)), len: binary.LittleEndian.Uint32(e[4:])}
	q.lastUsed++
	descs, ok := q.chains[u.head]
	require.True(q.t, ok, "device returned head %d, which is not in flight", u.head)
	// Gather what the device wrote from the writable descriptors.
	rest := int(u.len)
	for _, i := range descs {
		e := q.mem[q.cfg.DescAddr+16*uint64(i):]
		if binary.LittleEndian.Uint16(e[12:])&2 == 0 {
			continue
		}
		addr := binary.LittleEndian.Uint64(e)
		n := min(rest, int(binary.LittleEndian.Uint32(e[8:])))
		if n == 0 {
			continue
		}
		u.data = append(u.data, q.mem[addr:addr+uint64(n)]...)
		rest -= n
	}
	delete(q.chains, u.head)
	delete(q.bufs, u.head)
	q.free = append(q.free, descs...)
	return u
}

// packet is one received frame reassembled from its buffers.
type packet struct {
	hdr   netHdr
	frame []byte
	bufs  int
}

// receive waits for the next received frame, reassembling MRG_RXBUF
// buffers by num_buffers, and reposts one buffer of bufSize for each
// buffer consumed.
func (q *testQueue) receive(bufSize int) packet {
	q.t.Helper()
	u := q.wait()
	require.GreaterOrEqual(q.t, len(u.data), HdrLen, "receive buffer without a header")
	p := packet{hdr: decodeHdr(u.data), frame: u.data[HdrLen:], bufs: 1}
	require.NotZero(q.t, p.hdr.numBuffers, "num_buffers 0")
	for p.bufs < int(p.hdr.numBuffers) {
		p.frame = append(p.frame, q.wait().data...)
		p.bufs++
	}
	for range p.bufs {
		q.post(desc{size: bufSize, writable: true})
	}
	return p
}
