// Package blk is wisp's virtio-blk device (virtio 1.2, section 5.2) over a
// disk image: a raw file or block device, read with preadv and written with
// pwritev straight from and into the guest's buffers; or a qcow2 image
// (package qcow2), read-only underneath a throwaway copy-on-write overlay
// that takes the guest's writes.
//
// An image is locked while a Device has it open (flock: exclusive when
// writable, shared when read-only or qcow2), so two VMs never write the
// same image.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// Device feature bits (virtio 1.2, section 5.2.3).
const (
	FeatureSizeMax     uint64 = 1 << 1
	FeatureSegMax      uint64 = 1 << 2
	FeatureRO          uint64 = 1 << 5
	FeatureBlkSize     uint64 = 1 << 6
	FeatureFlush       uint64 = 1 << 9
	FeatureMQ          uint64 = 1 << 12
	FeatureDiscard     uint64 = 1 << 13
	FeatureWriteZeroes uint64 = 1 << 14
)

// Limits the device announces in its configuration space.
const (
	// SectorSize is the unit of every sector number and capacity.
	SectorSize = 512
	// QueueSize is each queue's maximum size.
	QueueSize = 256
	// segMax leaves room for the header and status descriptors in a ring of
	// 128, QEMU's default vhost-user-blk queue size, so a driver without
	// indirect descriptors still fits a request in the ring.
	segMax = 128 - 2
	// sizeMax bounds one data segment.
	sizeMax = 1 << 20
	// maxZeroSectors bounds one discard or write-zeroes segment (2 GiB).
	maxZeroSectors = 1 << 22
	// maxZeroSegs bounds the segments of one discard or write-zeroes request.
	maxZeroSegs = 16
	// discardAlignment is in sectors: the guest discards whole 4 KiB pages.
	discardAlignment = 4096 / SectorSize
	// serialLen is the size of a GET_ID answer.
	serialLen = 20
	// MaxQueues bounds Options.Queues.
	MaxQueues = 64
)

// Configuration space layout (struct virtio_blk_config).
const (
	cfgCapacity          = 0
	cfgSizeMax           = 8
	cfgSegMax            = 12
	cfgBlkSize           = 20
	cfgNumQueues         = 34
	cfgMaxDiscardSectors = 36
	cfgMaxDiscardSeg     = 40
	cfgDiscardAlignment  = 44
	cfgMaxZeroesSectors  = 48
	cfgMaxZeroesSeg      = 52
	cfgZeroesMayUnmap    = 56
	configSize           = 72 // through the secure-erase fields
)

// Errors; test with errors.Is.
var (
	// ErrLocked: another process holds the image (see LockedError).
	ErrLocked = errors.New("disk image is locked by another process")
	// ErrNotImage: the path is not a file or block device, or too small.
	ErrNotImage = errors.New("not a usable disk image")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("virtio-blk: device closed")
	// ErrActive: Activate on a device that is already active.
	ErrActive = errors.New("virtio-blk: device already active")
)

// Options describe one disk.
type Options struct {
	// Path is the image: a raw file or block device, or a qcow2 file.
	Path string
	// Format is "raw" or "qcow2"; empty means by the file name (.qcow2 →
	// qcow2, anything else → raw). It is never guessed from the contents:
	// a guest could write a qcow2 header into a raw disk and make the host
	// open files it names. Open refuses a file whose first bytes disagree
	// with a format that came from its name (see DecideFormat).
	Format string
	// Backing allows a qcow2 image's backing files. They must be regular
	// files under BackingDir (empty: the image's own directory), reached
	// without symlinks; a backing file that is not qcow2 must be declared
	// raw in the image header. Without it an image with a backing file is
	// refused (ErrBackingOff).
	Backing bool
	// BackingDir is where backing files may live when Backing is set.
	BackingDir string
	// OverlayDir holds the throwaway copy-on-write file that takes a
	// writable qcow2 disk's writes (the image itself is never written);
	// empty means os.TempDir().
	OverlayDir string
	// ReadOnly opens the image read-only (shared lock) and offers
	// VIRTIO_BLK_F_RO; the guest's writes fail.
	ReadOnly bool
	// Serial is the disk's ID (VIRTIO_BLK_T_GET_ID), at most 20 bytes.
	Serial string
	// Queues is the number of request queues (VIRTIO_BLK_F_MQ); 0 means 1.
	// QEMU's vhost-user-blk-pci asks for one per vCPU unless given
	// num-queues, so the vhost-user path should pass its vCPU count.
	Queues int
	// OnError receives request errors (host I/O failures, and malformed
	// requests wrapping virtio.ErrBadRequest); it may be nil and must be
	// safe for concurrent use.
	OnError func(queue int, err error)
}

// Device is a virtio-blk device. It implements virtio.Device.
type Device struct {
	backend  Backend
	readOnly bool
	serial   [serialLen]byte
	queues   int
	onErr    func(int, error)
	config   [configSize]byte

	mu      sync.Mutex
	workers *virtio.Workers
	closed  bool
}

var _ virtio.Device = (*Device)(nil)

// Open opens and locks the image and returns a device serving it.
func Open(o Options) (*Device, error) {
	if o.Path == "" {
		return nil, fmt.Errorf("disk image: empty path: %w", ErrNotImage)
	}
	if len(o.Serial) > serialLen {
		return nil, fmt.Errorf("disk %s: serial %q is longer than %d bytes", o.Path, o.Serial, serialLen)
	}
	if o.Queues < 0 || o.Queues > MaxQueues {
		return nil, fmt.Errorf("disk %s: %d queues: want 1 to %d", o.Path, o.Queues, MaxQueues)
	}
	b, err := openBackend(o)
	if err != nil {
		return nil, err
	}
	d, err := New(b, o)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return d, nil
}

// openBackend opens the image as the format rule says: the format comes
// from the options or the name, and the file's first bytes, read from the
// descriptor that serves the guest, must agree with it.
func openBackend(o Options) (Backend, error) {
	format, err := intendedFormat(o.Path, o.Format)
	if err != nil {
		return nil, err
	}
	fd, size, err := openImage(o.Path, o.ReadOnly || format == FormatQcow2)
	if err != nil {
		return nil, err
	}
	magic, err := hasQcow2Magic(fd, o.Path)
	if err == nil {
		format, err = DecideFormat(o.Path, o.Format, magic)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if format == FormatRaw {
		b := &rawFile{fd: fd, path: o.Path, size: size &^ (SectorSize - 1)}
		if b.Size() == 0 {
			_ = b.Close()
			return nil, fmt.Errorf("disk image %s: %d bytes, smaller than one %d-byte sector: %w", o.Path, size, SectorSize, ErrNotImage)
		}
		return b, nil
	}
	policy, err := newBackingPolicy(o.Path, o.Backing || o.BackingDir != "", o.BackingDir)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	im, err := openQcow2(fd, o.Path, size, policy)
	if err != nil {
		return nil, err
	}
	if im.Size() == 0 {
		_ = im.Close()
		return nil, fmt.Errorf("disk image %s: qcow2 of 0 bytes: %w", o.Path, ErrNotImage)
	}
	if o.ReadOnly {
		return readOnlyBase{im}, nil
	}
	b, err := newOverlay(im, o.OverlayDir)
	if err != nil {
		_ = im.Close()
		return nil, fmt.Errorf("disk %s: %w", o.Path, err)
	}
	return b, nil
}

// New makes a device over an open backend (Options.Path names it in
// messages and is not opened). The device owns b and closes it on Close.
func New(b Backend, o Options) (*Device, error) {
	if len(o.Serial) > serialLen {
		return nil, fmt.Errorf("disk %s: serial %q is longer than %d bytes", o.Path, o.Serial, serialLen)
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.Queues < 0 || o.Queues > MaxQueues {
		return nil, fmt.Errorf("disk %s: %d queues: want 1 to %d", o.Path, o.Queues, MaxQueues)
	}
	if b.Size()%SectorSize != 0 {
		return nil, fmt.Errorf("disk %s: size %d is not a multiple of %d", o.Path, b.Size(), SectorSize)
	}
	d := &Device{backend: b, readOnly: o.ReadOnly, queues: o.Queues, onErr: o.OnError}
	copy(d.serial[:], o.Serial)
	if d.onErr == nil {
		d.onErr = func(int, error) {}
	}
	c := d.config[:]
	binary.LittleEndian.PutUint64(c[cfgCapacity:], b.Size()/SectorSize)
	binary.LittleEndian.PutUint32(c[cfgSizeMax:], sizeMax)
	binary.LittleEndian.PutUint32(c[cfgSegMax:], segMax)
	binary.LittleEndian.PutUint32(c[cfgBlkSize:], SectorSize)
	binary.LittleEndian.PutUint16(c[cfgNumQueues:], uint16(o.Queues))
	binary.LittleEndian.PutUint32(c[cfgMaxDiscardSectors:], maxZeroSectors)
	binary.LittleEndian.PutUint32(c[cfgMaxDiscardSeg:], maxZeroSegs)
	binary.LittleEndian.PutUint32(c[cfgDiscardAlignment:], discardAlignment)
	binary.LittleEndian.PutUint32(c[cfgMaxZeroesSectors:], maxZeroSectors)
	binary.LittleEndian.PutUint32(c[cfgMaxZeroesSeg:], maxZeroSegs)
	c[cfgZeroesMayUnmap] = 1
	return d, nil
}

// Capacity is the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.backend.Size() / SectorSize }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device. A read-only disk offers RO and
// neither DISCARD nor WRITE_ZEROES.
func (d *Device) Features() uint64 {
	f := virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx |
		FeatureSizeMax | FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureMQ
	if d.readOnly {
		return f | FeatureRO
	}
	return f | FeatureDiscard | FeatureWriteZeroes
}

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 {
	sizes := make([]uint16, d.queues)
	for i := range sizes {
		sizes[i] = QueueSize
	}
	return sizes
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) error {
	if offset > configSize || uint64(len(data)) > configSize-offset {
		return fmt.Errorf("virtio-blk config read [%#x, +%d): %w", offset, len(data), virtio.ErrBadConfig)
	}
	copy(data, d.config[offset:])
	return nil
}

// WriteConfig implements virtio.Device: the configuration is read-only
// (wisp does not offer CONFIG_WCE).
func (d *Device) WriteConfig(offset uint64, data []byte) error {
	return fmt.Errorf("virtio-blk config write [%#x, +%d): read-only: %w", offset, len(data), virtio.ErrBadConfig)
}

// Activate implements virtio.Device: one worker per enabled queue.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.workers != nil {
		return ErrActive
	}
	if len(a.Queues) > d.queues {
		return fmt.Errorf("virtio-blk: activation with %d queues, device has %d", len(a.Queues), d.queues)
	}
	w, err := virtio.NewWorkers(d.onErr)
	if err != nil {
		return fmt.Errorf("virtio-blk: activate: %w", err)
	}
	for i, aq := range a.Queues {
		if aq.Queue == nil {
			continue
		}
		if aq.Kick == nil {
			_ = w.Stop()
			return fmt.Errorf("virtio-blk: queue %d has no kick eventfd", i)
		}
		w.Serve(i, aq, d.handle)
	}
	d.workers = w
	return nil
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
		return fmt.Errorf("virtio-blk: stop workers: %w", err)
	}
	return nil
}

// Close implements virtio.Device: it stops the workers and closes the
// image, releasing its lock. Closing twice is a no-op.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return errors.Join(d.stopLocked(), d.backend.Close())
}
