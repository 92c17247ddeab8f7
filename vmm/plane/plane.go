// Package plane builds a VM's virtio devices from its Config: it opens and
// locks the disk images, creates the taps or the user-mode network, and
// hands the devices to whichever backend runs the VM (virtio-pci inside
// wisp's KVM VMM, vhost-user for QEMU). Closing the plane releases all of
// it: images unlocked, taps deleted, the user network stopped.
package plane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/devices/virtio/blk/qcow2"
	"github.com/wisp-vmm/wisp/devices/virtio/rng"
	"github.com/wisp-vmm/wisp/devices/virtio/vnet"
	"github.com/wisp-vmm/wisp/internal/ratelog"
	"github.com/wisp-vmm/wisp/net/tap"
	"github.com/wisp-vmm/wisp/net/usernet"
	"github.com/wisp-vmm/wisp/vmm"
)

// Plane is the set of virtio devices of one VM, in guest order: disks,
// then NICs, then the RNG.
type Plane struct {
	devices []virtio.Device
	// Taps are the names of the taps the plane uses, in --net order.
	Taps []string
}

// Open builds the devices of cfg. On error nothing stays open. log gets
// device errors as they happen (a guest's malformed request, a host I/O
// error), a few per device a minute and then a ratelog.Suppressed count,
// since a guest can repeat a bad request without end; it may be nil.
func Open(ctx context.Context, cfg vmm.Config, log func(dev string, err error)) (*Plane, error) {
	if log == nil {
		log = func(string, error) {}
	}
	log = ratelog.Errors(ratelog.New[string](ratelog.Config{}), log)
	p := &Plane{}
	if err := p.open(ctx, cfg, log); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Plane) open(ctx context.Context, cfg vmm.Config, log func(dev string, err error)) error {
	for _, d := range cfg.Disks {
		name := fmt.Sprintf("disk %s", d.Path)
		dev, err := blk.Open(blk.Options{
			Path:       d.Path,
			ReadOnly:   d.ReadOnly,
			Serial:     d.Serial,
			Format:     d.Format,
			Backing:    d.Backing,
			BackingDir: d.BackingDir,
			// The throw-away overlay of a qcow2 disk lives with the VM's
			// other run-time files (empty: os.TempDir()).
			OverlayDir: cfg.StateDir,
			OnError:    func(q int, err error) { log(name, err) },
		})
		if err != nil {
			if errors.Is(err, blk.ErrLocked) || errors.Is(err, blk.ErrFormatMismatch) || errors.Is(err, blk.ErrFormat) ||
				errors.Is(err, blk.ErrBackingOff) || errors.Is(err, blk.ErrBackingOutside) || errors.Is(err, blk.ErrBackingNotFile) ||
				errors.Is(err, qcow2.ErrBackingFormat) || errors.Is(err, blk.ErrOverlaySpace) {
				return vmm.Invalidf("%v", err)
			}
			return fmt.Errorf("--disk %s: %w", d.Path, err)
		}
		p.devices = append(p.devices, dev)
	}
	for _, n := range cfg.Nets {
		backend, err := p.openNet(ctx, n)
		if err != nil {
			return err
		}
		dev, err := vnet.New(backend, n.MAC)
		if err != nil {
			_ = backend.Close()
			return fmt.Errorf("--net %s: %w", n.Mode, err)
		}
		p.devices = append(p.devices, dev)
	}
	if cfg.RNG {
		p.devices = append(p.devices, rng.New())
	}
	return nil
}

func (p *Plane) openNet(ctx context.Context, n vmm.Net) (vnet.Backend, error) {
	switch n.Mode {
	case vmm.NetTap:
		t, err := tap.Create(tap.Options{Name: n.Tap, Bridge: n.Bridge, VnetHdr: true})
		if err != nil {
			return nil, fmt.Errorf("--net tap: %w", err)
		}
		p.Taps = append(p.Taps, t.Name())
		return t, nil
	case vmm.NetUser:
		var fwds []usernet.Forward
		for _, f := range n.Forwards {
			host := netip.AddrFrom4([4]byte{127, 0, 0, 1})
			if f.HostAddr != "" {
				a, err := netip.ParseAddr(f.HostAddr)
				if err != nil {
					return nil, vmm.Invalidf("--net user: hostfwd %s: %v", f, err)
				}
				host = a
			}
			fwds = append(fwds, usernet.Forward{
				Proto: f.Proto,
				Host:  netip.AddrPortFrom(host, f.HostPort),
				Guest: netip.AddrPortFrom(netip.Addr{}, f.GuestPort),
			})
		}
		u, err := usernet.New(ctx, usernet.Options{GuestMAC: n.MAC, Forwards: fwds})
		if err != nil {
			return nil, fmt.Errorf("--net user: %w", err)
		}
		return u, nil
	}
	return nil, vmm.Invalidf("--net: unknown mode %q", n.Mode)
}

// Devices are the VM's virtio devices in guest order.
func (p *Plane) Devices() []virtio.Device { return append([]virtio.Device(nil), p.devices...) }

// NetBytes is what the VM's NICs moved so far, received and sent, as
// seen from the guest (the meter a cost per GB reads).
func (p *Plane) NetBytes() (rx, tx uint64) {
	for _, d := range p.devices {
		if n, ok := d.(*vnet.Device); ok {
			st := n.Stats()
			rx += st.RxBytes
			tx += st.TxBytes
		}
	}
	return rx, tx
}

// Close closes every device (resetting it first); each device owns its
// backend (image file, tap, user network) and releases it.
func (p *Plane) Close() error {
	var errs []error
	for _, d := range p.devices {
		errs = append(errs, d.Close())
	}
	p.devices = nil
	return errors.Join(errs...)
}
