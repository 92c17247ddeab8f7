package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/wisp-vmm/wisp/devices/virtio"
	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
	"github.com/wisp-vmm/wisp/vmm/kvmvm"
	"github.com/wisp-vmm/wisp/vmm/qemu"
	"github.com/wisp-vmm/wisp/vmm/qemu/vhostdevs"
)

// probeTimeout bounds the probe guest: on hardware KVM it takes
// milliseconds, so a guest that has not finished by then never will.
const probeTimeout = 5 * time.Second

// probeKVM runs the accelerator probe: host checks, then the probe guest.
func probeKVM(ctx context.Context, kvmDevice string) accel.Result {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return accel.Probe(ctx, accel.DefaultHost(kvmDevice), func(ctx context.Context, dev string) error {
		return kvmvm.RunProbe(ctx, dev, probe.Image())
	})
}

// newBackend picks and builds the backend for cfg. With --accel auto it
// probes the host and says on stderr why it falls back to TCG. devs are the
// VM's virtio devices: wisp's own virtio-pci serves them under KVM,
// vhost-user under QEMU.
func newBackend(ctx context.Context, cfg vmm.Config, con vmm.Console, devs []virtio.Device, stderr io.Writer, start time.Time) (vmm.Backend, error) {
	chosen := cfg.Accel
	if chosen == vmm.AccelAuto && cfg.Boot == vmm.BootFirmware {
		chosen = vmm.AccelTCG
		fmt.Fprintln(stderr, "wisp: using QEMU TCG: --boot firmware needs SeaBIOS, which wisp's KVM VMM does not have")
	}
	if chosen == vmm.AccelAuto {
		r := probeKVM(ctx, cfg.KVMDevice)
		chosen = r.Choose(cfg.Accel)
		if chosen == vmm.AccelTCG {
			fmt.Fprintf(stderr, "wisp: using QEMU TCG: %s\n", r.Reason)
		}
	}
	switch chosen {
	case vmm.AccelKVM:
		return kvmvm.New(cfg, con, kvmvm.Options{Start: start, Log: stderr, OnBootMarker: bootMarkerLogger(stderr), Virtio: devs})
	default:
		return qemu.New(cfg, con, qemu.Options{Start: start, OnBootMarker: bootMarkerLogger(stderr),
			Devices: vhostdevs.Attach(devs, vhostdevs.Options{OnError: func(err error) { fmt.Fprintf(stderr, "wisp: %v\n", err) }})})
	}
}
