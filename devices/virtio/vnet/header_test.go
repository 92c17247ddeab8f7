package vnet

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := netHdr{flags: 1, gsoType: 0x81, hdrLen: 0x0203, gsoSize: 0x0405, csumStart: 0x0607, csumOffset: 0x0809, numBuffers: 0x0a0b}
	b := make([]byte, HdrLen)
	h.encode(b)
	assert.Equal(t, []byte{1, 0x81, 3, 2, 5, 4, 7, 6, 9, 8, 0xb, 0xa}, b, "little-endian virtio_net_hdr_v1")
	assert.Equal(t, h, decodeHdr(b))
}

func TestOffloadsFor(t *testing.T) {
	tests := []struct {
		features uint64
		want     offloads
		tun      uint
	}{
		{0, offloads{}, 0},
		{FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN, offloads{txCsum: true, txTSO4: true, txTSO6: true, txECN: true}, 0},
		{FeatureHostTSO4 | FeatureHostECN, offloads{}, 0},
		{FeatureCsum | FeatureHostECN, offloads{txCsum: true}, 0},
		{FeatureGuestCsum, offloads{rxCsum: true}, unix.TUN_F_CSUM},
		{FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN,
			offloads{rxCsum: true, rxTSO4: true, rxTSO6: true, rxECN: true},
			unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN},
		{FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN, offloads{}, 0},
		{FeatureGuestCsum | FeatureGuestECN, offloads{rxCsum: true}, unix.TUN_F_CSUM},
	}
	for _, tt := range tests {
		o := offloadsFor(tt.features)
		assert.Equal(t, tt.want, o, "%#x", tt.features)
		assert.Equal(t, tt.tun, o.tunFlags(), "%#x", tt.features)
	}
}

func TestCheckTx(t *testing.T) {
	all := offloadsFor(FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN)
	tso := netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16}
	with := func(h netHdr, f func(*netHdr)) netHdr { f(&h); return h }
	tests := []struct {
		name string
		h    netHdr
		off  offloads
		len  int
		ok   bool
	}{
		{"plain", netHdr{}, offloads{}, 60, true},
		{"num_buffers ignored", netHdr{numBuffers: 3}, offloads{}, 60, true},
		{"csum", netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6}, all, 60, true},
		{"csum ends at the last byte", netHdr{flags: hdrFNeedsCsum, csumStart: 50, csumOffset: 8}, all, 60, true},
		{"csum past the end", netHdr{flags: hdrFNeedsCsum, csumStart: 50, csumOffset: 9}, all, 60, false},
		{"csum at 65535+65535", netHdr{flags: hdrFNeedsCsum, csumStart: 0xffff, csumOffset: 0xffff}, all, MaxFrameLen, false},
		{"csum not negotiated", netHdr{flags: hdrFNeedsCsum}, offloads{}, 60, false},
		{"data valid", netHdr{flags: hdrFDataValid}, all, 60, false},
		{"rsc info", netHdr{flags: hdrFRscInfo}, all, 60, false},
		{"unknown flag", netHdr{flags: 0x80}, all, 60, false},
		{"hdr_len past the end", netHdr{hdrLen: 61}, all, 60, false},
		{"tso4", tso, all, 9000, true},
		{"tso4 ecn", with(tso, func(h *netHdr) { h.gsoType |= gsoECN }), all, 9000, true},
		{"tso6", with(tso, func(h *netHdr) { h.gsoType = gsoTCPv6 }), all, 9000, true},
		{"tso4 not negotiated", tso, offloadsFor(FeatureCsum | FeatureHostTSO6), 9000, false},
		{"ecn not negotiated", with(tso, func(h *netHdr) { h.gsoType |= gsoECN }), offloadsFor(FeatureCsum | FeatureHostTSO4), 9000, false},
		{"ecn alone", netHdr{gsoType: gsoECN}, all, 60, false},
		{"tso without csum flag", with(tso, func(h *netHdr) { h.flags = 0 }), all, 9000, false},
		{"tso with gso_size 0", with(tso, func(h *netHdr) { h.gsoSize = 0 }), all, 9000, false},
		{"ufo", with(tso, func(h *netHdr) { h.gsoType = gsoUDP }), all, 9000, false},
		{"uso", with(tso, func(h *netHdr) { h.gsoType = gsoUDPL4 }), all, 9000, false},
		{"unknown gso", with(tso, func(h *netHdr) { h.gsoType = 7 }), all, 9000, false},
	}
	for _, tt := range tests {
		err := tt.h.checkTx(tt.off, tt.len)
		if tt.ok {
			assert.NoError(t, err, tt.name)
		} else {
			assert.ErrorIs(t, err, virtio.ErrBadRequest, tt.name)
		}
	}
}

func TestTxFrameLayout(t *testing.T) {
	frame := ethFrame(100, 1)
	h := netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6, numBuffers: 9}
	c := &virtio.Chain{Readable: [][]byte{hdrBytes(h)[:5], append(hdrBytes(h)[5:], frame[:40]...), {}, frame[40:]}}
	var hdr [HdrLen]byte
	iov, n, err := txFrame(c, offloadsFor(FeatureCsum), true, &hdr, nil)
	require.NoError(t, err)
	assert.Equal(t, len(frame), n)
	require.Len(t, iov, 3, "the header copy, then the frame's two non-empty guest buffers")
	h.numBuffers = 0
	assert.Equal(t, hdrBytes(h), iov[0])
	assert.Equal(t, frame, bytes.Join(iov[1:], nil))

	_, _, err = txFrame(c, offloadsFor(FeatureCsum), false, &hdr, nil)
	assert.ErrorIs(t, err, virtio.ErrBadRequest, "a plain backend cannot finish a checksum")

	c.Readable[0] = make([]byte, 5)
	c.Readable[1] = append(make([]byte, HdrLen-5), frame[:40]...)
	iov, n, err = txFrame(c, offloads{}, false, &hdr, nil)
	require.NoError(t, err)
	assert.Equal(t, frame, bytes.Join(iov, nil), "no header for a plain backend")
	assert.Equal(t, len(frame), n)

	many := &virtio.Chain{Readable: [][]byte{hdrBytes(netHdr{})}}
	for range maxIovecs + 1 {
		many.Readable = append(many.Readable, []byte{0xff})
	}
	_, _, err = txFrame(many, offloads{}, false, &hdr, nil)
	assert.ErrorIs(t, err, virtio.ErrBadRequest, "more buffers than one writev takes")
}

// FuzzTxHeader feeds arbitrary transmit chains (header and frame bytes cut
// into up to three guest buffers) and negotiated features through the
// transmit parser: it must never panic, and whatever it accepts must be a
// frame of the chain's bytes behind a header that passes the checks.
func FuzzTxHeader(f *testing.F) {
	frame := ethFrame(60, 0)
	seed := func(h netHdr, frame []byte, cut1, cut2 uint16, features uint64, vnetHdr bool) {
		f.Add(append(hdrBytes(h), frame...), cut1, cut2, features, vnetHdr)
	}
	all := FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN
	seed(netHdr{}, frame, 12, 40, 0, false)
	seed(netHdr{}, frame, 3, 3, 0, true)
	seed(netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6}, frame, 12, 12, all, true)
	seed(netHdr{flags: hdrFNeedsCsum, csumStart: 0xffff, csumOffset: 0xffff}, frame, 0, 0, all, true)
	seed(netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4 | gsoECN, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16}, ethFrame(9000, 1), 12, 500, all, true)
	seed(netHdr{gsoType: gsoTCPv6, gsoSize: 1}, frame, 1, 2, all, true)
	seed(netHdr{flags: 0xff, gsoType: 0xff, hdrLen: 0xffff}, frame, 0, 0, ^uint64(0), true)
	seed(netHdr{}, nil, 0, 0, 0, false)
	seed(netHdr{}, frame[:13], 0, 0, 0, false)
	f.Add([]byte{}, uint16(0), uint16(0), uint64(0), false)
	f.Add(make([]byte, HdrLen+MaxFrameLen+1), uint16(100), uint16(200), all, true)

	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16, features uint64, vnetHdr bool) {
		a := min(int(cut1), len(data))
		b := min(max(int(cut2), a), len(data))
		c := &virtio.Chain{Readable: [][]byte{data[:a], data[a:b], data[b:]}}
		off := offloadsFor(features)
		var hdr [HdrLen]byte
		iov, n, err := txFrame(c, off, vnetHdr, &hdr, nil)
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrBadRequest)
			return
		}
		require.GreaterOrEqual(t, len(data), HdrLen+minFrame)
		require.LessOrEqual(t, len(data), HdrLen+MaxFrameLen)
		require.Equal(t, len(data)-HdrLen, n)
		h := decodeHdr(data)
		require.NoError(t, h.checkTx(off, n))
		got := bytes.Join(iov, nil)
		if vnetHdr {
			h.numBuffers = 0
			require.Equal(t, hdrBytes(h), got[:HdrLen])
			got = got[HdrLen:]
		} else {
			require.Zero(t, h.flags, "no offload gets through without negotiation")
		}
		require.Equal(t, data[HdrLen:], got)
	})
}
