// Package rng is wisp's virtio entropy device (virtio 1.2, section 5.4):
// one queue whose writable buffers the device fills from the host's
// crypto/rand (getrandom).
package rng

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// QueueSize is the request queue's maximum size.
const QueueSize = 256

// maxPerRequest bounds the bytes one request gets. The spec lets the device
// fill less than offered (the used length says how much), and a hostile
// driver must not make one request stall the queue on megabytes of
// randomness; Linux asks for at most a page at a time.
const maxPerRequest = 64 << 10

// Errors; test with errors.Is.
var (
	ErrClosed = errors.New("virtio-rng: device closed")
	ErrActive = errors.New("virtio-rng: device already active")
)

// Device is a virtio-rng device. It implements virtio.Device.
type Device struct {
	mu      sync.Mutex
	workers *virtio.Workers
	closed  bool
}

var _ virtio.Device = (*Device)(nil)

// New returns an entropy device.
func New() *Device { return &Device{} }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRNG }

// Features implements virtio.Device: the device has no feature bits of
// its own.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx
}

// QueueSizes implements virtio.Device: one request queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device; virtio-rng has no configuration
// space, so only empty accesses at offset 0 succeed.
func (d *Device) ReadConfig(offset uint64, data []byte) error {
	if offset != 0 || len(data) != 0 {
		return fmt.Errorf("virtio-rng config read [%#x, +%d): no config space: %w", offset, len(data), virtio.ErrBadConfig)
	}
	return nil
}

// WriteConfig implements virtio.Device; see ReadConfig.
func (d *Device) WriteConfig(offset uint64, data []byte) error {
	if offset != 0 || len(data) != 0 {
		return fmt.Errorf("virtio-rng config write [%#x, +%d): no config space: %w", offset, len(data), virtio.ErrBadConfig)
	}
	return nil
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.workers != nil {
		return ErrActive
	}
	if len(a.Queues) > 1 {
		return fmt.Errorf("virtio-rng: activation with %d queues, device has 1", len(a.Queues))
	}
	w, err := virtio.NewWorkers(nil)
	if err != nil {
		return fmt.Errorf("virtio-rng: activate: %w", err)
	}
	if len(a.Queues) == 1 && a.Queues[0].Queue != nil {
		if a.Queues[0].Kick == nil {
			_ = w.Stop()
			return errors.New("virtio-rng: queue 0 has no kick eventfd")
		}
		w.Serve(0, a.Queues[0], fill)
	}
	d.workers = w
	return nil
}

// fill writes random bytes straight into the chain's writable buffers;
// readable buffers (which a driver must not send) are ignored.
func fill(c *virtio.Chain) (uint32, error) {
	left := uint64(maxPerRequest)
	var n uint64
	for _, b := range c.Writable {
		if left == 0 {
			break
		}
		b = b[:min(uint64(len(b)), left)]
		// crypto/rand.Read never fails (it aborts the process if the
		// kernel cannot supply randomness).
		_, _ = rand.Read(b)
		n += uint64(len(b))
		left -= uint64(len(b))
	}
	return uint32(n), nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopLocked()
}

func (d *Device) stopLocked() error {
	if d.workers == nil {
		return nil
	}
	err := d.workers.Stop()
	d.workers = nil
	if err != nil {
		return fmt.Errorf("virtio-rng: stop workers: %w", err)
	}
	return nil
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return d.stopLocked()
}
