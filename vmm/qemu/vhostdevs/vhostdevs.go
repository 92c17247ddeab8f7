// Package vhostdevs attaches wisp's virtio devices to the TCG backend: each
// device is served by a vhost-user server (devices/vhostuser) on a unix
// socket in the VM's runtime directory, and QEMU gets the matching
// vhost-user front end on its command line.
//
//	backend, err := qemu.New(cfg, console, qemu.Options{
//		Devices: vhostdevs.Attach([]virtio.Device{disk, rng}, vhostdevs.Options{}),
//	})
//
// The servers stop, and their sockets go, when the VM ends. The devices
// are reset then but not closed: the caller owns them.
package vhostdevs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"

	"github.com/wisp-vmm/wisp/devices/vhostuser"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/vmm/qemu"
)

// ErrUnsupported: a device QEMU has no vhost-user front end for, or one
// whose queues QEMU's front end cannot use.
var ErrUnsupported = errors.New("device cannot be attached over vhost-user")

// Options tunes how the devices are served.
type Options struct {
	// OnError receives the servers' errors (see vhostuser.Options.OnError),
	// each naming the device's id ("vhost-user blk0: ..."). It may be
	// called from several goroutines at once; nil drops the errors.
	OnError func(error)
	// Trace, if set, receives every vhost-user message handled, as
	// "id: line". It may be called from several goroutines at once.
	Trace func(line string)
}

// virtio-net feature bit and config layout needed to name the guest's
// MAC address on QEMU's command line (virtio 1.2, section 5.1).
const (
	netFeatureMAC = 1 << 5
	netConfigMAC  = 0
	// QEMU's virtio-net-pci takes ring sizes from 256 (its minimum and
	// default) to 1024.
	netMinQueueSize = 256
	netMaxQueueSize = 1024
	// vhost-user-blk-pci's largest queue-size.
	blkMaxQueueSize = 1024
	// QEMU's vhost-user-rng-pci uses one ring of 4 entries.
	rngQueueSize = 4
	// maxSocketPath is the longest path a unix socket address holds.
	maxSocketPath = 107
)

// Attach returns the qemu.DeviceFunc that serves devs to QEMU over
// vhost-user, on QEMU's PCI bus in the order given: QEMU places them in
// consecutive slots and the guest probes slots in order, so the first
// block device is the guest's /dev/vda and the first net device its eth0.
func Attach(devs []virtio.Device, o Options) qemu.DeviceFunc {
	return func(runtimeDir string) ([]qemu.Device, error) {
		var out []qemu.Device
		fail := func(err error) ([]qemu.Device, error) {
			for _, d := range out {
				_ = d.Close()
			}
			return nil, err
		}
		counts := map[virtio.DeviceType]int{}
		for i, dev := range devs {
			id := fmt.Sprintf("%s%d", shortName(dev.Type()), counts[dev.Type()])
			counts[dev.Type()]++
			args, err := frontEnd(dev, id)
			if err != nil {
				return fail(fmt.Errorf("device %d (%s): %w", i, id, err))
			}
			sock := filepath.Join(runtimeDir, id+".sock")
			closeFn, err := serve(dev, id, sock, o)
			if err != nil {
				return fail(fmt.Errorf("device %d (%s): %w", i, id, err))
			}
			args.Close = closeFn
			args.Chardev = fmt.Sprintf("socket,id=%s,path=%s", chardevID(id), qemu.EscapeOpt(sock))
			out = append(out, args)
		}
		return out, nil
	}
}

func shortName(t virtio.DeviceType) string {
	switch t {
	case virtio.TypeBlock:
		return "blk"
	case virtio.TypeNet:
		return "net"
	case virtio.TypeRNG:
		return "rng"
	}
	return fmt.Sprintf("dev%d-", t)
}

func chardevID(id string) string { return "wisp" + id }

// frontEnd renders the QEMU device (and netdev) for dev, without the
// chardev.
func frontEnd(dev virtio.Device, id string) (qemu.Device, error) {
	sizes := dev.QueueSizes()
	if len(sizes) == 0 {
		return qemu.Device{}, fmt.Errorf("%v device without queues: %w", dev.Type(), ErrUnsupported)
	}
	smallest := sizes[0]
	for _, s := range sizes {
		smallest = min(smallest, s)
	}
	chr := chardevID(id)
	switch dev.Type() {
	case virtio.TypeBlock:
		// Every ring gets the same size: the largest power of two all
		// queues take, as QEMU's default of 128 may exceed the device's.
		qs := min(powerOfTwoFloor(smallest), blkMaxQueueSize)
		return qemu.Device{Device: fmt.Sprintf("vhost-user-blk-pci,id=%s,chardev=%s,num-queues=%d,queue-size=%d",
			id, chr, len(sizes), qs)}, nil

	case virtio.TypeRNG:
		if smallest < rngQueueSize {
			return qemu.Device{}, fmt.Errorf("rng queue of %d entries, QEMU's vhost-user-rng uses %d: %w", smallest, rngQueueSize, ErrUnsupported)
		}
		return qemu.Device{Device: fmt.Sprintf("vhost-user-rng-pci,id=%s,chardev=%s", id, chr)}, nil

	case virtio.TypeNet:
		// Receive and transmit queue; a third (control) queue is QEMU's.
		if len(sizes) < 2 {
			return qemu.Device{}, fmt.Errorf("net device with %d queues, want receive and transmit: %w", len(sizes), ErrUnsupported)
		}
		rx, tx := sizes[0], sizes[1]
		if rx < netMinQueueSize || tx < netMinQueueSize {
			return qemu.Device{}, fmt.Errorf("net queues of %d and %d entries, QEMU's virtio-net-pci needs at least %d: %w",
				rx, tx, netMinQueueSize, ErrUnsupported)
		}
		// vectors=0: with MSI-X, QEMU 7.2 under TCG segfaults when it
		// starts a vhost-user netdev (vhost_net_start ->
		// msix_set_vector_notifiers, seen with Debian's 7.2.22); legacy
		// INTx interrupts avoid that path. vhost-user-blk and -rng are
		// not affected.
		device := fmt.Sprintf("virtio-net-pci,id=%s,netdev=%s,vectors=0,rx_queue_size=%d,tx_queue_size=%d", id, id+"nd",
			min(powerOfTwoFloor(rx), netMaxQueueSize), min(powerOfTwoFloor(tx), netMaxQueueSize))
		mac, err := netMAC(dev)
		if err != nil {
			return qemu.Device{}, err
		}
		if mac != nil {
			device += ",mac=" + mac.String()
		}
		return qemu.Device{Netdev: fmt.Sprintf("vhost-user,id=%s,chardev=%s", id+"nd", chr), Device: device}, nil
	}
	return qemu.Device{}, fmt.Errorf("%v device (type %d): %w", dev.Type(), uint16(dev.Type()), ErrUnsupported)
}

// netMAC reads the MAC address a net device announces. With vhost-user
// QEMU's virtio-net answers the guest's config reads itself, so the
// address must be on its command line. nil: the device has none (QEMU then
// makes one up).
func netMAC(dev virtio.Device) (net.HardwareAddr, error) {
	if dev.Features()&netFeatureMAC == 0 {
		return nil, nil
	}
	mac := make(net.HardwareAddr, 6)
	if err := dev.ReadConfig(netConfigMAC, mac); err != nil {
		return nil, fmt.Errorf("read the net device's MAC address: %w", err)
	}
	return mac, nil
}

// powerOfTwoFloor is the largest power of two not above n (n > 0).
func powerOfTwoFloor(n uint16) uint16 {
	p := uint16(1)
	for p <= n/2 {
		p *= 2
	}
	return p
}

// serve listens on path and serves dev there until the returned function
// is called; that function stops the server, waits for it, and removes the
// socket.
func serve(dev virtio.Device, id, path string, o Options) (func() error, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes: use a shorter runtime directory", path, maxSocketPath)
	}
	if strings.ContainsRune(path, 0) {
		return nil, fmt.Errorf("socket path %q contains NUL", path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	so := vhostuser.Options{Name: id, OnError: o.OnError}
	if o.Trace != nil {
		so.Trace = func(line string) { o.Trace(id + ": " + line) }
	}
	srv := vhostuser.NewServer(dev, so)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	var once sync.Once
	var serveErr error
	return func() error {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				serveErr = fmt.Errorf("%s: %w", id, err)
			}
		})
		return serveErr
	}, nil
}
