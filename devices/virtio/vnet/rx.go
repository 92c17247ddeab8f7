package vnet

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// receiver moves frames from the backend into the receive queue; its run
// loop is the only goroutine using it.
//
// The split ring cannot give a buffer back once taken, so chains taken
// from the ring but not yet filled wait in held: with MRG_RXBUF a frame
// may need more buffers than the driver has posted so far, and without it
// a frame may not fit the next buffer (the frame is then dropped and the
// buffer kept for the next one). When the device stops, held chains go back
// to the driver empty (release), so a ring that outlives the stop — a
// vhost-user pause, resumed at NextAvail — loses no buffers; Linux drops
// an empty buffer as a short frame and posts a new one.
type receiver struct {
	d     *Device
	aq    virtio.ActiveQueue
	stop  *virtio.EventFD
	off   offloads
	mrg   bool
	onErr func(error)

	buf     []byte // header + frame being delivered
	n       int    // bytes of buf in use; 0: no frame pending
	held    []*virtio.Chain
	written []uint32 // per held chain, for the frame being delivered
	// unsignalled counts buffers completed since the last interrupt
	// decision.
	unsignalled int
}

func (r *receiver) run() {
	if err := r.loop(); err != nil {
		r.onErr(err)
		return
	}
	r.release()
}

// loop serves the queue until the device stops (nil) or the ring or
// backend fails for good.
func (r *receiver) loop() error {
	q := r.aq.Queue
	q.SetNotify(false) // kicks matter only once buffers run out
	for frames := 0; ; {
		if frames >= rxBatch {
			// A steady stream never waits; interrupt and look for
			// the stop signal between batches.
			frames = 0
			if err := r.signal(); err != nil {
				return err
			}
			if stopped, err := r.stopRequested(); err != nil || stopped {
				return err
			}
		}
		if r.n == 0 {
			more, err := r.readFrame()
			if err != nil {
				return err
			}
			frames++
			if !more {
				frames = 0
				if err := r.signal(); err != nil {
					return err
				}
				stopped, err := waitFd(r.d.backend.Fd(), unix.POLLIN, r.stop)
				if err != nil || stopped {
					return err
				}
			}
			continue
		}

		done, err := r.deliver()
		if err != nil {
			return err // the ring is broken: stop serving it
		}
		if done {
			continue
		}
		// Out of buffers: hand over what was filled, then wait for the
		// driver to post more. The pending frame waits in buf; the
		// backend queues (and in the end drops) the frames behind it.
		frames = 0
		if err := r.signal(); err != nil {
			return err
		}
		q.SetNotify(true)
		if q.HasAvailable() {
			q.SetNotify(false)
			continue
		}
		stopped, err := virtio.Wait(r.aq.Kick, r.stop)
		if err != nil || stopped {
			return err
		}
		q.SetNotify(false)
	}
}

// readFrame reads the next frame from the backend into buf, with a header
// in front. It reports false when no frame is ready: none is queued, or the
// one read was dropped because the driver cannot take it (the caller then
// polls, which also looks for the stop signal). An error means the backend
// failed for good.
func (r *receiver) readFrame() (bool, error) {
	b := r.d.backend
	var n int
	var err error
	if b.HasVnetHdr() {
		n, err = b.ReadFrame([][]byte{r.buf})
	} else {
		clear(r.buf[:HdrLen])
		n, err = b.ReadFrame([][]byte{r.buf[HdrLen:]})
		n += HdrLen
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false, nil
	case errors.Is(err, unix.EMSGSIZE), errors.Is(err, unix.EINVAL):
		r.d.stats.rxDropped.Add(1) // one bad frame, not a broken backend
		return false, nil
	case err != nil:
		return false, fmt.Errorf("receive: %w", err)
	}
	if n < HdrLen+minFrame || n > len(r.buf) {
		r.d.stats.rxDropped.Add(1)
		return false, nil
	}
	h := decodeHdr(r.buf)
	if !h.fixRx(r.off) {
		r.d.stats.rxDropped.Add(1)
		return false, nil
	}
	h.encode(r.buf)
	r.n = n
	return true, nil
}

// stopRequested looks at the stop signal without waiting.
func (r *receiver) stopRequested() (bool, error) {
	fds := []unix.PollFd{{Fd: int32(r.stop.Fd()), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("receive: poll stop signal: %w", err)
		}
		return n > 0, nil
	}
}

// deliver puts the pending frame into receive buffers. It returns false
// when the driver has not posted enough buffers yet (the frame stays
// pending), and an error only when the ring is broken.
func (r *receiver) deliver() (bool, error) {
	q := r.aq.Queue
	frame := r.buf[:r.n]
	need := uint64(len(frame))
	var capacity uint64
	count := 0
	for capacity < need {
		if count == len(r.held) {
			c, err := r.take()
			if err != nil {
				return false, err
			}
			if c == nil {
				return false, nil
			}
		}
		capacity += r.held[count].WritableLen()
		count++
		if !r.mrg || count >= int(q.Size()) {
			break
		}
	}
	if capacity < need {
		// Larger than one buffer (without MRG_RXBUF) or than every buffer
		// of the ring: no driver buffer will ever fit it. Keep the
		// buffers for the next frame.
		r.d.stats.rxDropped.Add(1)
		r.n = 0
		return true, nil
	}

	binary.LittleEndian.PutUint16(frame[10:], uint16(count)) // num_buffers
	r.written = r.written[:0]
	rest := frame
	for _, c := range r.held[:count] {
		n, _ := c.Writer().Write(rest) // io.ErrShortWrite: the frame goes on in the next buffer
		rest = rest[n:]
		r.written = append(r.written, uint32(n))
	}
	for i, c := range r.held[:count] {
		if err := q.Complete(c, r.written[i]); err != nil {
			return false, fmt.Errorf("receive: %w", err)
		}
	}
	r.unsignalled += count
	n := copy(r.held, r.held[count:])
	clear(r.held[n:])
	r.held = r.held[:n]

	r.d.stats.rxFrames.Add(1)
	r.d.stats.rxBytes.Add(uint64(len(frame) - HdrLen))
	r.n = 0
	return true, nil
}

// take moves the next usable chain from the ring to held; nil if the ring
// is empty. Chains the device cannot use (malformed, nothing writable,
// smaller than the header with MRG_RXBUF, which the spec forbids, or than
// any frame without it) go back to the driver empty, and the error is
// reported.
func (r *receiver) take() (*virtio.Chain, error) {
	q := r.aq.Queue
	for {
		c, err := q.Next()
		if c == nil {
			if err != nil {
				return nil, fmt.Errorf("receive: %w", err)
			}
			return nil, nil
		}
		if err == nil {
			switch size := c.WritableLen(); {
			case size == 0:
				err = fmt.Errorf("receive buffer %d has no writable part: %w", c.Head, virtio.ErrBadRequest)
			case r.mrg && size < HdrLen:
				err = fmt.Errorf("receive buffer %d of %d bytes: smaller than the header: %w", c.Head, size, virtio.ErrBadRequest)
			case !r.mrg && size < HdrLen+minFrame:
				err = fmt.Errorf("receive buffer %d of %d bytes: too small for any frame: %w", c.Head, size, virtio.ErrBadRequest)
			}
		}
		if err != nil {
			r.onErr(fmt.Errorf("receive: %w", err))
			if err := q.Complete(c, 0); err != nil {
				return nil, fmt.Errorf("receive: %w", err)
			}
			r.unsignalled++
			continue
		}
		r.held = append(r.held, c)
		return c, nil
	}
}

// release gives the held chains back empty and drops the pending frame;
// the device is stopping, so the driver is not interrupted.
func (r *receiver) release() {
	for _, c := range r.held {
		if err := r.aq.Queue.Complete(c, 0); err != nil {
			r.onErr(fmt.Errorf("receive: %w", err))
			break
		}
	}
	clear(r.held)
	r.held = r.held[:0]
	if r.n != 0 {
		r.d.stats.rxDropped.Add(1)
		r.n = 0
	}
}

// signal interrupts the driver for the buffers completed since the last
// call, if it wants to hear about them.
func (r *receiver) signal() error {
	if r.unsignalled == 0 {
		return nil
	}
	r.unsignalled = 0
	if r.aq.Queue.NeedsInterrupt() && r.aq.Interrupt != nil {
		if err := r.aq.Interrupt.Trigger(); err != nil {
			return fmt.Errorf("receive: interrupt: %w", err)
		}
	}
	return nil
}
