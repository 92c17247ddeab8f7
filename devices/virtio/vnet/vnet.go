// Package vnet is the virtio-net device (virtio 1.2, section 5.1): a
// receive queue (0) and a transmit queue (1) carrying Ethernet frames
// behind a virtio_net_hdr_v1, between a guest driver and a Backend — a
// tap (package net/tap) or the user-mode network (package net/usernet).
//
// Transmit serves each chain with one writev from guest memory (the
// 12-byte header is copied and checked first, so the driver cannot change
// it under us). Receive reads each frame into a device buffer and copies it
// into one or more (MRG_RXBUF) receive buffers, the way Linux's virtio_net
// driver posts them. With a backend that carries virtio-net headers (a tap
// with IFF_VNET_HDR), the device offers checksum and TCP segmentation
// offloads and tells the backend which ones the driver accepted.
package vnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"golang.org/x/sys/unix"
)

// Backend is where frames go and come from. Both directions are
// non-blocking: they return unix.EAGAIN (possibly wrapped) when they would
// block, and the device polls Fd. *tap.Tap and *usernet.Network implement
// it.
type Backend interface {
	// ReadFrame reads one frame into bufs: with an HdrLen-byte header in
	// front if HasVnetHdr. unix.EAGAIN: none queued.
	ReadFrame(bufs [][]byte) (int, error)
	// WriteFrame sends one frame gathered from bufs (header in front if
	// HasVnetHdr). unix.EAGAIN: no room now, poll Fd for writing.
	WriteFrame(bufs [][]byte) error
	// Fd is pollable: readable when a frame is queued, writable when
	// WriteFrame can take one.
	Fd() int
	// HasVnetHdr reports whether frames carry a 12-byte virtio_net_hdr_v1
	// in both directions.
	HasVnetHdr() bool
	// SetOffload says which offloads (unix.TUN_F_* flags, as for
	// TUNSETOFFLOAD) the driver accepted for frames it receives.
	SetOffload(tunFlags uint) error
	// Close releases the backend.
	Close() error
}

// Feature bits of virtio-net (virtio 1.2, section 5.1.3).
const (
	FeatureCsum      uint64 = 1 << 0
	FeatureGuestCsum uint64 = 1 << 1
	FeatureMTU       uint64 = 1 << 3
	FeatureMAC       uint64 = 1 << 5
	FeatureGuestTSO4 uint64 = 1 << 7
	FeatureGuestTSO6 uint64 = 1 << 8
	FeatureGuestECN  uint64 = 1 << 9
	FeatureGuestUFO  uint64 = 1 << 10
	FeatureHostTSO4  uint64 = 1 << 11
	FeatureHostTSO6  uint64 = 1 << 12
	FeatureHostECN   uint64 = 1 << 13
	FeatureHostUFO   uint64 = 1 << 14
	FeatureMrgRxbuf  uint64 = 1 << 15
	FeatureStatus    uint64 = 1 << 16
	FeatureCtrlVQ    uint64 = 1 << 17
	FeatureMQ        uint64 = 1 << 22
)

// Queue indexes.
const (
	RxQueue = 0
	TxQueue = 1
)

// QueueSize is the largest ring each queue accepts.
const QueueSize = 256

// ConfigSize is the size of the device configuration space: mac[6],
// status, max_virtqueue_pairs (virtio 1.2, section 5.1.4).
const ConfigSize = 10

// statusLinkUp is VIRTIO_NET_S_LINK_UP in the config's status field.
const statusLinkUp = 1

// rxBufSize holds the largest frame a tap hands over with every receive
// offload on (a 64 KiB GSO packet and headers), with room to spare so a
// frame is never truncated by our buffer.
const rxBufSize = 128 << 10

// maxIovecs is the kernel's IOV_MAX: a transmit chain with more buffers
// cannot go out in one writev.
const maxIovecs = 1024

// rxBatch bounds how many frames are received before the driver is
// interrupted, so the first frames of a burst are not held back.
const rxBatch = 64

// ErrActive: Activate on a device that is already active.
var ErrActive = errors.New("vnet: device already active")

// Stats counts the device's traffic since it was made.
type Stats struct {
	TxFrames, TxBytes uint64
	// TxErrors counts transmit requests that failed (bad chain or header,
	// backend error).
	TxErrors          uint64
	RxFrames, RxBytes uint64
	// RxDropped counts frames from the backend not delivered: too big for
	// the driver's buffers, or with offloads it did not accept.
	RxDropped uint64
}

type counters struct {
	txFrames, txBytes, txErrors  atomic.Uint64
	rxFrames, rxBytes, rxDropped atomic.Uint64
}

// Device is a virtio-net device over a Backend.
type Device struct {
	backend  Backend
	mac      net.HardwareAddr
	features uint64
	stats    counters

	mu      sync.Mutex
	onErr   func(queue int, err error)
	workers *virtio.Workers // nil while inactive
	closed  bool
}

var _ virtio.Device = (*Device)(nil)

// New makes a device over b with Ethernet address mac; a nil mac picks a
// random one in QEMU's 52:54:00 range. The device owns b from now on: Close
// closes it.
func New(b Backend, mac net.HardwareAddr) (*Device, error) {
	if b == nil {
		return nil, errors.New("vnet: no backend")
	}
	if mac == nil {
		mac = make(net.HardwareAddr, 6)
		copy(mac, []byte{0x52, 0x54, 0x00})
		if _, err := rand.Read(mac[3:]); err != nil {
			return nil, fmt.Errorf("vnet: random MAC: %w", err)
		}
	}
	if len(mac) != 6 || mac[0]&1 != 0 || isZero(mac) {
		return nil, fmt.Errorf("vnet: MAC %s: want a 6-byte unicast address", mac)
	}
	features := virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx |
		FeatureMAC | FeatureStatus | FeatureMrgRxbuf
	if b.HasVnetHdr() {
		features |= FeatureCsum | FeatureGuestCsum |
			FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN |
			FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN
	}
	return &Device{backend: b, mac: append(net.HardwareAddr(nil), mac...), features: features}, nil
}

func isZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// MAC is the device's Ethernet address (for QEMU's
// -device virtio-net-pci,mac=... when QEMU owns the config space).
func (d *Device) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), d.mac...) }

// OnError sets where request errors go (a hostile or buggy driver's bad
// chains, backend failures); fn must be safe for concurrent use. By
// default they are only counted in Stats. It applies from the next
// Activate.
func (d *Device) OnError(fn func(queue int, err error)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onErr = fn
}

// Stats returns the traffic counters.
func (d *Device) Stats() Stats {
	s := &d.stats
	return Stats{
		TxFrames: s.txFrames.Load(), TxBytes: s.txBytes.Load(), TxErrors: s.txErrors.Load(),
		RxFrames: s.rxFrames.Load(), RxBytes: s.rxBytes.Load(), RxDropped: s.rxDropped.Load(),
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueSizes implements virtio.Device: receive and transmit, no control
// queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

func (d *Device) config() [ConfigSize]byte {
	var c [ConfigSize]byte
	copy(c[0:6], d.mac)
	c[6] = statusLinkUp // status, le16
	c[8] = 1            // max_virtqueue_pairs, le16
	return c
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) error {
	if offset > ConfigSize || uint64(len(data)) > ConfigSize-offset {
		return fmt.Errorf("vnet: config read of %d bytes at %#x (config is %d bytes): %w",
			len(data), offset, ConfigSize, virtio.ErrBadConfig)
	}
	c := d.config()
	copy(data, c[offset:])
	return nil
}

// WriteConfig implements virtio.Device: the configuration is read-only
// for a VERSION_1 driver (the MAC is changed through a control queue,
// which wisp does not offer).
func (d *Device) WriteConfig(offset uint64, data []byte) error {
	return fmt.Errorf("vnet: config write of %d bytes at %#x: the configuration is read-only: %w",
		len(data), offset, virtio.ErrBadConfig)
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return errors.New("vnet: activate: device closed")
	case d.workers != nil:
		return ErrActive
	case a.Features&^d.features != 0:
		return fmt.Errorf("vnet: activate: features %#x were not offered", a.Features&^d.features)
	case a.Features&virtio.FeatureVersion1 == 0:
		return errors.New("vnet: activate: driver did not accept VERSION_1 (legacy drivers are not supported)")
	case len(a.Queues) != 2:
		return fmt.Errorf("vnet: activate: %d queues, want 2 (receive, transmit)", len(a.Queues))
	}
	off := offloadsFor(a.Features)
	if err := d.backend.SetOffload(off.tunFlags()); err != nil {
		return fmt.Errorf("vnet: activate: %w", err)
	}
	onErr := d.onErr
	w, err := virtio.NewWorkers(func(queue int, err error) {
		if queue == TxQueue {
			d.stats.txErrors.Add(1)
		}
		if onErr != nil {
			onErr(queue, err)
		}
	})
	if err != nil {
		return fmt.Errorf("vnet: activate: %w", err)
	}
	if tx := a.Queues[TxQueue]; tx.Queue != nil {
		t := &transmitter{d: d, off: off, stop: w.StopFD()}
		w.Serve(TxQueue, tx, t.transmit)
	}
	if rx := a.Queues[RxQueue]; rx.Queue != nil {
		r := &receiver{
			d:    d,
			aq:   rx,
			stop: w.StopFD(),
			off:  off,
			mrg:  a.Features&FeatureMrgRxbuf != 0,
			buf:  make([]byte, rxBufSize),
			onErr: func(err error) {
				if onErr != nil {
					onErr(RxQueue, err)
				}
			},
		}
		w.Go(r.run)
	}
	d.workers = w
	return nil
}

// Reset implements virtio.Device. Frames the workers held (received but
// not yet delivered) are dropped with the rings.
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resetLocked()
}

func (d *Device) resetLocked() error {
	if d.workers == nil {
		return nil
	}
	err := d.workers.Stop()
	d.workers = nil
	// Frames queued in a tap from now on come finished: the next driver
	// may accept fewer offloads.
	if oerr := d.backend.SetOffload(0); oerr != nil {
		err = errors.Join(err, oerr)
	}
	if err != nil {
		return fmt.Errorf("vnet: reset: %w", err)
	}
	return nil
}

// Close implements virtio.Device: it resets the device and closes the
// backend.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return errors.Join(d.resetLocked(), d.backend.Close())
}

// waitFd blocks until fd has one of events or stop is signalled.
func waitFd(fd int, events int16, stop *virtio.EventFD) (stopped bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(stop.Fd()), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll backend: %w", err)
		}
		return fds[1].Revents != 0, nil
	}
}
