package machine

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
	"github.com/wisp-vmm/wisp/vmm/accel/probeguest"
	"github.com/wisp-vmm/wisp/vmm/kvmvm"
	"github.com/wisp-vmm/wisp/vmm/plane"
	"github.com/wisp-vmm/wisp/vmm/qemu"
	"github.com/wisp-vmm/wisp/vmm/qemu/vhostdevs"
)

// probeTimeout bounds the probe guest: on hardware KVM it takes
// milliseconds, so a guest that has not finished by then never will.
const probeTimeout = 5 * time.Second

// Prober runs the accelerator probe and remembers its result per KVM
// device, so a program that starts many VMs probes once.
type Prober struct {
	mu      sync.Mutex
	results map[string]accel.Result
}

// processProber is the Prober of Options whose Prober is nil: what the
// probe finds holds for the whole process.
var processProber = &Prober{}

// Probe returns the probe's verdict for kvmDevice, running it on first use.
func (p *Prober) Probe(ctx context.Context, kvmDevice string) accel.Result {
	if kvmDevice == "" {
		kvmDevice = vmm.DefaultKVM
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.results[kvmDevice]; ok {
		return r
	}
	r := Probe(ctx, kvmDevice)
	if ctx.Err() != nil {
		return r // cut short by the caller: not a verdict worth keeping
	}
	if p.results == nil {
		p.results = map[string]accel.Result{}
	}
	p.results[kvmDevice] = r
	return r
}

// Probe runs the accelerator probe without caching: host checks, then the
// probe guest on the KVM device.
func Probe(ctx context.Context, kvmDevice string) accel.Result {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return accel.Probe(ctx, accel.DefaultHost(kvmDevice), func(ctx context.Context, dev string) error {
		return kvmvm.RunProbe(ctx, dev, probeguest.Image())
	})
}

// chooseAccel picks the backend for cfg and says why when it falls back
// to TCG on its own.
func chooseAccel(ctx context.Context, cfg vmm.Config, p *Prober) (vmm.Accel, string) {
	if cfg.Accel != vmm.AccelAuto {
		return cfg.Accel, ""
	}
	if cfg.Boot == vmm.BootFirmware {
		return vmm.AccelTCG, "--boot firmware needs SeaBIOS, which wisp's KVM VMM does not have"
	}
	if p == nil {
		p = processProber
	}
	r := p.Probe(ctx, cfg.KVMDevice)
	chosen := r.Choose(cfg.Accel)
	if chosen == vmm.AccelTCG {
		return chosen, r.Reason
	}
	return chosen, ""
}

// newBackend builds the chosen backend over the plane's devices: wisp's own
// virtio-pci serves them under KVM, vhost-user under QEMU.
func newBackend(cfg vmm.Config, chosen vmm.Accel, opts Options, devs *plane.Plane, log *slog.Logger) (vmm.Backend, error) {
	switch chosen {
	case vmm.AccelKVM:
		return kvmvm.New(cfg, opts.Console, kvmvm.Options{
			Start:        opts.Start,
			Log:          lineLogger(log, "kvm"),
			OnBootMarker: opts.OnBootMarker,
			Virtio:       devs.Devices(),
		})
	default:
		return qemu.New(cfg, opts.Console, qemu.Options{
			Start:        opts.Start,
			RuntimeDir:   cfg.StateDir,
			OnBootMarker: opts.OnBootMarker,
			Devices: vhostdevs.Attach(devs.Devices(), vhostdevs.Options{
				OnError: func(err error) { log.Warn(err.Error(), "backend", "tcg") },
			}),
		})
	}
}

// lineLogger turns a backend's diagnostics, written a line at a time,
// into log records.
func lineLogger(log *slog.Logger, backend string) io.Writer {
	return logWriter{log: log.With("backend", backend)}
}

type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.log.Warn(strings.TrimPrefix(line, "wisp: "))
	}
	return len(p), nil
}
