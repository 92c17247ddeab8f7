package vnet

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/net/tap"
	"github.com/wisp-vmm/wisp/net/usernet"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// End-to-end tests of the device over the real backends, with the test
// playing the guest driver: frames go through guest-memory rings into a
// tap (in a network namespace the test makes) or the user-mode network,
// and back.

// The backends are Backends.
var (
	_ Backend = (*tap.Tap)(nil)
	_ Backend = (*usernet.Network)(nil)
)

// enterNewNetns moves the test goroutine's thread into a fresh network
// namespace; the thread stays locked and dies with the goroutine, taking
// the namespace with it. No t.Run below it: subtests run elsewhere.
func enterNewNetns(t *testing.T) *netlink.Handle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: tap tests need root (CAP_NET_ADMIN) to create a tap in a private network namespace")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("SKIP: tap tests need /dev/net/tun: %v", err)
	}
	runtime.LockOSThread() // never unlocked: see above
	require.NoError(t, unix.Unshare(unix.CLONE_NEWNET), "unshare(CLONE_NEWNET)")
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

var (
	hostIP  = tcpip.AddrFrom4([4]byte{10, 99, 0, 1})
	guestIP = tcpip.AddrFrom4([4]byte{10, 99, 0, 2})
)

// tapRig is a device over a tap in a fresh namespace, where the host end
// is 10.99.0.1/24 and knows the guest (10.99.0.2) by its MAC.
type tapRig struct {
	*rig
	tap     *tap.Tap
	hostMAC tcpip.LinkAddress
}

func newTapRig(t *testing.T, features uint64) *tapRig {
	t.Helper()
	h := enterNewNetns(t)
	tp, err := tap.Create(tap.Options{Name: "wvnet0", VnetHdr: true, MTU: 9000})
	require.NoError(t, err)
	link, err := h.LinkByIndex(tp.Index())
	require.NoError(t, err)
	require.NoError(t, h.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(hostIP.AsSlice()), Mask: net.CIDRMask(24, 32)}}))
	require.NoError(t, h.NeighAdd(&netlink.Neigh{
		LinkIndex:    tp.Index(),
		Family:       unix.AF_INET,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(guestIP.AsSlice()),
		HardwareAddr: testMAC,
	}))
	r := activate(t, tp, features) // the device owns the tap now
	for range 64 {
		r.rx.post(desc{size: 2048, writable: true}) // like Linux's mergeable buffers
	}
	return &tapRig{rig: r, tap: tp, hostMAC: tcpip.LinkAddress(link.Attrs().HardwareAddr)}
}

// receiveMatching reads received frames until keep accepts one.
func (r *rig) receiveMatching(keep func(packet) bool) packet {
	for {
		if p := r.rx.receive(2048); keep(p) {
			return p
		}
	}
}

func isTestFrame(p packet) bool {
	return len(p.frame) >= 14 && binary.BigEndian.Uint16(p.frame[12:]) == 0x88b5
}

// udpFrame builds an Ethernet/IPv4/UDP frame. With partial, the UDP
// checksum holds only the pseudo-header sum, as a driver using checksum
// offload leaves it.
func udpFrame(src, dst tcpip.LinkAddress, srcIP, dstIP tcpip.Address, sport, dport uint16, payload []byte, partial bool) []byte {
	udpLen := header.UDPMinimumSize + len(payload)
	ipLen := header.IPv4MinimumSize + udpLen
	f := make([]byte, header.EthernetMinimumSize+ipLen)
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: src, DstAddr: dst, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen), TTL: 64, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: srcIP, DstAddr: dstIP})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip.Payload())
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(udpLen)})
	copy(u.Payload(), payload)
	pseudo := header.PseudoHeaderChecksum(header.UDPProtocolNumber, srcIP, dstIP, uint16(udpLen))
	if partial {
		u.SetChecksum(pseudo)
	} else {
		u.SetChecksum(^checksum.Checksum(u, pseudo))
	}
	return f
}

// udpIn parses a frame as UDP to port; nil if it is not.
func udpIn(frame []byte, port uint16) header.UDP {
	if len(frame) < header.EthernetMinimumSize || header.Ethernet(frame).Type() != header.IPv4ProtocolNumber {
		return nil
	}
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber {
		return nil
	}
	u := header.UDP(ip.Payload())
	if len(u) < header.UDPMinimumSize || u.DestinationPort() != port {
		return nil
	}
	return u
}

func TestTapFramesBothWays(t *testing.T) {
	r := newTapRig(t, 0)
	ps := packetSocket(t, r.tap.Index())

	// Guest → host, the frame in three buffers.
	out := ethFrame(1514, 0x20)
	binary.BigEndian.PutUint16(out[12:], 0x88b5)
	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: out[:14]}, desc{data: out[14:]})
	r.tx.wait()
	for {
		buf := make([]byte, 65536)
		n, _, err := unix.Recvfrom(ps, buf, 0)
		require.NoError(t, err)
		if n >= 14 && binary.BigEndian.Uint16(buf[12:]) == 0x88b5 {
			assert.Equal(t, out, buf[:n])
			break
		}
	}

	// Host → guest: a jumbo frame spans mergeable buffers.
	in := ethFrame(5000, 0x30)
	binary.BigEndian.PutUint16(in[12:], 0x88b5)
	require.NoError(t, unix.Sendto(ps, in, 0, &unix.SockaddrLinklayer{Ifindex: r.tap.Index(), Halen: 6}))
	p := r.receiveMatching(isTestFrame)
	assert.Equal(t, in, p.frame)
	assert.Equal(t, 3, p.bufs, "12+5000 bytes in 2048-byte buffers")
	assert.Empty(t, r.errors())
}

func TestTapChecksumOffloadBothWays(t *testing.T) {
	r := newTapRig(t, 0) // every offered feature, GUEST_CSUM among them
	assert.NotZero(t, r.dev.Features()&FeatureGuestCsum)

	// Guest → host with the checksum left to the host: the header must
	// reach the tap, or the kernel would find a bad checksum and drop it.
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(hostIP.AsSlice()), Port: 9998})
	require.NoError(t, err)
	defer sock.Close()
	payload := []byte("checksum offloaded by the guest")
	frame := udpFrame(tcpip.LinkAddress(testMAC), r.hostMAC, guestIP, hostIP, 9999, 9998, payload, true)
	h := netHdr{flags: hdrFNeedsCsum, csumStart: header.EthernetMinimumSize + header.IPv4MinimumSize, csumOffset: udpChecksumOffset}
	r.tx.post(desc{data: hdrBytes(h)}, desc{data: frame})
	r.tx.wait()
	buf := make([]byte, 1500)
	n, from, err := sock.ReadFromUDP(buf)
	require.NoError(t, err)
	assert.Equal(t, payload, buf[:n])
	assert.Equal(t, "10.99.0.2:9999", from.String())

	// Host → guest: the driver accepted GUEST_CSUM, so the host leaves the
	// checksum to it and says so in the header.
	_, err = sock.WriteToUDP([]byte("checksum for the guest to finish"), &net.UDPAddr{IP: net.IP(guestIP.AsSlice()), Port: 7777})
	require.NoError(t, err)
	p := r.receiveMatching(func(p packet) bool { return udpIn(p.frame, 7777) != nil })
	assert.Equal(t, uint8(hdrFNeedsCsum), p.hdr.flags&hdrFNeedsCsum, "header %+v", p.hdr)
	assert.Equal(t, uint16(header.EthernetMinimumSize+header.IPv4MinimumSize), p.hdr.csumStart)
	assert.Equal(t, uint16(udpChecksumOffset), p.hdr.csumOffset)
	assert.Equal(t, "checksum for the guest to finish", string(udpIn(p.frame, 7777).Payload()))
}

func TestTapWithoutOffloadsDeliversFinishedFrames(t *testing.T) {
	r := newTapRig(t, virtio.FeatureVersion1|FeatureMrgRxbuf|FeatureMAC)
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(hostIP.AsSlice()), Port: 9998})
	require.NoError(t, err)
	defer sock.Close()
	_, err = sock.WriteToUDP([]byte("finished by the host"), &net.UDPAddr{IP: net.IP(guestIP.AsSlice()), Port: 7777})
	require.NoError(t, err)
	p := r.receiveMatching(func(p packet) bool { return udpIn(p.frame, 7777) != nil })
	assert.Zero(t, p.hdr.flags, "no offload information for a driver that took none")
	assert.Equal(t, uint8(gsoNone), p.hdr.gsoType)
	ip := header.IPv4(p.frame[header.EthernetMinimumSize:])
	u := udpIn(p.frame, 7777)
	assert.True(t, u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)),
		"the host computed the checksum")

	// And the driver may not leave checksums to the host either.
	frame := udpFrame(tcpip.LinkAddress(testMAC), r.hostMAC, guestIP, hostIP, 9999, 9998, []byte("x"), true)
	r.tx.post(desc{data: hdrBytes(netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6})}, desc{data: frame})
	assert.Zero(t, r.tx.wait().len)
	require.Len(t, r.errors(), 1)
	assert.ErrorIs(t, r.errors()[0], virtio.ErrBadRequest)
}

// packetSocket opens an AF_PACKET socket bound to ifindex.
func packetSocket(t *testing.T, ifindex int) int {
	t.Helper()
	proto := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}))
	return fd
}

// usernetRig is a device over the user-mode network: no root needed.
func usernetRig(t *testing.T) (*rig, *usernet.Network) {
	t.Helper()
	n, err := usernet.New(context.Background(), usernet.Options{GuestMAC: testMAC})
	require.NoError(t, err)
	r := activate(t, n, 0) // the device owns (and closes) the network
	for range 16 {
		r.rx.post(desc{size: 2048, writable: true})
	}
	return r, n
}

func TestUsernetDHCPThroughTheDevice(t *testing.T) {
	r, n := usernetRig(t)
	assert.Zero(t, r.dev.Features()&(FeatureCsum|FeatureGuestCsum), "no offloads over usernet")

	d, err := dhcpv4.NewDiscovery(testMAC)
	require.NoError(t, err)
	frame := udpFrame(tcpip.LinkAddress(testMAC), header.EthernetBroadcastAddress, header.IPv4Any, header.IPv4Broadcast, 68, 67, d.ToBytes(), false)
	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: frame})
	r.tx.wait()

	var offer *dhcpv4.DHCPv4
	r.receiveMatching(func(p packet) bool {
		u := udpIn(p.frame, 68)
		if u == nil {
			return false
		}
		m, err := dhcpv4.FromBytes(u.Payload())
		if err != nil || m.TransactionID != d.TransactionID {
			return false
		}
		offer = m
		return true
	})
	assert.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	assert.Equal(t, n.Options().GuestIP.String(), offer.YourIPAddr.String())
	assert.Equal(t, n.Options().Gateway.String(), offer.Router()[0].String())
}

func TestUsernetGuestPingsGateway(t *testing.T) {
	r, n := usernetRig(t)
	me := tcpip.LinkAddress(testMAC)
	myIP := tcpip.AddrFrom4(n.Options().GuestIP.As4())
	gwIP := tcpip.AddrFrom4(n.Options().Gateway.As4())

	// ARP for the gateway, as a guest does first.
	arp := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(arp).Encode(&header.EthernetFields{SrcAddr: me, DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber})
	a := header.ARP(arp[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), me)
	copy(a.ProtocolAddressSender(), myIP.AsSlice())
	copy(a.ProtocolAddressTarget(), gwIP.AsSlice())
	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: arp})
	r.tx.wait()
	reply := r.receiveMatching(func(p packet) bool {
		return len(p.frame) >= header.EthernetMinimumSize+header.ARPSize &&
			header.Ethernet(p.frame).Type() == header.ARPProtocolNumber &&
			header.ARP(p.frame[header.EthernetMinimumSize:]).Op() == header.ARPReply
	})
	gwMAC := tcpip.LinkAddress(header.ARP(reply.frame[header.EthernetMinimumSize:]).HardwareAddressSender())

	// ICMP echo to the gateway.
	icmpLen := header.ICMPv4MinimumSize + 4
	ipLen := header.IPv4MinimumSize + icmpLen
	ping := make([]byte, header.EthernetMinimumSize+ipLen)
	header.Ethernet(ping).Encode(&header.EthernetFields{SrcAddr: me, DstAddr: gwMAC, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(ping[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: myIP, DstAddr: gwIP})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(ip.Payload())
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(0x1234)
	ic.SetSequence(1)
	copy(ic.Payload(), "wisp")
	ic.SetChecksum(^checksum.Checksum(ic, 0))
	r.tx.post(desc{data: hdrBytes(netHdr{})}, desc{data: ping})
	r.tx.wait()
	pong := r.receiveMatching(func(p packet) bool {
		if len(p.frame) < header.EthernetMinimumSize || header.Ethernet(p.frame).Type() != header.IPv4ProtocolNumber {
			return false
		}
		ip := header.IPv4(p.frame[header.EthernetMinimumSize:])
		return ip.TransportProtocol() == header.ICMPv4ProtocolNumber && header.ICMPv4(ip.Payload()).Type() == header.ICMPv4EchoReply
	})
	echo := header.ICMPv4(header.IPv4(pong.frame[header.EthernetMinimumSize:]).Payload())
	assert.Equal(t, uint16(0x1234), echo.Ident())
	assert.Equal(t, "wisp", string(echo.Payload()))
	assert.Empty(t, r.errors())
}

// udpChecksumOffset is where the checksum sits in a UDP header.
const udpChecksumOffset = 6
