package usernet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/services/forwarder"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpIdle ends a UDP flow (and its host socket) after this long without
// traffic, as a NAT's connection tracking does.
const udpIdle = 90 * time.Second

// outbound decides where a guest connection to dst goes on the host:
// the gateway stands for the host's loopback (QEMU's 10.0.2.2); the rest of
// the virtual subnet does not exist outside, so it is refused rather than
// dialled on whatever network the host has; so are link-local (cloud
// metadata services), loopback, multicast and broadcast addresses.
func (n *Network) outbound(dst tcpip.Address) (netip.Addr, bool) {
	if dst.Len() != 4 {
		return netip.Addr{}, false
	}
	a := netip.AddrFrom4(dst.As4())
	switch {
	case a == n.opts.Gateway:
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), true
	case n.opts.Subnet.Contains(a), a.IsLinkLocalUnicast(), a.IsLoopback(), a.IsMulticast(),
		a.IsUnspecified(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, false
	}
	return a, true
}

// forwardTCP serves a guest's TCP connection attempt (gVisor calls it on a
// goroutine of its own for each new SYN): it dials the destination from
// the host and, if that works, accepts the guest's connection and relays.
// A refused or failed dial resets the guest's connection.
func (n *Network) forwardTCP(r *tcp.ForwarderRequest) {
	if !n.begin() {
		r.Complete(true)
		return
	}
	defer n.wg.Done()
	id := r.ID()
	dst, ok := n.outbound(id.LocalAddress)
	if !ok {
		r.Complete(true)
		return
	}
	var d net.Dialer
	out, err := d.DialContext(n.ctx, "tcp", netip.AddrPortFrom(dst, id.LocalPort).String())
	if err != nil {
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		out.Close()
		return
	}
	relay(gonet.NewTCPConn(&wq, ep), out.(*net.TCPConn))
}

// forwardUDP serves the first datagram of a new guest UDP flow (gVisor
// calls it synchronously, so it must not block): a proxy relays the flow
// to a host socket until it is idle for udpIdle.
func (n *Network) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst, ok := n.outbound(id.LocalAddress)
	if !ok {
		return
	}
	if !n.begin() {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		n.wg.Done()
		return
	}
	target := netip.AddrPortFrom(dst, id.LocalPort).String()
	p, err := forwarder.NewUDPProxy(&idleUDPConn{gonet.NewUDPConn(&wq, ep)}, func() (net.Conn, error) {
		return net.Dial("udp", target)
	})
	if err != nil {
		ep.Close()
		n.wg.Done()
		return
	}
	go func() {
		defer n.wg.Done()
		p.Run()   // returns when the flow is idle or the stack closes
		p.Close() // ends the proxy's host sockets and their readers
	}()
}

// idleUDPConn makes a guest-side UDP flow end after udpIdle without
// traffic.
type idleUDPConn struct{ *gonet.UDPConn }

func (c *idleUDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	_ = c.SetReadDeadline(time.Now().Add(udpIdle))
	return c.UDPConn.ReadFrom(b)
}

func (c *idleUDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(udpIdle))
	return c.UDPConn.WriteTo(b, addr)
}

// startForward listens on the host for one port forward.
func (n *Network) startForward(f Forward) error {
	host := f.Host.String()
	if !f.Host.Addr().IsValid() {
		host = ":" + strconv.Itoa(int(f.Host.Port()))
	}
	guest := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(f.Guest.Addr().As4()), Port: f.Guest.Port()}
	switch f.Proto {
	case "tcp":
		ln, err := net.Listen("tcp4", host)
		if err != nil {
			return fmt.Errorf("usernet: forward %s: %w", f, err)
		}
		n.fwdAddr = append(n.fwdAddr, ln.Addr())
		n.closers = append(n.closers, ln.Close)
		n.run(func() { n.acceptForward(ln, guest) })
	case "udp":
		addr, err := net.ResolveUDPAddr("udp4", host)
		if err != nil {
			return fmt.Errorf("usernet: forward %s: %w", f, err)
		}
		ln, err := net.ListenUDP("udp4", addr)
		if err != nil {
			return fmt.Errorf("usernet: forward %s: %w", f, err)
		}
		p, err := forwarder.NewUDPProxy(ln, func() (net.Conn, error) {
			return gonet.DialUDP(n.stack, nil, &guest, ipv4.ProtocolNumber)
		})
		if err != nil {
			ln.Close()
			return fmt.Errorf("usernet: forward %s: %w", f, err)
		}
		n.fwdAddr = append(n.fwdAddr, ln.LocalAddr())
		n.closers = append(n.closers, p.Close)
		n.run(p.Run)
	default:
		return fmt.Errorf("usernet: forward %s: %w", f, ErrBadForward)
	}
	return nil
}

// acceptForward accepts host connections for a TCP forward and relays each
// to the guest. It returns when the listener is closed.
func (n *Network) acceptForward(ln net.Listener, guest tcpip.FullAddress) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond) // e.g. EMFILE: let connections end, then retry
			continue
		}
		if !n.run(func() {
			g, err := gonet.DialContextTCP(n.ctx, n.stack, guest, ipv4.ProtocolNumber)
			if err != nil {
				c.Close() // the guest refused or is not there
				return
			}
			relay(g, c.(*net.TCPConn))
		}) {
			c.Close()
			return
		}
	}
}

// halfCloser is a connection that can end one direction.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// relay copies both ways between a guest and a host connection, passing a
// half-close on, and closes both when both directions are done or either
// fails. Closing the network aborts the guest side, which ends the relay.
func relay(guest *gonet.TCPConn, host *net.TCPConn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			guest.Close()
			host.Close()
		})
	}
	var wg sync.WaitGroup
	pipe := func(dst halfCloser, src net.Conn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			closeBoth()
			return
		}
		if dst.CloseWrite() != nil {
			closeBoth()
		}
	}
	wg.Add(2)
	go pipe(guest, host)
	pipe(host, guest)
	wg.Wait()
	closeBoth()
}
