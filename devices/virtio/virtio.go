// Package virtio is the core of wisp's device plane: split virtqueues over
// guest memory and the interface every virtio device implements. A device is
// written once and served by two transports: virtio-pci inside wisp's KVM VMM
// (package devices/virtio/pci) and vhost-user to QEMU under TCG (package
// devices/vhostuser). Both transports hand a device the same things: guest
// memory, negotiated features, and per queue a configured ring, a kick
// eventfd to wait on and an interrupt to raise.
//
// Everything a guest writes into a ring is hostile: every index, address and
// length is checked, and a malformed chain is an error for that request (or
// marks the device broken), never a panic.
package virtio

import "errors"

// DeviceType is the virtio device ID (virtio 1.2, section 5).
type DeviceType uint16

// Device types wisp implements.
const (
	TypeNet   DeviceType = 1
	TypeBlock DeviceType = 2
	TypeRNG   DeviceType = 4
)

func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "block"
	case TypeRNG:
		return "rng"
	}
	return "unknown"
}

// Feature bits shared by all device types (virtio 1.2, section 6).
const (
	FeatureRingIndirectDesc uint64 = 1 << 28
	FeatureRingEventIdx     uint64 = 1 << 29
	FeatureVersion1         uint64 = 1 << 32
	FeatureAccessPlatform   uint64 = 1 << 33
	FeatureRingPacked       uint64 = 1 << 34
)

// Device status bits the driver writes (virtio 1.2, section 2.1).
const (
	StatusAcknowledge      uint8 = 1
	StatusDriver           uint8 = 2
	StatusDriverOK         uint8 = 4
	StatusFeaturesOK       uint8 = 8
	StatusDeviceNeedsReset uint8 = 64
	StatusFailed           uint8 = 128
)

// Errors; test with errors.Is.
var (
	// ErrBadRing: the driver configured a ring wisp cannot use (size not a
	// power of two, misaligned or outside guest memory).
	ErrBadRing = errors.New("virtqueue: invalid ring")
	// ErrBadChain: a descriptor chain is malformed (loop, index out of
	// range, address or length outside guest memory, readable after
	// writable, nested indirect table ...).
	ErrBadChain = errors.New("virtqueue: malformed descriptor chain")
	// ErrBadRequest: a chain is well formed but its contents are not a
	// valid request for the device (short header, unknown type ...).
	ErrBadRequest = errors.New("virtio: invalid request")
	// ErrBadConfig: a config-space access outside the device's config.
	ErrBadConfig = errors.New("virtio: invalid config access")
)

// GuestMemory is guest RAM as a device sees it: guest-physical ranges,
// bounds-checked. *memory.Memory implements it for the KVM backend; the
// vhost-user server implements it over the regions QEMU sends.
type GuestMemory interface {
	// Slice returns the host bytes behind [gpa, gpa+n), or an error if any
	// part lies outside guest RAM. The slice aliases guest memory.
	Slice(gpa, n uint64) ([]byte, error)
}

// Interrupt tells the driver that a queue has used buffers (or that the
// config changed). KVM's transport writes an irqfd; vhost-user writes the
// call eventfd QEMU gave it.
type Interrupt interface {
	Trigger() error
}

// QueueConfig is one virtqueue as the driver set it up: guest-physical
// addresses of the descriptor table, available ring and used ring.
type QueueConfig struct {
	Size      uint16
	DescAddr  uint64
	AvailAddr uint64
	UsedAddr  uint64
}

// ActiveQueue is one queue handed to a device on activation.
type ActiveQueue struct {
	// Queue is the ring; it starts at the available index the transport
	// restored (0 for a fresh device).
	Queue *Queue
	// Kick becomes readable when the driver notifies the queue. The device
	// waits on it (together with its own stop signal) and must not close
	// it: the transport owns it.
	Kick *EventFD
	// Interrupt is raised after the device put buffers in the used ring and
	// Queue.NeedsInterrupt says the driver wants to hear about it.
	Interrupt Interrupt
}

// Activation is what a device gets when the driver sets DRIVER_OK.
type Activation struct {
	Memory GuestMemory
	// Features are the negotiated features (a subset of Device.Features).
	Features uint64
	// Queues has one entry per queue the device declared; an entry with a
	// nil Queue is a queue the driver did not enable.
	Queues []ActiveQueue
	// ConfigInterrupt signals a config-space change; may be nil.
	ConfigInterrupt Interrupt
}

// Device is one virtio device, independent of transport.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features are the feature bits offered, device-specific and generic
	// (FeatureVersion1 must be among them; the ring features
	// FeatureRingIndirectDesc and FeatureRingEventIdx are supported by
	// Queue and should be offered).
	Features() uint64
	// QueueSizes gives each queue's maximum size; its length is the number
	// of queues.
	QueueSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific configuration
	// space; offset is relative to its start. Out-of-range accesses return
	// an error wrapping ErrBadConfig.
	ReadConfig(offset uint64, data []byte) error
	WriteConfig(offset uint64, data []byte) error
	// Activate starts serving the queues. It returns once the device's
	// workers are running; they run until Reset.
	Activate(a Activation) error
	// Reset stops the workers (waiting for them to finish any request in
	// flight) and returns the device to its initial state, ready for
	// another Activate. Reset on a device that is not active is a no-op.
	Reset() error
	// Close releases the device's backing resources (files, taps); the
	// device is reset first.
	Close() error
}
