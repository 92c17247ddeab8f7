package usernet

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrBadForward: a port-forward rule does not parse or does not fit the
// network.
var ErrBadForward = errors.New("usernet: invalid port forward")

// Forward exposes a guest port on the host, like QEMU's
// hostfwd=tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT.
type Forward struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Host is where the host listens. An invalid (zero) address listens on
	// every host address, as QEMU does; write 127.0.0.1 to keep the port
	// local. Port 0 takes any free port (see Network.ForwardAddrs).
	Host netip.AddrPort
	// Guest is where connections go. A zero address means the guest's
	// address (Options.GuestIP).
	Guest netip.AddrPort
}

// String gives the rule in QEMU's syntax.
func (f Forward) String() string {
	var host, guest string
	if f.Host.Addr().IsValid() {
		host = f.Host.Addr().String()
	}
	if f.Guest.Addr().IsValid() {
		guest = f.Guest.Addr().String()
	}
	return fmt.Sprintf("%s:%s:%d-%s:%d", f.Proto, host, f.Host.Port(), guest, f.Guest.Port())
}

// ParseForward parses QEMU's hostfwd syntax, with or without the
// "hostfwd=" prefix:
//
//	tcp::8080-:80            host port 8080 on all addresses to guest port 80
//	tcp:127.0.0.1:8080-:80   only on the host's loopback
//	udp::5353-10.0.2.15:53   to an explicit guest address
//	tcp:8080-:80             shorthand without the empty host address
//
// A missing protocol (":8080-:80") means tcp, as in QEMU. Addresses are
// IPv4.
func ParseForward(s string) (Forward, error) {
	fail := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("port forward %q: %s (want [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp:127.0.0.1:8080-:80): %w",
			s, why, ErrBadForward)
	}
	rule := strings.TrimPrefix(s, "hostfwd=")
	hostPart, guestPart, ok := strings.Cut(rule, "-")
	if !ok {
		return fail("no '-' between host and guest side")
	}
	proto, hostRest, ok := strings.Cut(hostPart, ":")
	if !ok {
		return fail("no ':' after the protocol")
	}
	switch proto {
	case "":
		proto = "tcp"
	case "tcp", "udp":
	default:
		return fail(fmt.Sprintf("protocol %q is neither tcp nor udp", proto))
	}
	hostAddr, hostPort, err := splitAddrPort(hostRest, true)
	if err != nil {
		return fail("host side: " + err.Error())
	}
	guestAddr, guestPort, err := splitAddrPort(guestPart, false)
	if err != nil {
		return fail("guest side: " + err.Error())
	}
	return Forward{
		Proto: proto,
		Host:  netip.AddrPortFrom(hostAddr, hostPort),
		Guest: netip.AddrPortFrom(guestAddr, guestPort),
	}, nil
}

// splitAddrPort parses "[ADDR:]PORT" or ":PORT"; the address may be empty.
func splitAddrPort(s string, portZeroOK bool) (netip.Addr, uint16, error) {
	var addr netip.Addr
	portStr := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		portStr = s[i+1:]
		if a := s[:i]; a != "" {
			var err error
			if addr, err = netip.ParseAddr(a); err != nil || !addr.Is4() {
				return netip.Addr{}, 0, fmt.Errorf("address %q is not an IPv4 address", a)
			}
		}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("port %q is not a number from 0 to 65535", portStr)
	}
	if port == 0 && !portZeroOK {
		return netip.Addr{}, 0, errors.New("port 0")
	}
	return addr, uint16(port), nil
}
