package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// enterNewNetns moves the calling test goroutine's thread into a fresh
// network namespace, so nothing the test creates is visible on the host.
// The thread stays locked and dies with the test goroutine, taking the
// namespace (and every interface in it) with it. Subtests run on other
// goroutines, so tests using this must not use t.Run.
func enterNewNetns(t *testing.T) *netlink.Handle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: tap tests need root (CAP_NET_ADMIN) to create taps in a private network namespace")
	}
	if _, err := os.Stat(tunPath); err != nil {
		t.Skipf("SKIP: tap tests need %s: %v", tunPath, err)
	}
	runtime.LockOSThread() // never unlocked: see above
	require.NoError(t, unix.Unshare(unix.CLONE_NEWNET), "unshare(CLONE_NEWNET)")
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"wisp0", true},
		{"wisp%d", true},
		{"abcdefghijklmno", true}, // 15 bytes: the longest allowed
		{"abcdefghijklmnop", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false},
		{"a b", false},
		{"a\tb", false},
		{"tap%s", false},
		{"t%d%d", false},
		{"täp", false},
	}
	for _, tt := range tests {
		err := checkName(tt.name)
		if tt.ok {
			assert.NoError(t, err, tt.name)
		} else {
			assert.ErrorIs(t, err, ErrBadName, tt.name)
		}
	}
}

// The name is checked before any privileged step, so this runs anywhere.
func TestCreateNameTooLong(t *testing.T) {
	_, err := Create(Options{Name: "much-too-long-name0"})
	require.ErrorIs(t, err, ErrBadName)
	assert.Contains(t, err.Error(), "at most 15")
}

func TestOpenErrorsSayTheFix(t *testing.T) {
	tests := []struct {
		errno    unix.Errno
		sentinel error
		fix      string
	}{
		{unix.ENOENT, ErrNoTun, "modprobe tun"},
		{unix.EACCES, ErrPermission, "root or CAP_NET_ADMIN"},
		{unix.EPERM, ErrPermission, "user-mode networking"},
	}
	for _, tt := range tests {
		err := openError(tt.errno)
		assert.ErrorIs(t, err, tt.sentinel)
		assert.ErrorIs(t, err, tt.errno)
		assert.Contains(t, err.Error(), tt.fix)
		assert.NotContains(t, err.Error(), "\n")
	}
	assert.ErrorIs(t, setIffError("t0", false, unix.EBUSY), ErrNameTaken)
	assert.ErrorIs(t, setIffError("t0", true, unix.EPERM), ErrPermission)
}

func TestCreateNamedIsUpAndCloseDeletes(t *testing.T) {
	h := enterNewNetns(t)
	tp, err := Create(Options{Name: "wtest0", MTU: 1400})
	require.NoError(t, err)
	assert.Equal(t, "wtest0", tp.Name())
	assert.False(t, tp.HasVnetHdr())

	link, err := h.LinkByName("wtest0")
	require.NoError(t, err)
	tt, ok := link.(*netlink.Tuntap)
	require.True(t, ok, "link type %s", link.Type())
	assert.Equal(t, netlink.TUNTAP_MODE_TAP, tt.Mode)
	assert.Equal(t, 1400, link.Attrs().MTU)
	assert.NotZero(t, link.Attrs().RawFlags&unix.IFF_UP, "link is up")
	assert.Equal(t, link.Attrs().Index, tp.Index())

	fl, err := unix.FcntlInt(uintptr(tp.Fd()), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.NotZero(t, fl&unix.O_NONBLOCK, "descriptor is non-blocking")

	require.NoError(t, tp.Close())
	require.NoError(t, tp.Close(), "second Close is a no-op")
	_, err = h.LinkByName("wtest0")
	assert.True(t, isNotFound(err), "tap deleted on Close, got %v", err)
}

func TestCreateDefaultName(t *testing.T) {
	enterNewNetns(t)
	a, err := Create(Options{})
	require.NoError(t, err)
	defer a.Close()
	b, err := Create(Options{})
	require.NoError(t, err)
	defer b.Close()
	assert.True(t, strings.HasPrefix(a.Name(), "wisp"), a.Name())
	assert.True(t, strings.HasPrefix(b.Name(), "wisp"), b.Name())
	assert.NotEqual(t, a.Name(), b.Name())
}

func TestCreateNameTaken(t *testing.T) {
	h := enterNewNetns(t)
	require.NoError(t, h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "taken0"}}))
	_, err := Create(Options{Name: "taken0"})
	require.ErrorIs(t, err, ErrNameTaken)
	assert.Contains(t, err.Error(), "is a bridge, not a tap")
	_, err = h.LinkByName("taken0")
	require.NoError(t, err, "the other interface is left alone")

	first, err := Create(Options{Name: "busy0"})
	require.NoError(t, err)
	defer first.Close()
	_, err = Create(Options{Name: "busy0"})
	require.ErrorIs(t, err, ErrNameTaken, "a tap another descriptor holds")
	_, err = h.LinkByName("busy0")
	require.NoError(t, err, "the failed attempt did not delete the first tap")
}

func TestBridge(t *testing.T) {
	h := enterNewNetns(t)
	_, err := Create(Options{Name: "wtest0", Bridge: "nobr0"})
	require.ErrorIs(t, err, ErrNoBridge)
	assert.Contains(t, err.Error(), "ip link add nobr0 type bridge")
	_, err = h.LinkByName("wtest0")
	assert.True(t, isNotFound(err), "failed Create leaves no tap behind, got %v", err)

	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "notbr0"}, PeerName: "notbr1"}))
	_, err = Create(Options{Name: "wtest0", Bridge: "notbr0"})
	require.ErrorIs(t, err, ErrNoBridge)

	require.NoError(t, h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	br, err := h.LinkByName("br0")
	require.NoError(t, err)
	tp, err := Create(Options{Name: "wtest0", Bridge: "br0"})
	require.NoError(t, err)
	defer tp.Close()
	link, err := h.LinkByName("wtest0")
	require.NoError(t, err)
	assert.Equal(t, br.Attrs().Index, link.Attrs().MasterIndex)
}

func TestPersistentTapIsLeftOnClose(t *testing.T) {
	h := enterNewNetns(t)
	// netlink's LinkAdd makes the tap persistent and closes its descriptor,
	// like "ip tuntap add mode tap".
	require.NoError(t, h.LinkAdd(&netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: "ptap0"},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}))
	tp, err := Create(Options{Name: "ptap0", VnetHdr: true})
	require.NoError(t, err)
	assert.Equal(t, "ptap0", tp.Name())
	require.NoError(t, tp.Close())
	_, err = h.LinkByName("ptap0")
	require.NoError(t, err, "a persistent tap the user made survives Close")

	again, err := Create(Options{Name: "ptap0"})
	require.NoError(t, err, "and can be attached again")
	require.NoError(t, again.Close())
}

// packetSocket opens an AF_PACKET socket bound to ifindex that sees every
// frame of the interface, in both directions.
func packetSocket(t *testing.T, ifindex int) int {
	t.Helper()
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}))
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame is an Ethernet frame with the local experimental EtherType, so
// the kernel's own traffic (IPv6 router solicitations ...) is told apart.
func testFrame(marker byte) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	for i := 14; i < len(f); i++ {
		f[i] = marker
	}
	return f
}

// readMarked reads frames until one with the test EtherType arrives;
// read blocks.
func readMarked(t *testing.T, read func([]byte) (int, error), skip int) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	for {
		n, err := read(buf)
		require.NoError(t, err)
		if n >= skip+14 && binary.BigEndian.Uint16(buf[skip+12:]) == 0x88b5 {
			return buf[:n]
		}
	}
}

func waitReadable(t *testing.T, fd int) {
	t.Helper()
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		return
	}
}

func TestFramesBothWaysWithVnetHdr(t *testing.T) {
	enterNewNetns(t)
	tp, err := Create(Options{Name: "wtest0", VnetHdr: true})
	require.NoError(t, err)
	defer tp.Close()
	assert.True(t, tp.HasVnetHdr())
	ps := packetSocket(t, tp.Index())

	// Guest → host: a zero header (no offload) and the frame.
	out := testFrame(0xaa)
	n, err := tp.Write(append(make([]byte, VnetHdrLen), out...))
	require.NoError(t, err)
	assert.Equal(t, VnetHdrLen+len(out), n)
	got := readMarked(t, func(b []byte) (int, error) {
		n, _, err := unix.Recvfrom(ps, b, 0)
		return n, err
	}, 0)
	assert.Equal(t, out, got)

	// Host → guest: the frame arrives behind a header.
	in := testFrame(0xbb)
	require.NoError(t, unix.Sendto(ps, in, 0, &unix.SockaddrLinklayer{Ifindex: tp.Index(), Halen: 6}))
	got = readMarked(t, func(b []byte) (int, error) {
		for {
			n, err := tp.Read(b)
			if errors.Is(err, unix.EAGAIN) {
				waitReadable(t, tp.Fd())
				continue
			}
			return n, err
		}
	}, VnetHdrLen)
	assert.Equal(t, in, got[VnetHdrLen:])
	assert.True(t, bytes.Equal(make([]byte, 10), got[:10]), "no offload: an all-zero header, got % x", got[:10])

	_, err = tp.Read(make([]byte, 2048))
	for err == nil { // skip whatever else the kernel sent
		_, err = tp.Read(make([]byte, 2048))
	}
	assert.ErrorIs(t, err, unix.EAGAIN, "an empty non-blocking tap says EAGAIN")
}

func TestSetOffload(t *testing.T) {
	enterNewNetns(t)
	tp, err := Create(Options{Name: "wtest0", VnetHdr: true})
	require.NoError(t, err)
	defer tp.Close()
	require.NoError(t, tp.SetOffload(unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_TSO_ECN))
	require.NoError(t, tp.SetOffload(0))
	err = tp.SetOffload(unix.TUN_F_TSO4) // segmentation without checksum offload
	assert.ErrorIs(t, err, unix.EINVAL)
	assert.Contains(t, err.Error(), "TUNSETOFFLOAD")
}
