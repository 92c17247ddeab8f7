package usernet

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseForward(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		in   string
		want Forward
		err  bool
	}{
		{in: "tcp::8080-:80", want: Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.Addr{}, 8080), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "hostfwd=tcp::8080-:80", want: Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.Addr{}, 8080), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "tcp:8080-:80", want: Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.Addr{}, 8080), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "tcp:127.0.0.1:8080-:80", want: Forward{Proto: "tcp", Host: ap("127.0.0.1:8080"), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "udp::5353-10.0.2.15:53", want: Forward{Proto: "udp", Host: netip.AddrPortFrom(netip.Addr{}, 5353), Guest: ap("10.0.2.15:53")}},
		{in: ":2222-:22", want: Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.Addr{}, 2222), Guest: netip.AddrPortFrom(netip.Addr{}, 22)}},
		{in: "tcp:127.0.0.1:0-:80", want: Forward{Proto: "tcp", Host: ap("127.0.0.1:0"), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "tcp:8080-80", want: Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.Addr{}, 8080), Guest: netip.AddrPortFrom(netip.Addr{}, 80)}},
		{in: "sctp::1-:1", err: true},
		{in: "tcp::8080", err: true},
		{in: "8080-80", err: true},
		{in: "tcp::70000-:80", err: true},
		{in: "tcp::8080-:0", err: true},
		{in: "tcp::8080-:", err: true},
		{in: "tcp:localhost:8080-:80", err: true},
		{in: "tcp:[::1]:8080-:80", err: true},
		{in: "tcp:::1:8080-:80", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := ParseForward(tt.in)
		if tt.err {
			assert.ErrorIs(t, err, ErrBadForward, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
}

func TestForwardString(t *testing.T) {
	for _, s := range []string{"tcp::8080-:80", "tcp:127.0.0.1:8080-:80", "udp::5353-10.0.2.15:53"} {
		f, err := ParseForward(s)
		require.NoError(t, err)
		assert.Equal(t, s, f.String())
	}
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, "10.0.2.0/24", o.Subnet.String())
	assert.Equal(t, "10.0.2.2", o.Gateway.String())
	assert.Equal(t, "10.0.2.15", o.GuestIP.String())
	assert.Equal(t, DefaultGuestMAC, o.GuestMAC.String())
	assert.Equal(t, 1500, o.MTU)

	o, err = Options{Subnet: netip.MustParsePrefix("192.168.7.9/29")}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, "192.168.7.8/29", o.Subnet.String())
	assert.Equal(t, "192.168.7.10", o.Gateway.String())
	assert.Equal(t, "192.168.7.11", o.GuestIP.String(), ".15 is the broadcast address of a /29")

	f, err := ParseForward("tcp::8080-:80")
	require.NoError(t, err)
	o, err = Options{Forwards: []Forward{f}}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, "10.0.2.15:80", o.Forwards[0].Guest.String(), "guest address defaults to GuestIP")
}

func TestOptionsInvalid(t *testing.T) {
	bad := []Options{
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Subnet: netip.MustParsePrefix("10.0.0.0/30")},
		{Gateway: netip.MustParseAddr("10.0.3.2")},
		{GuestIP: netip.MustParseAddr("10.0.2.2")},
		{GuestIP: netip.MustParseAddr("10.0.2.255")},
		{GuestMAC: []byte{1, 2, 3, 4, 5, 6}}, // multicast
		{GuestMAC: []byte{2, 2, 3}},
		{MTU: 100},
	}
	for _, o := range bad {
		_, err := o.withDefaults()
		assert.ErrorIs(t, err, ErrBadOptions, "%+v", o)
	}
	badFwd := []Forward{
		{Proto: "icmp", Guest: netip.MustParseAddrPort("10.0.2.15:80")},
		{Proto: "tcp", Guest: netip.MustParseAddrPort("10.0.3.15:80")},
		{Proto: "tcp", Guest: netip.MustParseAddrPort("10.0.2.2:80")},
		{Proto: "tcp", Host: netip.MustParseAddrPort("[::1]:80"), Guest: netip.MustParseAddrPort("10.0.2.15:80")},
	}
	for _, f := range badFwd {
		_, err := Options{Forwards: []Forward{f}}.withDefaults()
		assert.ErrorIs(t, err, ErrBadForward, "%+v", f)
	}
}
