package vhostuser

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

const testFeatures = virtio.FeatureVersion1 | FeatureProtocolFeatures

// TestServeRequest drives a whole device life over the socket: QEMU's
// start sequence, a request served by the device through the shared
// memory, a ring stop and restart that resumes at the right index, a
// disconnect that resets the device, and a second connection.
func TestServeRequest(t *testing.T) {
	dev := newPatternDevice("0123456789abcdef")
	ts := startServer(t, dev)
	f := dial(t, ts.path)
	call, kick := f.setup(testFeatures)

	acts, _, active := dev.state()
	require.Equal(t, 1, acts, "one activation for the started ring")
	require.True(t, active)
	a := dev.lastActivation()
	assert.Equal(t, virtio.FeatureVersion1, a.Features, "the vhost-user bit is not the device's")
	require.Len(t, a.Queues, 1)
	require.NotNil(t, a.Queues[0].Queue)
	assert.Equal(t, uint16(8), a.Queues[0].Queue.Size())

	// A 40-byte writable buffer in the low region; the ring is in the
	// high one, reached through the translated addresses.
	f.postWritable(3, bufGPA, 40, 0)
	signal(t, kick)
	waitEvent(t, call)
	idx, id, n := f.used(0)
	assert.Equal(t, uint16(1), idx)
	assert.Equal(t, uint32(3), id)
	assert.Equal(t, uint32(40), n)
	assert.Equal(t, []byte("0123456789abcdef0123456789abcdef01234567"), f.at(bufGPA)[:40])

	// The call eventfd may be replaced while the ring runs.
	call2 := eventFD(t)
	f.ack(reqSetVringCall, u64(0), call2)

	// Stopping the ring reports where the device is and stops it.
	f.send(reqGetVringBase, 0, state(0, 0))
	assert.Equal(t, state(0, 1), f.reply(reqGetVringBase))
	_, resets, active := dev.state()
	assert.Equal(t, 1, resets)
	assert.False(t, active)

	// Restart it where it stopped, with a new kick eventfd.
	kick2 := eventFD(t)
	f.send(reqSetVringBase, 0, state(0, 1))
	f.ack(reqSetVringKick, u64(0), kick2)
	acts, _, active = dev.state()
	assert.Equal(t, 2, acts)
	assert.True(t, active)
	f.postWritable(5, bufGPA+0x100, 4, 1)
	signal(t, kick2)
	waitEvent(t, call2)
	idx, id, n = f.used(1)
	assert.Equal(t, uint16(2), idx)
	assert.Equal(t, uint32(5), id)
	assert.Equal(t, uint32(4), n)

	// Hanging up resets the device.
	require.NoError(t, f.c.Close())
	f2 := dial(t, ts.path)
	// The server reads f2's first message only after the old connection
	// is cleaned up.
	assert.Equal(t, dev.Features()|FeatureProtocolFeatures, f2.getU64(reqGetFeatures))
	_, resets, active = dev.state()
	assert.Equal(t, 2, resets)
	assert.False(t, active)

	ts.stop(t)
	_, err := os.Stat(ts.path)
	assert.True(t, errors.Is(err, os.ErrNotExist), "socket removed: %v", err)
	f2.requireClosed()
	assert.Empty(t, ts.errors())
}

// TestMemTableWhileRunning: a new memory table (memory hotplug) restarts
// the device on the new mappings without losing the ring's position.
func TestMemTableWhileRunning(t *testing.T) {
	dev := newPatternDevice("x")
	ts := startServer(t, dev)
	f := dial(t, ts.path)
	call, kick := f.setup(testFeatures)
	f.postWritable(0, bufGPA, 1, 0)
	signal(t, kick)
	waitEvent(t, call)

	f.ack(reqSetMemTable, memTablePayload(fakeRegions()...), f.memfd, f.memfd)
	acts, resets, active := dev.state()
	assert.Equal(t, 2, acts)
	assert.Equal(t, 1, resets)
	assert.True(t, active)

	f.postWritable(1, bufGPA+1, 1, 1)
	signal(t, kick)
	waitEvent(t, call)
	idx, id, _ := f.used(1)
	assert.Equal(t, uint16(2), idx)
	assert.Equal(t, uint32(1), id)
	assert.Equal(t, []byte("xx"), f.at(bufGPA)[:2])
	assert.Empty(t, ts.errors())
}

// TestRingEnable: with protocol features a ring runs only once enabled,
// and disabling it stops the device; without them it runs at once.
func TestRingEnable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		enable   bool // send SET_VRING_ENABLE 1
		want     bool
	}{
		{"protocol features, enabled", testFeatures, true, true},
		{"protocol features, never enabled", testFeatures, false, false},
		{"no protocol features", virtio.FeatureVersion1, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newPatternDevice("x")
			ts := startServer(t, dev)
			f := dial(t, ts.path)
			f.send(reqSetFeatures, 0, u64(tc.features))
			f.send(reqSetProtocolFeatures, 0, u64(ProtocolReplyAck))
			f.ack(reqSetMemTable, memTablePayload(fakeRegions()...), f.memfd, f.memfd)
			f.send(reqSetVringNum, 0, state(0, 8))
			f.send(reqSetVringAddr, 0, addrPayload(0, uva(ringDescGPA), uva(ringUsedGPA), uva(ringAvailGPA)))
			f.ack(reqSetVringKick, u64(0), eventFD(t))
			if tc.enable {
				f.ack(reqSetVringEnable, state(0, 1))
			}
			_, _, active := dev.state()
			assert.Equal(t, tc.want, active)
			if tc.want && tc.enable {
				f.ack(reqSetVringEnable, state(0, 0))
				_, _, active = dev.state()
				assert.False(t, active, "disabled ring stops")
			}
			assert.Empty(t, ts.errors())
		})
	}
}

// TestBadRing: a ring the guest placed badly is reported and not started;
// the connection goes on.
func TestBadRing(t *testing.T) {
	dev := newPatternDevice("x")
	ts := startServer(t, dev)
	f := dial(t, ts.path)
	f.send(reqSetFeatures, 0, u64(virtio.FeatureVersion1))
	f.send(reqSetProtocolFeatures, 0, u64(ProtocolReplyAck))
	f.ack(reqSetMemTable, memTablePayload(fakeRegions()...), f.memfd, f.memfd)
	f.send(reqSetVringNum, 0, state(0, 8))
	// The used ring runs past the end of the low region.
	f.send(reqSetVringAddr, 0, addrPayload(0, uva(0), uva(fakeRegionSize-8), uva(0x1000)))
	f.ack(reqSetVringKick, u64(0), eventFD(t))
	_, _, active := dev.state()
	assert.False(t, active)
	errs := ts.errors()
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], virtio.ErrBadRing)
	// Still connected.
	assert.Equal(t, uint64(1), f.getU64(reqGetQueueNum))
}

func configPayload(offset uint32, data []byte) []byte {
	return encodeConfig(configAccess{Offset: offset, Data: data})
}

func TestConfig(t *testing.T) {
	// Config space goes over vhost-user for block devices.
	dev := &typedDevice{patternDevice: newPatternDevice("x"), typ: virtio.TypeBlock}
	ts := startServer(t, dev)
	f := dial(t, ts.path)
	assert.Equal(t, supportedProtocol, f.getU64(reqGetProtocolFeatures))
	f.send(reqSetProtocolFeatures, 0, u64(ProtocolReplyAck|ProtocolConfig))

	f.send(reqGetConfig, 0, configPayload(0, make([]byte, 4)))
	assert.Equal(t, configPayload(0, []byte("wisp")), f.reply(reqGetConfig))

	f.ack(reqSetConfig, configPayload(1, []byte("AS")))
	f.send(reqGetConfig, 0, configPayload(1, make([]byte, 3)))
	assert.Equal(t, configPayload(1, []byte("ASp")), f.reply(reqGetConfig))

	// Outside the device's config: an empty reply (QEMU's failure
	// signal), a failed ack, and the connection stays.
	f.send(reqGetConfig, 0, configPayload(2, make([]byte, 8)))
	assert.Empty(t, f.reply(reqGetConfig))
	f.send(reqSetConfig, flagNeedReply, configPayload(4, []byte{1}))
	assert.Equal(t, u64(1), f.reply(reqSetConfig))
	assert.Equal(t, uint64(1), f.getU64(reqGetQueueNum))
	errs := ts.errors()
	require.Len(t, errs, 2)
	for _, err := range errs {
		assert.ErrorIs(t, err, virtio.ErrBadConfig)
	}
}

// openFDs counts this process's descriptors of the kinds a front end
// sends or the server makes: sockets, memfds and eventfds. (The Go runtime
// opens files of its own now and then, which are not counted.)
func openFDs(t *testing.T) int {
	n, _ := openFDList(t)
	return n
}

func openFDList(t *testing.T) (int, []string) {
	t.Helper()
	var list []string
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if strings.HasPrefix(target, "socket:") || strings.HasPrefix(target, "/memfd:") || target == "anon_inode:[eventfd]" {
			n++
			list = append(list, e.Name()+"->"+target)
		}
	}
	return n, list
}

// TestMalformed sends broken messages; each closes its connection with an
// error, leaks no descriptor, and the server goes on to serve the next
// connection.
func TestMalformed(t *testing.T) {
	hdr := func(req request, flags, size uint32) []byte {
		return encodeHeader(header{Request: req, Flags: flags, Size: size})
	}
	msg := func(req request, p []byte) []byte { return append(hdr(req, version, uint32(len(p))), p...) }
	smallFile := func() (int, error) {
		fd, err := unix.MemfdCreate("small", unix.MFD_CLOEXEC)
		if err == nil {
			err = unix.Ftruncate(fd, 4096)
		}
		return fd, err
	}
	newEventFD := func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC) }
	for _, tc := range []struct {
		name  string
		bytes []byte
		fds   int                 // descriptors to attach
		newFD func() (int, error) // how to make them (default: eventfds)
		eof   bool                // hang up after sending
		want  error
	}{
		{name: "bad version", bytes: hdr(reqGetFeatures, 2, 0)},
		{name: "reply flag", bytes: hdr(reqGetFeatures, version|flagReply, 0)},
		{name: "unknown flag", bytes: hdr(reqGetFeatures, version|1<<5, 0)},
		{name: "huge payload", bytes: hdr(reqSetFeatures, version, 1<<20)},
		{name: "unknown request", bytes: msg(99, nil)},
		{name: "log base never offered", bytes: msg(reqSetLogBase, u64(0)), fds: 1},
		{name: "short u64", bytes: msg(reqSetFeatures, []byte{1, 2, 3})},
		{name: "features never offered", bytes: msg(reqSetFeatures, u64(1<<63))},
		{name: "protocol features never offered", bytes: msg(reqSetProtocolFeatures, u64(1<<15))},
		{name: "ring out of range", bytes: msg(reqSetVringNum, state(1, 8))},
		{name: "ring index beyond 8 bits", bytes: msg(reqSetVringNum, state(300, 8))},
		{name: "ring size not a power of two", bytes: msg(reqSetVringNum, state(0, 6))},
		{name: "ring size zero", bytes: msg(reqSetVringNum, state(0, 0))},
		{name: "ring larger than the device's", bytes: msg(reqSetVringNum, state(0, 16))},
		{name: "base beyond 16 bits", bytes: msg(reqSetVringBase, state(0, 1<<16))},
		{name: "enable value", bytes: msg(reqSetVringEnable, state(0, 2))},
		{name: "addr with log flag", bytes: msg(reqSetVringAddr, func() []byte { p := addrPayload(0, 0, 0, 0); p[4] = 1; return p }())},
		{name: "addr short", bytes: msg(reqSetVringAddr, addrPayload(0, 0, 0, 0)[:32])},
		{name: "kick without fd", bytes: msg(reqSetVringKick, u64(0))},
		{name: "kick with two fds", bytes: msg(reqSetVringKick, u64(0)), fds: 2},
		{name: "kick on a missing ring", bytes: msg(reqSetVringKick, u64(7)), fds: 1},
		{name: "call unknown bits", bytes: msg(reqSetVringCall, u64(1<<9)), fds: 1},
		{name: "nofd with an fd", bytes: msg(reqSetVringCall, u64(vringNoFD)), fds: 1},
		{name: "fd on a plain request", bytes: msg(reqGetFeatures, nil), fds: 1},
		{name: "too many fds", bytes: msg(reqSetOwner, nil), fds: maxFDs + 2},
		{name: "mem table no regions", bytes: msg(reqSetMemTable, memTablePayload())},
		{name: "mem table count mismatch", bytes: msg(reqSetMemTable, memTablePayload(fakeRegions()...)[:8+regionSize]), fds: 1},
		{name: "mem table fd missing", bytes: msg(reqSetMemTable, memTablePayload(fakeRegions()...)), fds: 1},
		{name: "mem table overlap", bytes: msg(reqSetMemTable, memTablePayload(
			memRegion{GuestAddr: 0, Size: 0x2000, UserAddr: 0}, memRegion{GuestAddr: 0x1000, Size: 0x1000, UserAddr: 0x10000})), fds: 2},
		{name: "mem table wraps", bytes: msg(reqSetMemTable, memTablePayload(memRegion{GuestAddr: 1 << 63, Size: 1 << 40, UserAddr: ^uint64(0) - 10})), fds: 1},
		{name: "mem table empty region", bytes: msg(reqSetMemTable, memTablePayload(memRegion{})), fds: 1},
		{name: "mem table beyond the file", bytes: msg(reqSetMemTable, memTablePayload(memRegion{Size: 1 << 20})), fds: 1, newFD: smallFile},
		{name: "config too big", bytes: msg(reqGetConfig, configPayload(0, make([]byte, maxConfigSize+1)))},
		{name: "config size mismatch", bytes: msg(reqGetConfig, configPayload(0, make([]byte, 8))[:15])},
		{name: "truncated payload", bytes: hdr(reqSetFeatures, version, 8), eof: true, want: io.ErrUnexpectedEOF},
		{name: "truncated header", bytes: []byte{1, 0, 0}, eof: true, want: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newPatternDevice("x")
			ts := startServer(t, dev)
			before, beforeList := openFDList(t)

			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
			require.NoError(t, err)
			defer c.Close()
			var fds []int
			for range tc.fds {
				mk := tc.newFD
				if mk == nil {
					mk = newEventFD
				}
				fd, err := mk()
				require.NoError(t, err)
				fds = append(fds, fd)
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			_, _, err = c.WriteMsgUnix(tc.bytes, oob, nil)
			require.NoError(t, err)
			closeFDs(fds)
			if tc.eof {
				require.NoError(t, c.CloseWrite())
			}
			requireHangup(t, c)
			require.NoError(t, c.Close())

			// The next connection is served, so the first one has ended.
			f := dial(t, ts.path)
			assert.Equal(t, uint64(1), f.getU64(reqGetQueueNum))
			errs := ts.errors()
			require.Len(t, errs, 1)
			want := tc.want
			if want == nil {
				want = ErrProtocol
			}
			assert.ErrorIs(t, errs[0], want)
			_, _, active := dev.state()
			assert.False(t, active)
			// Every descriptor the server received is closed: the new
			// connection's two sockets and its memfd are all that is new.
			after, afterList := openFDList(t)
			assert.Equal(t, before+3, after, "before %v after %v", beforeList, afterList)
		})
	}
}

func TestOfferedProtocol(t *testing.T) {
	for _, tc := range []struct {
		typ  virtio.DeviceType
		want uint64
	}{
		{virtio.TypeBlock, ProtocolMQ | ProtocolReplyAck | ProtocolConfig | ProtocolResetDevice},
		{virtio.TypeRNG, ProtocolMQ | ProtocolReplyAck | ProtocolResetDevice},
		{virtio.TypeNet, ProtocolMQ | ProtocolReplyAck | ProtocolResetDevice},
	} {
		assert.Equal(t, tc.want, offeredProtocol(tc.typ), "%v", tc.typ)
	}
}

func TestQueueNum(t *testing.T) {
	for _, tc := range []struct {
		typ   virtio.DeviceType
		sizes []uint16
		want  uint64
	}{
		{virtio.TypeBlock, []uint16{128, 128, 128, 128}, 4},
		{virtio.TypeRNG, []uint16{64}, 1},
		{virtio.TypeNet, []uint16{256, 256}, 1},
		{virtio.TypeNet, []uint16{256, 256, 64}, 1},
		{virtio.TypeNet, []uint16{256, 256, 256, 256, 64}, 2},
	} {
		dev := &typedDevice{patternDevice: newPatternDevice("x"), typ: tc.typ}
		dev.sizes = tc.sizes
		s := newSession(NewServer(dev, Options{}))
		assert.Equal(t, tc.want, s.queueNum(), "%v with %d queues", tc.typ, len(tc.sizes))
	}
}

type typedDevice struct {
	*patternDevice
	typ virtio.DeviceType
}

func (d *typedDevice) Type() virtio.DeviceType { return d.typ }

// TestFatalErrorAcked: a front end that asked for an ack hears of the
// failure before the server hangs up.
func TestFatalErrorAcked(t *testing.T) {
	ts := startServer(t, newPatternDevice("x"))
	f := dial(t, ts.path)
	f.send(reqSetProtocolFeatures, 0, u64(ProtocolReplyAck))
	small, err := unix.MemfdCreate("small", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(small)
	f.send(reqSetMemTable, flagNeedReply, memTablePayload(memRegion{Size: 1 << 20}), small)
	assert.Equal(t, u64(1), f.reply(reqSetMemTable))
	f.requireClosed()
	// The error is reported before the next connection is served.
	assert.Equal(t, uint64(1), dial(t, ts.path).getU64(reqGetQueueNum))
	errs := ts.errors()
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], ErrProtocol)
}
