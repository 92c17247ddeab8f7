package usernet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Everything here stays on this machine: the guest side is a second gVisor
// stack (or hand-made frames) on the network's descriptor, and the only
// host sockets are on 127.0.0.1.

func newNetwork(t *testing.T, o Options) *Network {
	t.Helper()
	n, err := New(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n
}

// guestStack is a TCP/IP stack playing the guest: it owns the network's
// guest port (the descriptor the virtio-net device would use), with the
// guest's MAC and address and a default route through the gateway.
func guestStack(t *testing.T, n *Network) *stack.Stack {
	t.Helper()
	o := n.Options()
	ep, err := fdbased.New(&fdbased.Options{
		FDs:            []int{n.Fd()},
		MTU:            uint32(o.MTU),
		EthernetHeader: true,
		Address:        tcpip.LinkAddress(o.GuestMAC),
	})
	require.NoError(t, err)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	// Registered after newNetwork's cleanup, so it runs first: the guest
	// stops reading the descriptor before the network closes it.
	t.Cleanup(s.Destroy)
	require.Nil(t, s.CreateNIC(1, ep))
	require.Nil(t, s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(o.GuestIP.As4()).WithPrefix(),
	}, stack.AddressProperties{}))
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(o.Gateway.As4()), NIC: 1}})
	return s
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

// dhcpDiscover is the frame a guest broadcasts to find a DHCP server.
func dhcpDiscover(t *testing.T, mac net.HardwareAddr) []byte {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac)
	require.NoError(t, err)
	payload := d.ToBytes()
	udpLen := header.UDPMinimumSize + len(payload)
	ipLen := header.IPv4MinimumSize + udpLen
	f := make([]byte, header.EthernetMinimumSize+ipLen)
	header.Ethernet(f).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(mac),
		DstAddr: header.EthernetBroadcastAddress,
		Type:    header.IPv4ProtocolNumber,
	})
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(ipLen),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     header.IPv4Any,
		DstAddr:     header.IPv4Broadcast,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip.Payload())
	u.Encode(&header.UDPFields{SrcPort: 68, DstPort: 67, Length: uint16(udpLen)}) // checksum 0: none
	copy(u.Payload(), payload)
	return f
}

// dhcpReply parses a frame as a DHCP server's reply, or returns nil.
func dhcpReply(frame []byte) *dhcpv4.DHCPv4 {
	if len(frame) < header.EthernetMinimumSize || header.Ethernet(frame).Type() != header.IPv4ProtocolNumber {
		return nil
	}
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber {
		return nil
	}
	u := header.UDP(ip.Payload())
	if len(u) < header.UDPMinimumSize || u.SourcePort() != 67 {
		return nil
	}
	m, err := dhcpv4.FromBytes(u.Payload())
	if err != nil {
		return nil
	}
	return m
}

// readFrame blocks until the network has a frame for the guest.
func readFrame(t *testing.T, n *Network) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	for {
		nr, err := n.ReadFrame([][]byte{buf})
		if errors.Is(err, unix.EAGAIN) {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(n.Fd()), Events: unix.POLLIN}}, -1)
			if !errors.Is(err, unix.EINTR) {
				require.NoError(t, err)
			}
			continue
		}
		require.NoError(t, err)
		return buf[:nr]
	}
}

func TestDHCPOffersTheGuestItsAddress(t *testing.T) {
	n := newNetwork(t, Options{})
	mac := n.Options().GuestMAC
	require.NoError(t, n.WriteFrame([][]byte{dhcpDiscover(t, mac)}))
	var offer *dhcpv4.DHCPv4
	for offer == nil {
		offer = dhcpReply(readFrame(t, n))
	}
	assert.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	assert.Equal(t, mac, offer.ClientHWAddr)
	assert.Equal(t, "10.0.2.15", offer.YourIPAddr.String())
	assert.Equal(t, "10.0.2.2", offer.ServerIdentifier().String())
	require.Len(t, offer.Router(), 1)
	assert.Equal(t, "10.0.2.2", offer.Router()[0].String())
	require.Len(t, offer.DNS(), 1)
	assert.Equal(t, "10.0.2.2", offer.DNS()[0].String())
	assert.Equal(t, net.CIDRMask(24, 32), offer.SubnetMask())
}

func TestDHCPGivesOtherMACsOtherAddresses(t *testing.T) {
	n := newNetwork(t, Options{})
	other, _ := net.ParseMAC("02:00:00:00:00:42")
	require.NoError(t, n.WriteFrame([][]byte{dhcpDiscover(t, other)}))
	var offer *dhcpv4.DHCPv4
	for offer == nil {
		offer = dhcpReply(readFrame(t, n))
	}
	ip, ok := netip.AddrFromSlice(offer.YourIPAddr.To4())
	require.True(t, ok)
	assert.True(t, n.Options().Subnet.Contains(ip), ip)
	assert.NotEqual(t, "10.0.2.15", ip.String(), "reserved for the guest's MAC")
	assert.NotEqual(t, "10.0.2.2", ip.String(), "the gateway's")
}

func TestTCPForwardFromHostLoopbackToGuest(t *testing.T) {
	fwd, err := ParseForward("tcp:127.0.0.1:0-:80")
	require.NoError(t, err)
	n := newNetwork(t, Options{Forwards: []Forward{fwd}})
	g := guestStack(t, n)

	ln, err := gonet.ListenTCP(g, tcpip.FullAddress{NIC: 1, Port: 80}, ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo until the host half-closes
		served <- err
	}()

	addrs := n.ForwardAddrs()
	require.Len(t, addrs, 1)
	c, err := net.Dial("tcp", addrs[0].String())
	require.NoError(t, err)
	defer c.Close()
	msg := bytes.Repeat([]byte("through the forward "), 5000) // 100 KB: many segments
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, msg, got)
	require.NoError(t, <-served)
}

func TestUDPForwardFromHostLoopbackToGuest(t *testing.T) {
	fwd, err := ParseForward("udp:127.0.0.1:0-:5353")
	require.NoError(t, err)
	n := newNetwork(t, Options{Forwards: []Forward{fwd}})
	g := guestStack(t, n)

	pc, err := gonet.DialUDP(g, &tcpip.FullAddress{NIC: 1, Port: 5353}, nil, ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		nr, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(append([]byte("echo: "), buf[:nr]...), from)
		}
	}()

	c, err := net.Dial("udp", n.ForwardAddrs()[0].String())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 1500)
	nr, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "echo: hello", string(buf[:nr]))
}

func TestGuestReachesHostLoopbackThroughGateway(t *testing.T) {
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer host.Close()
	go func() {
		c, err := host.Accept()
		if err == nil {
			c.Write([]byte("hello from the host"))
			c.Close()
		}
	}()

	n := newNetwork(t, Options{})
	g := guestStack(t, n)
	port := uint16(host.Addr().(*net.TCPAddr).Port)
	c, err := gonet.DialTCP(g, fullAddr(netip.AddrPortFrom(n.Options().Gateway, port)), ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer c.Close()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "hello from the host", string(got))
}

func TestGuestUDPReachesHostLoopbackThroughGateway(t *testing.T) {
	host, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer host.Close()
	go func() {
		buf := make([]byte, 1500)
		nr, from, err := host.ReadFrom(buf)
		if err == nil {
			host.WriteTo(bytes.ToUpper(buf[:nr]), from)
		}
	}()

	n := newNetwork(t, Options{})
	g := guestStack(t, n)
	port := uint16(host.LocalAddr().(*net.UDPAddr).Port)
	dst := fullAddr(netip.AddrPortFrom(n.Options().Gateway, port))
	c, err := gonet.DialUDP(g, nil, &dst, ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("quiet"))
	require.NoError(t, err)
	buf := make([]byte, 1500)
	nr, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "QUIET", string(buf[:nr]))
}

func TestGuestCannotDialTheRestOfTheVirtualSubnet(t *testing.T) {
	n := newNetwork(t, Options{})
	g := guestStack(t, n)
	_, err := gonet.DialTCP(g, fullAddr(netip.MustParseAddrPort("10.0.2.77:80")), ipv4.ProtocolNumber)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refused")
}

func TestDNSAnswersThroughTheGateway(t *testing.T) {
	n := newNetwork(t, Options{})
	g := guestStack(t, n)
	dst := fullAddr(netip.AddrPortFrom(n.Options().Gateway, 53))
	c, err := gonet.DialUDP(g, nil, &dst, ipv4.ProtocolNumber)
	require.NoError(t, err)
	defer c.Close()

	// A name of the local zone: the gateway answers it without asking the
	// host's resolver, so no query leaves the machine.
	q := new(dns.Msg)
	q.SetQuestion("host."+LocalZone+".", dns.TypeA)
	b, err := q.Pack()
	require.NoError(t, err)
	_, err = c.Write(b)
	require.NoError(t, err)
	buf := make([]byte, 1500)
	nr, err := c.Read(buf)
	require.NoError(t, err)
	var r dns.Msg
	require.NoError(t, r.Unpack(buf[:nr]))
	assert.Equal(t, q.Id, r.Id)
	require.NotEmpty(t, r.Answer, "%v", &r)
	a, ok := r.Answer[0].(*dns.A)
	require.True(t, ok, "%v", r.Answer[0])
	assert.Equal(t, "10.0.2.2", a.A.String())
}

func TestWriteFrameRejectsRunts(t *testing.T) {
	n := newNetwork(t, Options{})
	err := n.WriteFrame([][]byte{make([]byte, 10)})
	assert.ErrorIs(t, err, unix.EINVAL)
	err = n.WriteFrame([][]byte{make([]byte, maxFrame+1)})
	assert.ErrorIs(t, err, unix.EINVAL)
	assert.NoError(t, n.SetOffload(0))
	assert.Error(t, n.SetOffload(unix.TUN_F_CSUM))
	assert.False(t, n.HasVnetHdr())
}

// A guest that stops taking frames must not stall the network: frames for
// it are dropped and the network keeps serving.
func TestFramesForASlowGuestAreDropped(t *testing.T) {
	n := newNetwork(t, Options{})
	discover := dhcpDiscover(t, n.Options().GuestMAC)
	sent := 0
	for n.Dropped() == 0 {
		require.Less(t, sent, 100000, "no frame dropped after %d unread offers", sent)
		err := n.WriteFrame([][]byte{discover})
		if errors.Is(err, unix.EAGAIN) {
			_, err = unix.Poll([]unix.PollFd{{Fd: int32(n.Fd()), Events: unix.POLLOUT}}, -1)
			require.NoError(t, err)
			continue
		}
		require.NoError(t, err)
		sent++
	}
	// The network still answers. Like a DHCP client, repeat the discover
	// (same transaction ID) until its offer arrives: the backlog ahead of
	// it may have its own copies dropped. One frame is read per discover
	// sent, so the backlog only shrinks.
	last := dhcpDiscover(t, n.Options().GuestMAC)
	lastID, err := dhcpv4.FromBytes(last[header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize:])
	require.NoError(t, err)
	for {
		err := n.WriteFrame([][]byte{last})
		if errors.Is(err, unix.EAGAIN) {
			_, err = unix.Poll([]unix.PollFd{{Fd: int32(n.Fd()), Events: unix.POLLOUT}}, -1)
			require.NoError(t, err)
			continue
		}
		require.NoError(t, err)
		if r := dhcpReply(readFrame(t, n)); r != nil && r.TransactionID == lastID.TransactionID {
			break
		}
	}
}

func TestCancelledContextStopsTheNetwork(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, Options{Forwards: []Forward{{Proto: "tcp", Host: netip.MustParseAddrPort("127.0.0.1:0"), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}}})
	require.NoError(t, err)
	addr := n.ForwardAddrs()[0].String()
	cancel()
	require.NoError(t, n.shutdown(), "waits for the shutdown the cancel started")
	_, err = net.Dial("tcp", addr)
	assert.Error(t, err, "the forward's listener is closed")
	// The guest port stays open for the device still polling it, but
	// nothing is behind it.
	err = n.WriteFrame([][]byte{dhcpDiscover(t, n.Options().GuestMAC)})
	assert.ErrorIs(t, err, unix.ECONNREFUSED)
	require.NoError(t, n.Close())
	require.NoError(t, n.Close(), "Close is idempotent")
}

func TestNewRejectsBadOptions(t *testing.T) {
	_, err := New(context.Background(), Options{MTU: 10})
	assert.ErrorIs(t, err, ErrBadOptions)

	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	f, err := ParseForward("tcp:" + busy.Addr().String() + "-:80")
	require.NoError(t, err)
	_, err = New(context.Background(), Options{Forwards: []Forward{f}})
	assert.ErrorIs(t, err, unix.EADDRINUSE, "a taken host port fails New, which cleans up")
}
