// Package usernet is user-mode networking for guests of users without
// root: a virtual Ethernet segment whose other end is a TCP/IP stack in the
// wisp process (gVisor's netstack, through gvisor-tap-vsock), like QEMU's
// "-netdev user". The guest gets an address by DHCP, resolves names through
// the gateway, and its TCP and UDP connections leave through ordinary host
// sockets; host ports can be forwarded into the guest.
//
// The defaults follow QEMU: network 10.0.2.0/24, gateway, DHCP and DNS
// server 10.0.2.2, guest 10.0.2.15. Connections to the gateway reach the
// host's loopback (10.0.2.2:8000 is the host's 127.0.0.1:8000). The
// gateway's DNS server asks the host's resolver, except for names in
// LocalZone, which it answers itself.
//
// # How the guest is attached
//
// gvisor-tap-vsock's switch (pkg/tap.Switch, what its
// VirtualNetwork.AcceptQemu/AcceptVfkit use) takes a VM as a net.Conn
// speaking one of several framings. wisp uses the vfkit framing, bare
// Ethernet frames as datagrams, over a SOCK_DGRAM unix socketpair: each
// read or write on the device's end is exactly one frame, so the
// virtio-net device reads a frame with one recvmsg and sends one with one
// writev straight from guest memory, with no length prefix to parse or
// reassemble as QEMU's stream framing would need. A connected socketpair
// is limited by its send buffer, not by the small datagram queue limit
// (net.unix.max_dgram_qlen) of unconnected datagram sockets.
//
// When the guest does not take frames (no receive buffers posted), frames
// towards it are dropped once the socket buffer is full, as a full tap or
// NIC queue drops them; the switch never blocks the stack on a slow guest.
package usernet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/containers/gvisor-tap-vsock/pkg/services/dhcp"
	"github.com/containers/gvisor-tap-vsock/pkg/services/dns"
	gvtap "github.com/containers/gvisor-tap-vsock/pkg/tap"
	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Defaults, QEMU's user-mode network: the subnet, and the gateway's and
// guest's host numbers in it (10.0.2.2 and 10.0.2.15).
const (
	DefaultSubnet   = "10.0.2.0/24"
	DefaultGuestMAC = "52:54:00:12:34:56"
	gatewayHost     = 2
	guestHost       = 15
)

// LocalZone is the DNS zone the gateway answers itself, never asking the
// host's resolver: host.wisp.internal is the gateway (that is, the host's
// loopback, as seen from the guest), gateway.wisp.internal too, and
// guest.wisp.internal is the guest's address.
const LocalZone = "wisp.internal"

// DefaultMTU is the MTU the DHCP server announces.
const DefaultMTU = 1500

// gatewayMAC is the gateway's Ethernet address: 52:55 and its IPv4
// address, as QEMU's slirp makes it.
func gatewayMAC(gw netip.Addr) string {
	a := gw.As4()
	return fmt.Sprintf("52:55:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

const (
	nicID = 1 // gvisor-tap-vsock's DHCP server binds to NIC 1
	// minFrame is an Ethernet header: the switch parses one from every
	// frame and must never see less.
	minFrame = 14
	// maxFrame bounds one frame written into the network: the largest
	// IPv4 packet and its Ethernet and VLAN headers.
	maxFrame = 65535 + 18
	// socketBuffer is the send buffer asked for on both ends of the
	// socketpair (the kernel caps it at net.core.wmem_max): room for a few
	// hundred full-size frames in flight.
	socketBuffer = 1 << 20
)

// ErrBadOptions: Options that cannot make a network.
var ErrBadOptions = errors.New("usernet: invalid options")

// Options describe the virtual network. Zero values take the defaults.
type Options struct {
	// Subnet is the virtual IPv4 network (default 10.0.2.0/24).
	Subnet netip.Prefix
	// Gateway is the router, DHCP and DNS server (default 10.0.2.2).
	// TCP and UDP to it are forwarded to the host's 127.0.0.1.
	Gateway netip.Addr
	// GuestIP is the address DHCP gives GuestMAC and where forwards go
	// by default (default 10.0.2.15).
	GuestIP netip.Addr
	// GuestMAC is the guest NIC's address (default 52:54:00:12:34:56).
	GuestMAC net.HardwareAddr
	// MTU is announced by DHCP (default 1500).
	MTU int
	// DNSSearchDomains are announced by DHCP.
	DNSSearchDomains []string
	// Forwards expose guest ports on the host.
	Forwards []Forward
}

// withDefaults fills zero fields and checks the result.
func (o Options) withDefaults() (Options, error) {
	bad := func(format string, a ...any) (Options, error) {
		return Options{}, fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrBadOptions)
	}
	if !o.Subnet.IsValid() {
		o.Subnet = netip.MustParsePrefix(DefaultSubnet)
	}
	o.Subnet = o.Subnet.Masked()
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() < 8 || o.Subnet.Bits() > 29 {
		return bad("subnet %s: want an IPv4 network from /8 to /29", o.Subnet)
	}
	if !o.Gateway.IsValid() {
		o.Gateway = nthAddr(o.Subnet, gatewayHost)
	}
	if !o.GuestIP.IsValid() {
		o.GuestIP = nthAddr(o.Subnet, guestHost)
		if !o.Subnet.Contains(o.GuestIP) || o.GuestIP == broadcastAddr(o.Subnet) {
			o.GuestIP = nthAddr(o.Subnet, 3)
		}
	}
	for name, a := range map[string]netip.Addr{"gateway": o.Gateway, "guest address": o.GuestIP} {
		if !o.Subnet.Contains(a) || a == o.Subnet.Addr() || a == broadcastAddr(o.Subnet) {
			return bad("%s %s: not a host address of %s", name, a, o.Subnet)
		}
	}
	if o.Gateway == o.GuestIP {
		return bad("guest address %s is the gateway's", o.GuestIP)
	}
	if o.GuestMAC == nil {
		o.GuestMAC, _ = net.ParseMAC(DefaultGuestMAC)
	}
	if len(o.GuestMAC) != 6 || o.GuestMAC[0]&1 != 0 {
		return bad("guest MAC %s: want a 6-byte unicast address", o.GuestMAC)
	}
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.MTU < 576 || o.MTU > 65535 {
		return bad("MTU %d: want 576 to 65535", o.MTU)
	}
	fwds := make([]Forward, len(o.Forwards))
	for i, f := range o.Forwards {
		if f.Proto != "tcp" && f.Proto != "udp" {
			return Options{}, fmt.Errorf("forward %s: protocol %q is neither tcp nor udp: %w", f, f.Proto, ErrBadForward)
		}
		if f.Host.Addr().IsValid() && !f.Host.Addr().Is4() {
			return Options{}, fmt.Errorf("forward %s: host address is not IPv4: %w", f, ErrBadForward)
		}
		if !f.Guest.Addr().IsValid() {
			f.Guest = netip.AddrPortFrom(o.GuestIP, f.Guest.Port())
		}
		if !o.Subnet.Contains(f.Guest.Addr()) || f.Guest.Addr() == o.Gateway || f.Guest.Port() == 0 {
			return Options{}, fmt.Errorf("forward %s: guest side must be a port of an address in %s other than the gateway: %w",
				f, o.Subnet, ErrBadForward)
		}
		fwds[i] = f
	}
	o.Forwards = fwds
	return o, nil
}

func nthAddr(p netip.Prefix, n uint32) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func broadcastAddr(p netip.Prefix) netip.Addr {
	return nthAddr(p, 1<<(32-p.Bits())-1)
}

// Network is a running virtual network with one guest port. The guest's
// virtio-net device exchanges Ethernet frames with it through ReadFrame,
// WriteFrame and Fd (no virtio-net header, no offloads).
type Network struct {
	opts    Options
	stack   *stack.Stack
	devFd   int // the guest side of the socketpair
	sw      *gvtap.Switch
	swConn  net.Conn // the switch side
	swStop  context.CancelFunc
	swDone  chan struct{}
	dhcp    *dhcp.Server
	dnsUDP  *gonet.UDPConn
	dnsTCP  *gonet.TCPListener
	fwdAddr []net.Addr
	closers []func() error // forward listeners

	// ctx ends outbound dials and forwarded connections on Close.
	ctx    context.Context
	cancel context.CancelFunc
	// stopAfter unhooks Close from the caller's context.
	stopAfter func() bool

	// mu guards closed; wg counts the goroutines Close waits for. Work
	// begins only through begin, so none starts after Close.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup

	dropped atomic.Uint64

	shutdownOnce sync.Once
	shutdownErr  error
	fdOnce       sync.Once
}

// New builds the network and starts its DHCP and DNS servers and port
// forwards. The network lives until Close, or until ctx is cancelled,
// which stops it (Close must still be called to release the guest port).
func New(ctx context.Context, o Options) (*Network, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Network{opts: o, devFd: -1}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.start(); err != nil {
		n.Close()
		return nil, err
	}
	n.stopAfter = context.AfterFunc(ctx, func() { n.shutdown() })
	return n, nil
}

func (n *Network) start() error {
	o := n.opts
	ep, err := gvtap.NewLinkEndpoint(false, uint32(o.MTU), gatewayMAC(o.Gateway), o.Gateway.String(), nil)
	if err != nil {
		return fmt.Errorf("usernet: gateway link endpoint: %w", err)
	}
	n.sw = gvtap.NewSwitch(false)
	ep.Connect(n.sw)
	n.sw.Connect(ep)

	if err := n.buildStack(ep); err != nil {
		return err
	}
	if err := n.startServices(); err != nil {
		return err
	}
	for _, f := range o.Forwards {
		if err := n.startForward(f); err != nil {
			return err
		}
	}
	return n.attachGuestPort()
}

func (n *Network) buildStack(ep stack.LinkEndpoint) error {
	o := n.opts
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	n.stack = s
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("usernet: enable TCP SACK: %s", err)
	}
	if err := s.CreateNIC(nicID, ep); err != nil {
		return fmt.Errorf("usernet: create NIC: %s", err)
	}
	if err := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(o.Gateway.As4()).WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("usernet: gateway address %s: %s", o.Gateway, err)
	}
	// The gateway answers for every destination: connections the guest
	// opens to the world end here and are re-made from host sockets.
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("usernet: spoofing: %s", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("usernet: promiscuous mode: %s", err)
	}
	subnet, err := tcpip.NewSubnet(tcpip.AddrFrom4(o.Subnet.Addr().As4()),
		tcpip.MaskFromBytes(net.CIDRMask(o.Subnet.Bits(), 32)))
	if err != nil {
		return fmt.Errorf("usernet: subnet %s: %w", o.Subnet, err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: subnet, NIC: nicID}})

	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, 64, n.forwardTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, n.forwardUDP).HandlePacket)
	return nil
}

// startServices starts gvisor-tap-vsock's DHCP and DNS servers on the
// gateway.
func (n *Network) startServices() error {
	o := n.opts
	pool := gvtap.NewIPPool(&net.IPNet{
		IP:   net.IP(o.Subnet.Addr().AsSlice()),
		Mask: net.CIDRMask(o.Subnet.Bits(), 32),
	})
	pool.Reserve(net.IP(o.Gateway.AsSlice()), gatewayMAC(o.Gateway))
	pool.Reserve(net.IP(o.GuestIP.AsSlice()), o.GuestMAC.String())
	pool.Reserve(net.IP(broadcastAddr(o.Subnet).AsSlice()), "broadcast")
	cfg := &types.Configuration{
		MTU:               o.MTU,
		Subnet:            o.Subnet.String(),
		GatewayIP:         o.Gateway.String(),
		GatewayMacAddress: gatewayMAC(o.Gateway),
		DNSSearchDomains:  o.DNSSearchDomains,
	}
	var err error
	if n.dhcp, err = dhcp.New(cfg, n.stack, pool); err != nil {
		return fmt.Errorf("usernet: DHCP server: %w", err)
	}
	n.run(func() { _ = n.dhcp.Serve() })

	dnsAddr := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(o.Gateway.As4()), Port: 53}
	if n.dnsUDP, err = gonet.DialUDP(n.stack, &dnsAddr, nil, ipv4.ProtocolNumber); err != nil {
		return fmt.Errorf("usernet: DNS server UDP socket: %w", err)
	}
	if n.dnsTCP, err = gonet.ListenTCP(n.stack, dnsAddr, ipv4.ProtocolNumber); err != nil {
		return fmt.Errorf("usernet: DNS server TCP socket: %w", err)
	}
	zones := []types.Zone{{
		Name: LocalZone + ".",
		Records: []types.Record{
			{Name: "host", IP: net.IP(o.Gateway.AsSlice())},
			{Name: "gateway", IP: net.IP(o.Gateway.AsSlice())},
			{Name: "guest", IP: net.IP(o.GuestIP.AsSlice())},
		},
	}}
	srv, err := dns.New(n.dnsUDP, n.dnsTCP, zones)
	if err != nil {
		return fmt.Errorf("usernet: DNS server: %w", err)
	}
	n.run(func() { _ = srv.Serve() })
	n.run(func() { _ = srv.ServeTCP() })
	return nil
}

// attachGuestPort makes the socketpair and plugs one end into the switch.
func (n *Network) attachGuestPort() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("usernet: socketpair: %w", err)
	}
	n.devFd = fds[0]
	for _, fd := range fds {
		// Best effort: the kernel caps it at net.core.wmem_max.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	f := os.NewFile(uintptr(fds[1]), "usernet-switch")
	c, err := net.FileConn(f) // dups the descriptor
	f.Close()
	if err != nil {
		return fmt.Errorf("usernet: switch socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return fmt.Errorf("usernet: switch socket is a %T, not a unix socket", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return fmt.Errorf("usernet: switch socket: %w", err)
	}
	dc := &dropConn{UnixConn: uc, raw: rc, dropped: &n.dropped, reading: make(chan struct{})}
	n.swConn = dc

	var swCtx context.Context
	swCtx, n.swStop = context.WithCancel(n.ctx)
	n.swDone = make(chan struct{})
	go func() {
		defer close(n.swDone)
		_ = n.sw.Accept(swCtx, n.swConn, types.VfkitProtocol)
	}()
	// The switch registers the port before it first reads from it; until
	// then it would drop frames for the guest (an ARP request for a
	// forward's first connection, say), so wait for that.
	select {
	case <-dc.reading:
		return nil
	case <-n.swDone:
		return errors.New("usernet: the switch refused the guest port")
	}
}

// dropConn is the switch's end of the socketpair. Its Write never waits:
// when the guest's socket buffer is full the frame is dropped, as a full
// NIC queue drops it. (The switch holds its locks while writing, so a
// blocking write would stall every connection on a guest that stopped
// reading.)
type dropConn struct {
	*net.UnixConn
	raw     syscall.RawConn
	dropped *atomic.Uint64
	// reading is closed when the switch first reads.
	reading     chan struct{}
	readingOnce sync.Once
}

func (c *dropConn) Read(p []byte) (int, error) {
	c.readingOnce.Do(func() { close(c.reading) })
	return c.UnixConn.Read(p)
}

func (c *dropConn) Write(p []byte) (int, error) {
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			_, werr = unix.Write(int(fd), p)
			if !errors.Is(werr, unix.EINTR) {
				return true // done, whatever happened: never wait for room
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(werr, unix.EAGAIN), errors.Is(werr, unix.ENOBUFS):
		c.dropped.Add(1)
		return len(p), nil
	case werr != nil:
		return 0, werr
	}
	return len(p), nil
}

// run starts fn as a goroutine Close waits for; after Close it does not
// start it.
func (n *Network) run(fn func()) bool {
	if !n.begin() {
		return false
	}
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// begin registers one piece of work with wg unless the network is closed.
func (n *Network) begin() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

// Fd is the guest port's descriptor (non-blocking, one frame per datagram)
// for polling: readable when a frame for the guest is queued, writable when
// the network takes a frame.
func (n *Network) Fd() int { return n.devFd }

// HasVnetHdr is false: frames are bare Ethernet frames.
func (n *Network) HasVnetHdr() bool { return false }

// SetOffload accepts only 0: the network neither sends nor takes
// offloaded frames.
func (n *Network) SetOffload(flags uint) error {
	if flags != 0 {
		return fmt.Errorf("usernet: offloads %#x requested, none supported", flags)
	}
	return nil
}

// ReadFrame reads one frame for the guest into bufs. It returns
// unix.EAGAIN when none is queued, and an error wrapping unix.EMSGSIZE
// (the frame is dropped) when bufs are too small for it.
func (n *Network) ReadFrame(bufs [][]byte) (int, error) {
	for {
		nr, _, flags, _, err := unix.RecvmsgBuffers(n.devFd, bufs, nil, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, unix.EAGAIN
		case err != nil:
			return 0, fmt.Errorf("usernet: read frame: %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return 0, fmt.Errorf("usernet: read frame: %d-byte frame does not fit: %w", nr, unix.EMSGSIZE)
		}
		return nr, nil
	}
}

// WriteFrame sends one Ethernet frame from the guest, gathered from bufs.
// It returns unix.EAGAIN when the network is not keeping up (poll Fd for
// writing and retry).
func (n *Network) WriteFrame(bufs [][]byte) error {
	size := 0
	for _, b := range bufs {
		size += len(b)
	}
	if size < minFrame || size > maxFrame {
		return fmt.Errorf("usernet: write frame: %d bytes, want %d to %d: %w", size, minFrame, maxFrame, unix.EINVAL)
	}
	for {
		_, err := unix.SendmsgBuffers(n.devFd, bufs, nil, nil, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return unix.EAGAIN
		}
		return fmt.Errorf("usernet: write frame: %w", err)
	}
}

// Dropped counts frames for the guest dropped because it did not take
// them in time.
func (n *Network) Dropped() uint64 { return n.dropped.Load() }

// Options are the network's settings, defaults filled in.
func (n *Network) Options() Options { return n.opts }

// ForwardAddrs are the host addresses the forwards listen on, in the order
// of Options.Forwards (with the ports the kernel chose for port 0).
func (n *Network) ForwardAddrs() []net.Addr { return append([]net.Addr(nil), n.fwdAddr...) }

// Close stops the network — forwards, servers, every forwarded connection
// and the stack — and returns once all of the network's goroutines have
// ended; then it closes the guest port's descriptor.
func (n *Network) Close() error {
	err := n.shutdown()
	n.fdOnce.Do(func() {
		if n.devFd >= 0 {
			if cerr := unix.Close(n.devFd); cerr != nil {
				err = errors.Join(err, fmt.Errorf("usernet: close guest port: %w", cerr))
			}
		}
	})
	return err
}

// shutdown stops everything but the guest port's descriptor, which a
// device may still be polling: the descriptor number must not be reused
// under it before its owner calls Close. Cancelling New's context does
// this much; the peer being gone, the device's writes then fail and its
// reads find nothing.
func (n *Network) shutdown() error {
	n.shutdownOnce.Do(func() {
		if n.stopAfter != nil {
			n.stopAfter()
		}
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.cancel()

		var errs []error
		for _, c := range n.closers {
			errs = append(errs, c())
		}
		n.stopSwitch()
		if n.dhcp != nil {
			errs = append(errs, n.dhcp.Underlying.Close())
		}
		if n.dnsUDP != nil {
			errs = append(errs, n.dnsUDP.Close())
		}
		if n.dnsTCP != nil {
			errs = append(errs, n.dnsTCP.Close())
		}
		if n.stack != nil {
			// Aborts every endpoint, which ends the forwarded
			// connections, then waits for the stack's workers.
			n.stack.Destroy()
		}
		n.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			n.shutdownErr = fmt.Errorf("usernet: close: %w", err)
		}
	})
	return n.shutdownErr
}

// stopSwitch ends the switch's reader. The switch checks its context
// between frames only, so after cancelling it the reader is woken with one
// harmless frame (to a unicast address nobody has, which the switch
// drops); it then returns without error and disconnects the port. If that
// frame cannot be sent, closing the socket ends the reader the hard way.
func (n *Network) stopSwitch() {
	if n.swDone == nil {
		return
	}
	n.swStop()
	wake := make([]byte, minFrame)
	wake[0] = 0x02 // locally administered unicast destination 02:00:00:00:00:00
	if _, err := unix.Write(n.devFd, wake); err != nil {
		n.swConn.Close()
	}
	<-n.swDone
}
