package vnet

import (
	"encoding/binary"
	"fmt"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// HdrLen is the size of struct virtio_net_hdr_v1 (virtio 1.2, section
// 5.1.6), which precedes every frame in both directions once VERSION_1 is
// negotiated (the only mode wisp offers).
const HdrLen = 12

// Frame size limits, Ethernet header included.
const (
	// minFrame is an Ethernet header; anything shorter is no frame.
	minFrame = 14
	// MaxFrameLen is the largest frame a driver may transmit: a 64 KiB
	// segmentation-offload packet and its Ethernet and VLAN headers.
	MaxFrameLen = 64<<10 + 14 + 4
)

// Header flags and GSO types (virtio 1.2, section 5.1.6).
const (
	hdrFNeedsCsum = 1
	hdrFDataValid = 2
	hdrFRscInfo   = 4

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoUDP   = 3
	gsoTCPv6 = 4
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

// netHdr is a decoded virtio_net_hdr_v1.
type netHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
	numBuffers uint16
}

func decodeHdr(b []byte) netHdr {
	return netHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.LittleEndian.Uint16(b[2:]),
		gsoSize:    binary.LittleEndian.Uint16(b[4:]),
		csumStart:  binary.LittleEndian.Uint16(b[6:]),
		csumOffset: binary.LittleEndian.Uint16(b[8:]),
		numBuffers: binary.LittleEndian.Uint16(b[10:]),
	}
}

func (h netHdr) encode(b []byte) {
	b[0] = h.flags
	b[1] = h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
	binary.LittleEndian.PutUint16(b[10:], h.numBuffers)
}

// offloads is what the negotiated features let each side do, made
// consistent: a segmentation offload counts only with the checksum offload
// it depends on (virtio 1.2, section 5.1.3.1), whatever a driver claimed.
type offloads struct {
	// Driver → device (transmit): may the driver leave checksums to us,
	// send TCP segmentation-offload packets, with ECN?
	txCsum, txTSO4, txTSO6, txECN bool
	// Device → driver (receive): the same, for what we hand the driver.
	rxCsum, rxTSO4, rxTSO6, rxECN bool
}

func offloadsFor(features uint64) offloads {
	has := func(f uint64) bool { return features&f != 0 }
	var o offloads
	o.txCsum = has(FeatureCsum)
	o.txTSO4 = o.txCsum && has(FeatureHostTSO4)
	o.txTSO6 = o.txCsum && has(FeatureHostTSO6)
	o.txECN = (o.txTSO4 || o.txTSO6) && has(FeatureHostECN)
	o.rxCsum = has(FeatureGuestCsum)
	o.rxTSO4 = o.rxCsum && has(FeatureGuestTSO4)
	o.rxTSO6 = o.rxCsum && has(FeatureGuestTSO6)
	o.rxECN = (o.rxTSO4 || o.rxTSO6) && has(FeatureGuestECN)
	return o
}

// tunFlags are the TUNSETOFFLOAD flags for the receive offloads: what a tap
// may hand us unfinished because the driver finishes it.
func (o offloads) tunFlags() uint {
	var f uint
	if o.rxCsum {
		f |= unix.TUN_F_CSUM
	}
	if o.rxTSO4 {
		f |= unix.TUN_F_TSO4
	}
	if o.rxTSO6 {
		f |= unix.TUN_F_TSO6
	}
	if o.rxECN {
		f |= unix.TUN_F_TSO_ECN
	}
	return f
}

// checkTx validates a header the driver wrote for a frame of frameLen
// bytes (virtio 1.2, section 5.1.6.2): only offloads it negotiated, a
// checksum location inside the frame, a segment size for segmentation.
// The kernel checks a tap's headers too, but a backend without headers
// relies on this alone, and every error here names the field.
func (h netHdr) checkTx(o offloads, frameLen int) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("transmit header: %s: %w", fmt.Sprintf(format, a...), virtio.ErrBadRequest)
	}
	if h.flags&^hdrFNeedsCsum != 0 {
		return bad("flags %#x: only NEEDS_CSUM is valid on transmit", h.flags)
	}
	if h.flags&hdrFNeedsCsum != 0 {
		if !o.txCsum {
			return bad("NEEDS_CSUM without the CSUM feature")
		}
		if int(h.csumStart)+int(h.csumOffset)+2 > frameLen {
			return bad("checksum at %d+%d outside the %d-byte frame", h.csumStart, h.csumOffset, frameLen)
		}
	}
	if int(h.hdrLen) > frameLen {
		return bad("hdr_len %d beyond the %d-byte frame", h.hdrLen, frameLen)
	}
	gso := h.gsoType &^ gsoECN
	if gso == gsoNone {
		if h.gsoType&gsoECN != 0 {
			return bad("ECN without a segmentation type")
		}
		return nil
	}
	switch {
	case gso == gsoTCPv4 && o.txTSO4, gso == gsoTCPv6 && o.txTSO6:
	default:
		return bad("gso_type %#x not negotiated", h.gsoType)
	}
	if h.gsoType&gsoECN != 0 && !o.txECN {
		return bad("ECN segmentation without the HOST_ECN feature")
	}
	if h.flags&hdrFNeedsCsum == 0 {
		return bad("segmentation without NEEDS_CSUM")
	}
	if h.gsoSize == 0 {
		return bad("segmentation with gso_size 0")
	}
	return nil
}

// fixRx makes the header a tap wrote acceptable to a driver with
// offloads o: a DATA_VALID hint is dropped if the driver did not negotiate
// GUEST_CSUM (the frame is complete either way), but a frame that still
// needs work the driver cannot do is refused (false). Such frames can be
// queued in a tap from before the driver renegotiated.
func (h *netHdr) fixRx(o offloads) bool {
	if !o.rxCsum {
		h.flags &^= hdrFDataValid
	}
	if h.flags&^(hdrFNeedsCsum|hdrFDataValid) != 0 {
		return false
	}
	if h.flags&hdrFNeedsCsum != 0 && !o.rxCsum {
		return false
	}
	switch h.gsoType &^ gsoECN {
	case gsoNone:
		return h.gsoType == gsoNone
	case gsoTCPv4:
		if !o.rxTSO4 {
			return false
		}
	case gsoTCPv6:
		if !o.rxTSO6 {
			return false
		}
	default:
		return false
	}
	return h.gsoType&gsoECN == 0 || o.rxECN
}
