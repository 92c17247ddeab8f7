package vnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// pairBackend is a Backend over a datagram socketpair: the device gets one
// end, the test the other, and frames pass as they are (with the header
// when vnetHdr), so the test sees exactly what the device sends and
// chooses exactly what it receives.
type pairBackend struct {
	dev, peer int
	vnetHdr   bool
	offload   atomic.Uint64
	closed    atomic.Bool
}

func newPairBackend(t *testing.T, vnetHdr bool) *pairBackend {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	b := &pairBackend{dev: fds[0], peer: fds[1], vnetHdr: vnetHdr}
	t.Cleanup(func() {
		unix.Close(b.peer)
		if !b.closed.Load() {
			unix.Close(b.dev)
		}
	})
	return b
}

func (b *pairBackend) ReadFrame(bufs [][]byte) (int, error) { return unix.Readv(b.dev, bufs) }
func (b *pairBackend) WriteFrame(bufs [][]byte) error {
	_, err := unix.Writev(b.dev, bufs)
	return err
}
func (b *pairBackend) Fd() int          { return b.dev }
func (b *pairBackend) HasVnetHdr() bool { return b.vnetHdr }
func (b *pairBackend) SetOffload(f uint) error {
	b.offload.Store(uint64(f))
	return nil
}
func (b *pairBackend) Close() error {
	b.closed.Store(true)
	return unix.Close(b.dev)
}

// inject sends a frame towards the device.
func (b *pairBackend) inject(t *testing.T, frame []byte) {
	t.Helper()
	_, err := unix.Write(b.peer, frame)
	require.NoError(t, err)
}

// sent blocks until the device sends a frame and returns it.
func (b *pairBackend) sent(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 1<<17)
	for {
		n, err := unix.Read(b.peer, buf)
		if errors.Is(err, unix.EAGAIN) {
			_, err = unix.Poll([]unix.PollFd{{Fd: int32(b.peer), Events: unix.POLLIN}}, -1)
			if err != nil && !errors.Is(err, unix.EINTR) {
				require.NoError(t, err)
			}
			continue
		}
		require.NoError(t, err)
		return buf[:n]
	}
}

// nothingSent says whether no frame is waiting from the device.
func (b *pairBackend) nothingSent(t *testing.T) bool {
	_, err := unix.Read(b.peer, make([]byte, 1<<17))
	return errors.Is(err, unix.EAGAIN)
}

// rig is a device activated over test rings.
type rig struct {
	t      *testing.T
	dev    *Device
	rx, tx *testQueue
	mu     sync.Mutex
	errs   []error
}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// activate makes a device over b and activates it with features (all
// offered ones if 0).
func activate(t *testing.T, b Backend, features uint64) *rig {
	t.Helper()
	d, err := New(b, testMAC)
	require.NoError(t, err)
	if features == 0 {
		features = d.Features()
	}
	mem := make(guestMem, 8<<20)
	r := &rig{t: t, dev: d}
	d.OnError(func(_ int, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errs = append(r.errs, err)
	})
	eventIdx := features&virtio.FeatureRingEventIdx != 0
	r.rx = newTestQueue(t, mem, 0, 4<<20, eventIdx)
	r.tx = newTestQueue(t, mem, 4<<20, 4<<20, eventIdx)
	require.NoError(t, d.Activate(virtio.Activation{
		Memory:   mem,
		Features: features,
		Queues:   []virtio.ActiveQueue{r.rx.active(features), r.tx.active(features)},
	}))
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return r
}

func (r *rig) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// ethFrame is an Ethernet frame of n bytes with a recognisable payload.
func ethFrame(n int, marker byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = marker + byte(i)
	}
	return f
}

func hdrBytes(h netHdr) []byte {
	b := make([]byte, HdrLen)
	h.encode(b)
	return b
}

func TestFeatures(t *testing.T) {
	base := virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx |
		FeatureMAC | FeatureStatus | FeatureMrgRxbuf
	d, err := New(newPairBackend(t, false), testMAC)
	require.NoError(t, err)
	assert.Equal(t, base, d.Features(), "no offloads without a virtio-net header")
	d, err = New(newPairBackend(t, true), testMAC)
	require.NoError(t, err)
	assert.Equal(t, base|FeatureCsum|FeatureGuestCsum|FeatureHostTSO4|FeatureHostTSO6|FeatureHostECN|
		FeatureGuestTSO4|FeatureGuestTSO6|FeatureGuestECN, d.Features())
	assert.Zero(t, d.Features()&(FeatureCtrlVQ|FeatureMQ|FeatureGuestUFO|FeatureHostUFO|virtio.FeatureRingPacked))
	assert.Equal(t, virtio.TypeNet, d.Type())
	assert.Equal(t, []uint16{QueueSize, QueueSize}, d.QueueSizes())
}

func TestConfigSpace(t *testing.T) {
	d, err := New(newPairBackend(t, false), testMAC)
	require.NoError(t, err)
	c := make([]byte, ConfigSize)
	require.NoError(t, d.ReadConfig(0, c))
	assert.Equal(t, []byte(testMAC), c[:6])
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(c[6:]), "status: link up")
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(c[8:]), "max_virtqueue_pairs")

	b := make([]byte, 2)
	require.NoError(t, d.ReadConfig(6, b))
	assert.Equal(t, []byte{1, 0}, b)
	require.NoError(t, d.ReadConfig(ConfigSize, nil))
	for _, tt := range []struct {
		off uint64
		n   int
	}{{ConfigSize, 1}, {9, 2}, {0, ConfigSize + 1}, {^uint64(0), 1}, {^uint64(0) - 3, 8}} {
		assert.ErrorIs(t, d.ReadConfig(tt.off, make([]byte, tt.n)), virtio.ErrBadConfig, "%+v", tt)
	}
	assert.ErrorIs(t, d.WriteConfig(0, make([]byte, 6)), virtio.ErrBadConfig)
	require.NoError(t, d.ReadConfig(0, c))
	assert.Equal(t, []byte(testMAC), c[:6], "a write changes nothing")
}

func TestNewMAC(t *testing.T) {
	d, err := New(newPairBackend(t, false), nil)
	require.NoError(t, err)
	assert.Equal(t, []byte{0x52, 0x54, 0x00}, []byte(d.MAC()[:3]))
	for _, bad := range []net.HardwareAddr{{1, 2, 3, 4, 5, 6}, {0, 0, 0, 0, 0, 0}, {2, 2, 3}} {
		_, err := New(newPairBackend(t, false), bad)
		assert.Error(t, err, "%s", bad)
	}
	mac := net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
	d, err = New(newPairBackend(t, false), mac)
	require.NoError(t, err)
	mac[1] = 9
	assert.Equal(t, "02:01:02:03:04:05", d.MAC().String(), "the device keeps its own copy")
}

func TestActivateChecks(t *testing.T) {
	b := newPairBackend(t, false)
	d, err := New(b, testMAC)
	require.NoError(t, err)
	mem := make(guestMem, 1<<20)
	rx := newTestQueue(t, mem, 0, 512<<10, false)
	tx := newTestQueue(t, mem, 512<<10, 512<<10, false)
	qs := func(f uint64) []virtio.ActiveQueue { return []virtio.ActiveQueue{rx.active(f), tx.active(f)} }
	f := d.Features()

	assert.Error(t, d.Activate(virtio.Activation{Memory: mem, Features: f | FeatureCsum, Queues: qs(f)}), "CSUM was not offered")
	assert.Error(t, d.Activate(virtio.Activation{Memory: mem, Features: f &^ virtio.FeatureVersion1, Queues: qs(f)}))
	assert.Error(t, d.Activate(virtio.Activation{Memory: mem, Features: f, Queues: qs(f)[:1]}))
	require.NoError(t, d.Reset(), "reset of an inactive device")

	require.NoError(t, d.Activate(virtio.Activation{Memory: mem, Features: f, Queues: qs(f)}))
	assert.ErrorIs(t, d.Activate(virtio.Activation{Memory: mem, Features: f, Queues: qs(f)}), ErrActive)
	require.NoError(t, d.Reset())
	require.NoError(t, d.Reset())
	require.NoError(t, d.Activate(virtio.Activation{Memory: mem, Features: f, Queues: []virtio.ActiveQueue{{}, {}}}),
		"queues the driver did not enable")
	require.NoError(t, d.Close())
	assert.True(t, b.closed.Load(), "Close closes the backend")
	require.NoError(t, d.Close())
	assert.Error(t, d.Activate(virtio.Activation{Memory: mem, Features: f, Queues: qs(f)}))
}

func TestTransmitStripsHeaderForPlainBackend(t *testing.T) {
	b := newPairBackend(t, false)
	r := activate(t, b, 0)
	frame := ethFrame(1514, 1)
	// Header and frame spread over descriptors the way drivers do.
	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: frame[:100]}, desc{data: frame[100:]})
	u := r.tx.wait()
	assert.Zero(t, u.len, "transmit chains return nothing")
	assert.Equal(t, frame, b.sent(t))

	r.tx.post(desc{data: append(hdrBytes(netHdr{}), frame...)})
	r.tx.wait()
	assert.Equal(t, frame, b.sent(t), "header and frame in one buffer")
	st := r.dev.Stats()
	assert.Equal(t, uint64(2), st.TxFrames)
	assert.Equal(t, uint64(2*1514), st.TxBytes)
	assert.Empty(t, r.errors())
}

func TestTransmitPassesCheckedHeaderToVnetBackend(t *testing.T) {
	b := newPairBackend(t, true)
	r := activate(t, b, 0)
	frame := ethFrame(1000, 2)
	h := netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6, numBuffers: 7}
	r.tx.post(desc{data: hdrBytes(h)}, desc{data: frame})
	r.tx.wait()
	got := b.sent(t)
	h.numBuffers = 0
	assert.Equal(t, append(hdrBytes(h), frame...), got)

	gso := netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4 | gsoECN, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	big := ethFrame(MaxFrameLen, 3)
	r.tx.post(desc{data: hdrBytes(gso)}, desc{data: big[:30000]}, desc{data: big[30000:]})
	r.tx.wait()
	assert.Equal(t, append(hdrBytes(gso), big...), b.sent(t), "a 64 KiB segmentation-offload frame")
	assert.Empty(t, r.errors())
}

func TestTransmitRejectsBadRequests(t *testing.T) {
	b := newPairBackend(t, true)
	plain := virtio.FeatureVersion1 | FeatureMrgRxbuf // no offloads negotiated
	r := activate(t, b, plain)
	good := ethFrame(60, 4)
	tests := []struct {
		name  string
		chain []desc
	}{
		{"shorter than header", []desc{{data: make([]byte, 8)}}},
		{"header without frame", []desc{{data: hdrBytes(netHdr{})}}},
		{"runt frame", []desc{{data: hdrBytes(netHdr{})}, {data: make([]byte, 13)}}},
		{"longer than 64 KiB", []desc{{data: hdrBytes(netHdr{})}, {data: make([]byte, MaxFrameLen+1)}}},
		{"NEEDS_CSUM not negotiated", []desc{{data: hdrBytes(netHdr{flags: hdrFNeedsCsum, csumStart: 14})}, {data: good}}},
		{"TSO not negotiated", []desc{{data: hdrBytes(netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1000})}, {data: good}}},
		{"receive-only flag", []desc{{data: hdrBytes(netHdr{flags: hdrFDataValid})}, {data: good}}},
		{"only writable", []desc{{size: 100, writable: true}}},
		{"outside guest memory", []desc{{data: hdrBytes(netHdr{})}, {addr: 7 << 20, len: 2 << 20}}},
		{"huge length", []desc{{data: hdrBytes(netHdr{})}, {addr: 5 << 20, len: 0xffffffff}}},
	}
	for i, tt := range tests {
		r.tx.post(tt.chain...)
		u := r.tx.wait()
		assert.Zero(t, u.len, tt.name)
		errs := r.errors()
		require.Len(t, errs, i+1, tt.name)
		assert.True(t, errors.Is(errs[i], virtio.ErrBadRequest) || errors.Is(errs[i], virtio.ErrBadChain), "%s: %v", tt.name, errs[i])
	}
	assert.True(t, b.nothingSent(t), "no bad request reached the backend")
	assert.Equal(t, uint64(len(tests)), r.dev.Stats().TxErrors)

	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: good})
	r.tx.wait()
	assert.Equal(t, append(hdrBytes(netHdr{}), good...), b.sent(t), "the device still works")
}

func TestReceiveMergeable(t *testing.T) {
	b := newPairBackend(t, false)
	r := activate(t, b, 0)
	for range 8 {
		r.rx.post(desc{size: 1000, writable: true})
	}
	big := ethFrame(2500, 5)
	b.inject(t, big)
	p := r.rx.receive(1000)
	assert.Equal(t, 3, p.bufs, "12+2500 bytes in 1000-byte buffers")
	assert.Equal(t, big, p.frame)
	assert.Equal(t, netHdr{numBuffers: 3}, p.hdr, "no offload information for a plain backend")

	small := ethFrame(60, 6)
	b.inject(t, small)
	p = r.rx.receive(1000)
	assert.Equal(t, 1, p.bufs)
	assert.Equal(t, small, p.frame)
	st := r.dev.Stats()
	assert.Equal(t, uint64(2), st.RxFrames)
	assert.Equal(t, uint64(2560), st.RxBytes)
}

func TestReceiveWaitsForBuffers(t *testing.T) {
	b := newPairBackend(t, false)
	r := activate(t, b, 0)
	frames := [][]byte{ethFrame(1514, 7), ethFrame(900, 8), ethFrame(64, 9)}
	for _, f := range frames {
		b.inject(t, f)
	}
	// The frames wait, whatever the device did meanwhile, until the
	// driver posts buffers, which wakes the device through the kick —
	// here one too few for the first frame at first.
	r.rx.post(desc{size: 1024, writable: true})
	r.rx.post(desc{size: 1024, writable: true})
	for _, f := range frames {
		p := r.rx.receive(1024)
		assert.Equal(t, f, p.frame)
	}
	assert.Zero(t, r.dev.Stats().RxDropped)
}

func TestReceiveWithoutMergeableBuffers(t *testing.T) {
	b := newPairBackend(t, false)
	features := virtio.FeatureVersion1 | FeatureMAC | virtio.FeatureRingEventIdx
	r := activate(t, b, features)
	r.rx.post(desc{size: 8, writable: true}, desc{size: HdrLen + 1514 - 8, writable: true})

	b.inject(t, ethFrame(3000, 10)) // larger than the buffer: dropped
	want := ethFrame(1514, 11)
	b.inject(t, want)
	p := r.rx.receive(HdrLen + 1514)
	assert.Equal(t, want, p.frame, "the next frame takes the buffer the big one could not use")
	assert.Equal(t, uint16(1), p.hdr.numBuffers)
	assert.Equal(t, uint64(1), r.dev.Stats().RxDropped)
}

func TestReceiveReturnsUnusableBuffers(t *testing.T) {
	b := newPairBackend(t, false)
	r := activate(t, b, 0)
	r.rx.post(desc{data: make([]byte, 100)})                           // nothing writable
	r.rx.post(desc{size: 4, writable: true})                           // smaller than the header
	r.rx.post(desc{addr: 9 << 20, len: 4096, writable: true, size: 0}) // outside guest memory
	r.rx.post(desc{size: 2048, writable: true})
	want := ethFrame(100, 12)
	b.inject(t, want)
	for range 3 {
		assert.Zero(t, r.rx.wait().len, "an unusable buffer comes back empty")
	}
	p := r.rx.receive(2048)
	assert.Equal(t, want, p.frame)
	assert.Len(t, r.errors(), 3)
}

func TestReceiveOffloads(t *testing.T) {
	frame := ethFrame(200, 13)
	partial := netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6}
	tests := []struct {
		name      string
		features  uint64
		in        netHdr
		delivered bool
		out       netHdr
		tunFlags  uint
	}{
		{"partial checksum accepted", FeatureGuestCsum, partial, true, partial, unix.TUN_F_CSUM},
		{"partial checksum not accepted", 0, partial, false, netHdr{}, 0},
		{"data-valid hint kept", FeatureGuestCsum, netHdr{flags: hdrFDataValid}, true, netHdr{flags: hdrFDataValid}, unix.TUN_F_CSUM},
		{"data-valid hint cleared", 0, netHdr{flags: hdrFDataValid}, true, netHdr{}, 0},
		{"TSO4 accepted", FeatureGuestCsum | FeatureGuestTSO4,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16}, true,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16},
			unix.TUN_F_CSUM | unix.TUN_F_TSO4},
		{"TSO4 without GUEST_CSUM is no TSO4", FeatureGuestTSO4,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1448}, false, netHdr{}, 0},
		{"TSO6 not accepted", FeatureGuestCsum | FeatureGuestTSO4,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv6, gsoSize: 1448}, false, netHdr{}, unix.TUN_F_CSUM | unix.TUN_F_TSO4},
		{"ECN accepted", FeatureGuestCsum | FeatureGuestTSO6 | FeatureGuestECN,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv6 | gsoECN, gsoSize: 1448}, true,
			netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv6 | gsoECN, gsoSize: 1448},
			unix.TUN_F_CSUM | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN},
		{"UFO never", FeatureGuestCsum | FeatureGuestTSO4, netHdr{flags: hdrFNeedsCsum, gsoType: gsoUDP, gsoSize: 1000}, false, netHdr{}, unix.TUN_F_CSUM | unix.TUN_F_TSO4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newPairBackend(t, true)
			r := activate(t, b, virtio.FeatureVersion1|FeatureMrgRxbuf|tt.features)
			assert.Equal(t, uint64(tt.tunFlags), b.offload.Load(), "TUNSETOFFLOAD flags")
			r.rx.post(desc{size: 4096, writable: true})
			b.inject(t, append(hdrBytes(tt.in), frame...))
			marker := ethFrame(60, 14)
			b.inject(t, append(hdrBytes(netHdr{}), marker...)) // always delivered
			p := r.rx.receive(4096)
			if !tt.delivered {
				assert.Equal(t, marker, p.frame, "the offloaded frame was dropped")
				assert.Equal(t, uint64(1), r.dev.Stats().RxDropped)
				return
			}
			tt.out.numBuffers = 1
			assert.Equal(t, tt.out, p.hdr)
			assert.Equal(t, frame, p.frame)
		})
	}
}

func TestResetStopsAndReactivates(t *testing.T) {
	b := newPairBackend(t, true)
	r := activate(t, b, 0)
	assert.NotZero(t, b.offload.Load())
	require.NoError(t, r.dev.Reset())
	assert.Zero(t, b.offload.Load(), "offloads off while no driver is there")

	// A new driver, new rings.
	mem := make(guestMem, 8<<20)
	rx := newTestQueue(t, mem, 0, 4<<20, true)
	tx := newTestQueue(t, mem, 4<<20, 4<<20, true)
	f := r.dev.Features()
	require.NoError(t, r.dev.Activate(virtio.Activation{Memory: mem, Features: f, Queues: []virtio.ActiveQueue{rx.active(f), tx.active(f)}}))
	frame := ethFrame(70, 15)
	tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: frame})
	tx.wait()
	assert.True(t, bytes.Equal(append(hdrBytes(netHdr{}), frame...), b.sent(t)))
	rx.post(desc{size: 2048, writable: true})
	b.inject(t, append(hdrBytes(netHdr{}), frame...))
	assert.Equal(t, frame, rx.receive(2048).frame)
}

// Buffers the device took for a frame it could not finish come back to the
// driver when the device stops, so a ring that lives on (vhost-user pause
// and resume) loses none.
func TestResetReturnsHeldBuffers(t *testing.T) {
	b := newPairBackend(t, false)
	r := activate(t, b, 0) // MRG_RXBUF and EVENT_IDX
	r.rx.post(desc{size: 1000, writable: true})
	b.inject(t, ethFrame(2500, 16)) // needs three buffers
	// Wait until the device has taken the one buffer and asked to be
	// kicked for more: it publishes avail_event 1.
	availEvent := r.rx.cfg.UsedAddr + 4 + 8*testRingSize
	for binary.LittleEndian.Uint16(r.rx.mem[availEvent:]) != 1 {
		runtime.Gosched()
	}
	require.NoError(t, r.dev.Reset())
	u := r.rx.take()
	assert.Zero(t, u.len)
	assert.Equal(t, uint16(1), r.rx.usedIdx())
	assert.Equal(t, uint64(1), r.dev.Stats().RxDropped, "the unfinished frame is dropped")
}
