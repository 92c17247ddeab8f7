package vhostuser

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// Guest memory of the fake front end: one 2 MiB memfd shared as two
// regions, one low and one above 4 GiB, at made-up front-end addresses,
// so that both guest-physical lookups and address translation are
// exercised.
const (
	fakeRegionSize = 1 << 20
	fakeLowGPA     = 0
	fakeHighGPA    = 1 << 32
	fakeLowUVA     = 0x7f00_0000_0000
	fakeHighUVA    = 0x7f00_4000_0000

	// The ring lives in the high region, its buffers in the low one.
	ringDescGPA  = fakeHighGPA
	ringAvailGPA = fakeHighGPA + 0x1000
	ringUsedGPA  = fakeHighGPA + 0x2000
	bufGPA       = 0x8000
)

// testServer is a Server serving a patternDevice on a socket, with the
// errors it reported.
type testServer struct {
	path   string
	cancel context.CancelFunc
	done   chan error

	mu   sync.Mutex
	errs []error
}

func startServer(t *testing.T, dev virtio.Device) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "vu")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testServer{path: filepath.Join(dir, "s.sock"), done: make(chan error, 1)}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: ts.path, Net: "unix"})
	require.NoError(t, err)
	srv := NewServer(dev, Options{Name: "test", OnError: func(err error) {
		ts.mu.Lock()
		ts.errs = append(ts.errs, err)
		ts.mu.Unlock()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop ends Serve and checks it returned cleanly.
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	require.NoError(t, <-ts.done)
}

func (ts *testServer) errors() []error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]error(nil), ts.errs...)
}

// frontEnd plays QEMU: it sends hand-made messages and owns guest memory.
type frontEnd struct {
	t     *testing.T
	c     *net.UnixConn
	memfd int
	mem   []byte // the whole memfd: low region, then high region
}

func dial(t *testing.T, path string) *frontEnd {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	fd, err := unix.MemfdCreate("vhost-user-test", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, 2*fakeRegionSize))
	mem, err := unix.Mmap(fd, 0, 2*fakeRegionSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	f := &frontEnd{t: t, c: c, memfd: fd, mem: mem}
	t.Cleanup(func() {
		_ = c.Close()
		_ = unix.Munmap(mem)
		_ = unix.Close(fd)
	})
	return f
}

// send writes one message with fds attached.
func (f *frontEnd) send(req request, flags uint32, payload []byte, fds ...int) {
	f.t.Helper()
	b := encodeHeader(header{Request: req, Flags: version | flags, Size: uint32(len(payload))})
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := f.c.WriteMsgUnix(b, oob, nil)
	require.NoError(f.t, err)
	require.Equal(f.t, len(b), n)
	require.Equal(f.t, len(oob), oobn)
}

// reply reads the reply to req.
func (f *frontEnd) reply(req request) []byte {
	f.t.Helper()
	var hb [headerSize]byte
	_, err := io.ReadFull(f.c, hb[:])
	require.NoError(f.t, err, "reply to %v", req)
	le := binary.LittleEndian
	require.Equal(f.t, uint32(req), le.Uint32(hb[:]), "reply's request")
	require.Equal(f.t, uint32(version|flagReply), le.Uint32(hb[4:]), "reply's flags")
	p := make([]byte, le.Uint32(hb[8:]))
	_, err = io.ReadFull(f.c, p)
	require.NoError(f.t, err)
	return p
}

func (f *frontEnd) getU64(req request) uint64 {
	f.t.Helper()
	f.send(req, 0, nil)
	p := f.reply(req)
	require.Len(f.t, p, 8)
	return binary.LittleEndian.Uint64(p)
}

// ack sends a message with need_reply and requires a success ack.
func (f *frontEnd) ack(req request, payload []byte, fds ...int) {
	f.t.Helper()
	f.send(req, flagNeedReply, payload, fds...)
	p := f.reply(req)
	require.Equal(f.t, encodeU64(0), p, "ack of %v", req)
}

// requireClosed reads until the server hangs up.
func (f *frontEnd) requireClosed() {
	f.t.Helper()
	requireHangup(f.t, f.c)
}

// requireHangup reads c until the server closed it. A server that closes
// with unread data in its socket makes the kernel reset the connection.
func requireHangup(t *testing.T, c *net.UnixConn) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, unix.ECONNRESET) {
		require.NoError(t, err)
	}
}

func u64(v uint64) []byte { return encodeU64(v) }

func state(index, num uint32) []byte { return encodeVringState(vringState{Index: index, Num: num}) }

func memTablePayload(regions ...memRegion) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		for _, v := range []uint64{r.GuestAddr, r.Size, r.UserAddr, r.MmapOffset} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

// fakeRegions is the memory table of the fake front end.
func fakeRegions() []memRegion {
	return []memRegion{
		{GuestAddr: fakeLowGPA, Size: fakeRegionSize, UserAddr: fakeLowUVA, MmapOffset: 0},
		{GuestAddr: fakeHighGPA, Size: fakeRegionSize, UserAddr: fakeHighUVA, MmapOffset: fakeRegionSize},
	}
}

func addrPayload(index uint32, desc, used, avail uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{desc, used, avail, 0} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// uva is the front-end address of a guest-physical one.
func uva(gpa uint64) uint64 {
	if gpa >= fakeHighGPA {
		return fakeHighUVA + gpa - fakeHighGPA
	}
	return fakeLowUVA + gpa
}

// at is the front end's view of guest memory at gpa.
func (f *frontEnd) at(gpa uint64) []byte {
	if gpa >= fakeHighGPA {
		return f.mem[fakeRegionSize+gpa-fakeHighGPA:]
	}
	return f.mem[gpa:]
}

// eventFD makes a blocking eventfd, closed when the test ends.
func eventFD(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func signal(t *testing.T, fd int) {
	t.Helper()
	_, err := unix.Write(fd, binary.LittleEndian.AppendUint64(nil, 1))
	require.NoError(t, err)
}

// waitEvent blocks until fd is signalled and consumes the signal. (The
// server made the eventfd non-blocking: the flag is shared with the copy
// it received.) A server that never signals hangs the test until go
// test's -timeout, which then dumps where.
func waitEvent(t *testing.T, fd int) {
	t.Helper()
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		var b [8]byte
		_, err = unix.Read(fd, b[:])
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		require.NoError(t, err)
		return
	}
}

// setup runs the start sequence QEMU runs for a one-queue device and
// returns the call and kick eventfds.
func (f *frontEnd) setup(features uint64) (call, kick int) {
	f.t.Helper()
	offered := f.getU64(reqGetFeatures)
	require.Equal(f.t, features, offered&features, "features offered")
	f.send(reqSetFeatures, 0, u64(features))
	require.Equal(f.t, supportedProtocol&^ProtocolConfig, f.getU64(reqGetProtocolFeatures), "an rng device has no config")
	f.send(reqSetProtocolFeatures, 0, u64(ProtocolReplyAck|ProtocolMQ))
	require.Equal(f.t, uint64(1), f.getU64(reqGetQueueNum))
	f.send(reqSetOwner, 0, nil)
	f.ack(reqSetMemTable, memTablePayload(fakeRegions()...), f.memfd, f.memfd)

	call, kick = eventFD(f.t), eventFD(f.t)
	f.send(reqSetVringCall, 0, u64(0), call)
	f.send(reqSetVringNum, 0, state(0, 8))
	f.send(reqSetVringBase, 0, state(0, 0))
	f.send(reqSetVringAddr, 0, addrPayload(0, uva(ringDescGPA), uva(ringUsedGPA), uva(ringAvailGPA)))
	f.send(reqSetVringKick, 0, u64(0), kick)
	f.ack(reqSetVringEnable, state(0, 1))
	return call, kick
}

// postWritable puts one writable buffer [gpa, +n) in the ring as
// descriptor head and publishes it as available entry availIdx.
func (f *frontEnd) postWritable(head uint16, gpa uint64, n uint32, availIdx uint16) {
	le := binary.LittleEndian
	d := f.at(ringDescGPA + 16*uint64(head))
	le.PutUint64(d, gpa)
	le.PutUint32(d[8:], n)
	le.PutUint16(d[12:], 2) // VIRTQ_DESC_F_WRITE
	le.PutUint16(d[14:], 0)
	le.PutUint16(f.at(ringAvailGPA+4+2*uint64(availIdx%8)), head)
	le.PutUint16(f.at(ringAvailGPA+2), availIdx+1)
}

// used returns the used ring's index and its entry for slot.
func (f *frontEnd) used(slot uint16) (idx uint16, id, n uint32) {
	le := binary.LittleEndian
	u := f.at(ringUsedGPA)
	return le.Uint16(u[2:]), le.Uint32(u[4+8*uint64(slot%8):]), le.Uint32(u[8+8*uint64(slot%8):])
}
