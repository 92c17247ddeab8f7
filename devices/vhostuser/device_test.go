package vhostuser

import (
	"fmt"
	"sync"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// patternDevice is a tiny rng-like device for the tests: one queue whose
// writable buffers it fills with a repeating pattern, and a config space
// of four bytes. It records how it was activated.
type patternDevice struct {
	pattern []byte
	sizes   []uint16

	mu          sync.Mutex
	config      [4]byte
	workers     *virtio.Workers
	activations []virtio.Activation
	resets      int
	errs        []error
}

func newPatternDevice(pattern string) *patternDevice {
	return &patternDevice{pattern: []byte(pattern), sizes: []uint16{8}, config: [4]byte{'w', 'i', 's', 'p'}}
}

func (d *patternDevice) Type() virtio.DeviceType { return virtio.TypeRNG }

func (d *patternDevice) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc
}

func (d *patternDevice) QueueSizes() []uint16 { return d.sizes }

func (d *patternDevice) ReadConfig(off uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off > uint64(len(d.config)) || uint64(len(data)) > uint64(len(d.config))-off {
		return fmt.Errorf("config [%d, +%d): %w", off, len(data), virtio.ErrBadConfig)
	}
	copy(data, d.config[off:])
	return nil
}

func (d *patternDevice) WriteConfig(off uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off > uint64(len(d.config)) || uint64(len(data)) > uint64(len(d.config))-off {
		return fmt.Errorf("config [%d, +%d): %w", off, len(data), virtio.ErrBadConfig)
	}
	copy(d.config[off:], data)
	return nil
}

func (d *patternDevice) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workers != nil {
		return fmt.Errorf("activate: already active")
	}
	w, err := virtio.NewWorkers(func(_ int, err error) {
		d.mu.Lock()
		d.errs = append(d.errs, err)
		d.mu.Unlock()
	})
	if err != nil {
		return err
	}
	d.workers = w
	d.activations = append(d.activations, a)
	for i, aq := range a.Queues {
		if aq.Queue == nil {
			continue
		}
		w.Serve(i, aq, d.fill)
	}
	return nil
}

func (d *patternDevice) fill(c *virtio.Chain) (uint32, error) {
	w := c.Writer()
	for w.Remaining() > 0 {
		n := min(w.Remaining(), uint64(len(d.pattern)))
		if _, err := w.Write(d.pattern[:n]); err != nil {
			return uint32(w.Written()), err
		}
	}
	return uint32(w.Written()), nil
}

func (d *patternDevice) Reset() error {
	d.mu.Lock()
	w := d.workers
	d.workers = nil
	if w != nil {
		d.resets++
	}
	d.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.Stop()
}

func (d *patternDevice) Close() error { return d.Reset() }

// state returns how often the device was activated and reset, and whether
// it runs now.
func (d *patternDevice) state() (activations, resets int, active bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.activations), d.resets, d.workers != nil
}

func (d *patternDevice) lastActivation() virtio.Activation {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.activations[len(d.activations)-1]
}
