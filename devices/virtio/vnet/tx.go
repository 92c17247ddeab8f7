package vnet

import (
	"errors"
	"fmt"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// transmitter serves the transmit queue; one goroutine uses it.
type transmitter struct {
	d    *Device
	off  offloads
	stop *virtio.EventFD
	iov  [][]byte // reused between frames
	hdr  [HdrLen]byte
}

// transmit sends one chain's frame. Chains carry nothing back, so it
// always reports 0 bytes written.
func (t *transmitter) transmit(c *virtio.Chain) (uint32, error) {
	iov, frameLen, err := txFrame(c, t.off, t.d.backend.HasVnetHdr(), &t.hdr, t.iov[:0])
	defer func() {
		clear(iov) // drop the references to guest memory
		t.iov = iov[:0]
	}()
	if err != nil {
		return 0, err
	}
	for {
		err := t.d.backend.WriteFrame(iov)
		if err == nil {
			t.d.stats.txFrames.Add(1)
			t.d.stats.txBytes.Add(uint64(frameLen))
			return 0, nil
		}
		if !errors.Is(err, unix.EAGAIN) {
			return 0, fmt.Errorf("transmit: %w", err)
		}
		// The backend is full (usernet's socket): wait for room, or
		// for the device to stop, which drops the frame.
		stopped, err := waitFd(t.d.backend.Fd(), unix.POLLOUT, t.stop)
		if err != nil {
			return 0, fmt.Errorf("transmit: %w", err)
		}
		if stopped {
			return 0, nil
		}
	}
}

// txFrame checks a transmit chain and lays out the iovecs that send it:
// with a header-carrying backend the checked copy of the header in hdr,
// then the frame's bytes straight from guest memory. It appends to iov
// and returns it with the frame's length (header excluded).
func txFrame(c *virtio.Chain, off offloads, vnetHdr bool, hdr *[HdrLen]byte, iov [][]byte) ([][]byte, int, error) {
	total := c.ReadableLen()
	if total < HdrLen+minFrame {
		return iov, 0, fmt.Errorf("transmit chain of %d bytes: shorter than the %d-byte header and an Ethernet header: %w",
			total, HdrLen, virtio.ErrBadRequest)
	}
	if total > HdrLen+MaxFrameLen {
		return iov, 0, fmt.Errorf("transmit chain of %d bytes: longer than the %d-byte header and a %d-byte frame: %w",
			total, HdrLen, MaxFrameLen, virtio.ErrBadRequest)
	}
	frameLen := int(total) - HdrLen
	r := c.Reader()
	if _, err := r.Read(hdr[:]); err != nil {
		return iov, 0, fmt.Errorf("transmit header: %w", err)
	}
	h := decodeHdr(hdr[:])
	if err := h.checkTx(off, frameLen); err != nil {
		return iov, 0, err
	}
	if !vnetHdr && (h.flags != 0 || h.gsoType != gsoNone) {
		// Activate offers no offload then; this is a second line.
		return iov, 0, fmt.Errorf("transmit header: offload requested, but the backend takes finished frames only: %w",
			virtio.ErrBadRequest)
	}
	if vnetHdr {
		h.numBuffers = 0 // receive-only field
		h.encode(hdr[:])
		iov = append(iov, hdr[:])
	}
	for _, s := range r.Segments() {
		if len(s) > 0 {
			iov = append(iov, s)
		}
	}
	if len(iov) > maxIovecs {
		return iov, 0, fmt.Errorf("transmit chain of %d buffers: more than %d: %w", len(iov), maxIovecs, virtio.ErrBadRequest)
	}
	return iov, frameLen, nil
}
