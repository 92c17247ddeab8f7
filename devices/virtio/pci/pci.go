// Package pci is the virtio-pci transport, modern interface only (virtio
// 1.2, section 4.1): it puts one virtio.Device on wisp's PCI bus as a
// function with one 32-bit memory BAR that holds the common configuration,
// the ISR, the device configuration, the queue notification area and the
// MSI-X table and pending bit array, each described by a virtio vendor
// capability.
//
// The transport owns the handshake: feature negotiation, device status,
// queue setup. When the driver sets DRIVER_OK it builds a virtio.Queue per
// enabled queue over guest memory and activates the device with a kick
// eventfd and an interrupt per queue. Kicks reach the eventfd without a VM
// exit where the backend registers them (NotifyRegistrar, KVM's
// ioeventfd), and through WriteBAR otherwise. Interrupts go out through
// MSI-X (package devices/pci), whose routes the backend implements. There
// is no INTx: a driver that does not enable MSI-X polls.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	pcibus "github.com/wisp-vmm/wisp/devices/pci"
	"github.com/wisp-vmm/wisp/devices/virtio"
)

// PCI identity of a modern virtio function (virtio 1.2, 4.1.2).
const (
	VendorID = 0x1af4
	// DeviceIDBase plus the virtio device type is the PCI device ID.
	DeviceIDBase = 0x1040
	// SubsystemVendorID and SubsystemID are what QEMU gives its modern
	// virtio functions.
	SubsystemVendorID = 0x1af4
	SubsystemID       = 0x1100
	// Revision is at least 1 for a non-transitional device.
	Revision = 1
)

// Class codes by device type, what QEMU and cloud-hypervisor use.
const (
	classNetwork      = 0x020000 // network controller, Ethernet
	classStorageOther = 0x018000 // mass storage controller, other
	classOther        = 0xff0000 // unassigned class (rng and the rest)
)

// ClassCode is the PCI class code a device of type t gets.
func ClassCode(t virtio.DeviceType) uint32 {
	switch t {
	case virtio.TypeNet:
		return classNetwork
	case virtio.TypeBlock:
		return classStorageOther
	}
	return classOther
}

// Layout of BAR 0. Each structure has its own 4 KiB page, like QEMU's, so
// a driver's mappings never share a page with another structure.
const (
	BARIndex        = 0
	BARSize         = 0x8000
	CommonOffset    = 0x0000
	ISROffset       = 0x1000
	DeviceOffset    = 0x2000
	NotifyOffset    = 0x3000
	MSIXTableOffset = 0x4000
	MSIXPBAOffset   = 0x6000
	regionSize      = 0x1000
	msixTableRegion = 0x2000
	// NotifyOffMultiplier spaces the queues' notification addresses: queue
	// i is notified at NotifyOffset + 4*i, so each has its own ioeventfd.
	NotifyOffMultiplier = 4
	// MaxQueues is the most queues the layout has room for: one MSI-X
	// vector each plus one for configuration changes.
	MaxQueues = msixTableRegion/16 - 1
)

// NoVector is the MSI-X vector number meaning "no interrupt".
const NoVector = 0xffff

// virtio PCI capability types (cfg_type).
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capPCI    = 5
)

// Offsets in a virtio PCI capability, from its start (struct
// virtio_pci_cap, then the notify multiplier or the pci_cfg data window).
const (
	capLenField    = 2
	capTypeField   = 3
	capBARField    = 4
	capIDField     = 5
	capOffsetField = 8
	capLengthField = 12
	capExtraField  = 16
	capBaseLen     = 16
	capExtendedLen = 20
)

// Common configuration registers (struct virtio_pci_common_cfg).
const (
	regDeviceFeatureSelect = 0x00
	regDeviceFeature       = 0x04
	regDriverFeatureSelect = 0x08
	regDriverFeature       = 0x0c
	regConfigMSIXVector    = 0x10
	regNumQueues           = 0x12
	regDeviceStatus        = 0x14
	regConfigGeneration    = 0x15
	regQueueSelect         = 0x16
	regQueueSize           = 0x18
	regQueueMSIXVector     = 0x1a
	regQueueEnable         = 0x1c
	regQueueNotifyOff      = 0x1e
	regQueueDesc           = 0x20
	regQueueDriver         = 0x28
	regQueueDevice         = 0x30
	regQueueNotifConfData  = 0x38
	regQueueReset          = 0x3a
	commonCfgLen           = 0x3c
)

// ISR status bits.
const (
	isrQueue  = 1 << 0
	isrConfig = 1 << 1
)

// Transport features wisp does not implement and never offers, whatever
// the device says: the packed ring (virtio.Queue is split only), SR-IOV,
// notification data, notification config data, queue reset and the admin
// virtqueue.
const unsupportedFeatures = virtio.FeatureRingPacked | 1<<37 | 1<<38 | 1<<39 | 1<<40 | 1<<41

// Errors; test with errors.Is.
var (
	// ErrDevice: the device cannot be served by this transport (no
	// VERSION_1, no queues or too many, a queue size that is not a
	// power of two).
	ErrDevice = errors.New("virtio-pci: unsupported device")
	// ErrBadAccess: a guest access to the BAR that the transport does not
	// serve (wrong width, crossing registers, another BAR).
	ErrBadAccess = errors.New("virtio-pci: invalid access")
	// ErrActivate: the driver set DRIVER_OK but the device could not be
	// started (bad ring, FEATURES_OK missing, the device refused); the
	// device then shows DEVICE_NEEDS_RESET.
	ErrActivate = errors.New("virtio-pci: activation failed")
)

// NotifyRegistrar makes guest writes to a queue's notification address
// signal its kick eventfd without leaving the guest (KVM's ioeventfd).
type NotifyRegistrar interface {
	RegisterNotify(addr uint64, kick *virtio.EventFD) error
	UnregisterNotify(addr uint64, kick *virtio.EventFD) error
}

// Options are what the transport needs from the machine.
type Options struct {
	// Memory is guest RAM, where the driver's rings live.
	Memory virtio.GuestMemory
	// MSI raises the MSI-X vectors' messages.
	MSI pcibus.MSIRouter
	// Notify registers notification addresses; nil leaves every notify
	// an MMIO exit, served by WriteBAR.
	Notify NotifyRegistrar
}

// queue is one virtqueue's transport state.
type queue struct {
	index                int
	max                  uint16
	size                 uint16
	enabled              bool
	desc, driver, device uint64
	// vector is read by the device's goroutines when they raise an
	// interrupt, without the transport lock.
	vector atomic.Uint32
	kick   *virtio.EventFD
}

func (q *queue) reset() {
	q.size, q.enabled = q.max, false
	q.desc, q.driver, q.device = 0, 0, 0
	q.vector.Store(NoVector)
}

// Transport is one virtio device on the PCI bus; it implements
// pcibus.Device.
type Transport struct {
	dev     virtio.Device
	opts    Options
	offered uint64
	cfg     *pcibus.Config
	msix    *pcibus.MSIX
	pciCap  int      // offset of the VIRTIO_PCI_CAP_PCI_CFG capability
	queues  []*queue // fixed at New; their kicks never change

	// isr, configVector and configGen are touched by the device's
	// goroutines when they raise interrupts, so they are atomics, never
	// behind mu: Reset (called with mu held) waits for those goroutines.
	isr          atomic.Uint32
	configVector atomic.Uint32
	configGen    atomic.Uint32
	// notifyExits counts notifications that arrived through WriteBAR.
	notifyExits atomic.Uint64

	mu             sync.Mutex
	deviceFeatSel  uint32
	driverFeatSel  uint32
	driverFeatures uint64
	status         uint8
	queueSel       uint16
	active         bool
	closed         bool
	registered     []registration // notification addresses KVM knows

	// kickMu keeps Close from closing the kick eventfds under a notify
	// that arrived as an MMIO exit (a closed descriptor number may be
	// reused by then).
	kickMu      sync.RWMutex
	kicksClosed bool
}

// registration is one notification address handed to the registrar.
type registration struct {
	addr uint64
	q    *queue
}

// New builds the transport for dev. Put it on the bus with pcibus.Bus.Add;
// Close it when the machine goes away (it resets dev but does not close
// it: the device belongs to whoever made it).
func New(dev virtio.Device, opts Options) (_ *Transport, err error) {
	if opts.Memory == nil {
		return nil, fmt.Errorf("virtio-pci %v: no guest memory: %w", dev.Type(), ErrDevice)
	}
	features := dev.Features()
	if features&virtio.FeatureVersion1 == 0 {
		return nil, fmt.Errorf("virtio-pci %v: device does not offer VERSION_1: %w", dev.Type(), ErrDevice)
	}
	sizes := dev.QueueSizes()
	if len(sizes) == 0 || len(sizes) > MaxQueues {
		return nil, fmt.Errorf("virtio-pci %v: %d queues (want 1..%d): %w", dev.Type(), len(sizes), MaxQueues, ErrDevice)
	}
	t := &Transport{dev: dev, opts: opts, offered: features &^ unsupportedFeatures}
	defer func() {
		if err != nil {
			t.closeKicks()
		}
	}()
	for i, limit := range sizes {
		if limit == 0 || limit > virtio.MaxQueueSize || limit&(limit-1) != 0 {
			return nil, fmt.Errorf("virtio-pci %v: queue %d size %d: want a power of two up to %d: %w",
				dev.Type(), i, limit, virtio.MaxQueueSize, ErrDevice)
		}
		kick, err := virtio.NewEventFD()
		if err != nil {
			return nil, fmt.Errorf("virtio-pci %v: queue %d kick: %w", dev.Type(), i, err)
		}
		q := &queue{index: i, max: limit, kick: kick}
		q.reset()
		t.queues = append(t.queues, q)
	}
	t.configVector.Store(NoVector)
	if err := t.layout(); err != nil {
		return nil, fmt.Errorf("virtio-pci %v: %w", dev.Type(), err)
	}
	return t, nil
}

// layout builds the configuration space: header, BAR 0, MSI-X and the
// virtio capabilities.
func (t *Transport) layout() error {
	typ := t.dev.Type()
	t.cfg = pcibus.NewConfig(pcibus.Header{
		VendorID:          VendorID,
		DeviceID:          DeviceIDBase + uint16(typ),
		Class:             ClassCode(typ),
		Revision:          Revision,
		SubsystemVendorID: SubsystemVendorID,
		SubsystemID:       SubsystemID,
	})
	if err := t.cfg.AddBAR(BARIndex, pcibus.BAR{Kind: pcibus.BARMem32, Size: BARSize}); err != nil {
		return err
	}
	var err error
	t.msix, err = pcibus.NewMSIX(t.cfg, len(t.queues)+1,
		pcibus.BARLocation{BAR: BARIndex, Offset: MSIXTableOffset},
		pcibus.BARLocation{BAR: BARIndex, Offset: MSIXPBAOffset}, t.opts.MSI)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	notifyExtra := make([]byte, 4)
	le.PutUint32(notifyExtra, NotifyOffMultiplier)
	for _, c := range []struct {
		typ            uint8
		offset, length uint32
		extra          []byte
	}{
		{capCommon, CommonOffset, commonCfgLen, nil},
		{capNotify, NotifyOffset, uint32(len(t.queues)) * NotifyOffMultiplier, notifyExtra},
		{capISR, ISROffset, 1, nil},
		{capDevice, DeviceOffset, regionSize, nil},
		{capPCI, 0, 0, make([]byte, 4)},
	} {
		// The body starts at cap_len: the bus writes the ID and next.
		body := make([]byte, capBaseLen-2+len(c.extra))
		body[capLenField-2] = byte(capBaseLen + len(c.extra))
		body[capTypeField-2] = c.typ
		body[capBARField-2] = BARIndex
		le.PutUint32(body[capOffsetField-2:], c.offset)
		le.PutUint32(body[capLengthField-2:], c.length)
		copy(body[capExtraField-2:], c.extra)
		off, err := t.cfg.AddCapability(pcibus.CapVendor, body)
		if err != nil {
			return err
		}
		if c.typ == capPCI {
			// The driver picks BAR, offset and length, then accesses the
			// data window.
			t.pciCap = off
			if err := t.cfg.SetWritable(off+capBARField, []byte{0xff}); err != nil {
				return err
			}
			if err := t.cfg.SetWritable(off+capOffsetField, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Config implements pcibus.Device.
func (t *Transport) Config() *pcibus.Config { return t.cfg }

// MSIX is the function's MSI-X state.
func (t *Transport) MSIX() *pcibus.MSIX { return t.msix }

// ReadConfig implements pcibus.Device. A read that touches the pci_cfg
// capability's data window first performs the BAR access the driver set
// up there, as the spec asks.
func (t *Transport) ReadConfig(offset int, data []byte) error {
	var errs []error
	if pcibus.Overlaps(offset, len(data), t.pciCap+capExtraField, 4) {
		if bar, off, n, ok := t.pciCfgAccess(); ok {
			buf := make([]byte, 4)
			errs = append(errs, t.ReadBAR(bar, off, buf[:n]))
			errs = append(errs, t.cfg.Put(t.pciCap+capExtraField, buf))
		}
	}
	errs = append(errs, t.cfg.Read(offset, data))
	return errors.Join(errs...)
}

// WriteConfig implements pcibus.Device: MSI-X control changes take effect,
// and a write to the pci_cfg data window performs the BAR write.
func (t *Transport) WriteConfig(offset int, data []byte) error {
	if err := t.cfg.Write(offset, data); err != nil {
		return err
	}
	errs := []error{t.msix.ConfigWritten(offset, len(data))}
	if pcibus.Overlaps(offset, len(data), t.pciCap+capExtraField, 4) {
		if bar, off, n, ok := t.pciCfgAccess(); ok {
			errs = append(errs, t.WriteBAR(bar, off, t.cfg.Bytes(t.pciCap+capExtraField, n)))
		}
	}
	return errors.Join(errs...)
}

// pciCfgAccess is the BAR access the pci_cfg capability describes, if it
// is one the transport performs (1, 2 or 4 bytes, aligned).
func (t *Transport) pciCfgAccess() (bar int, off uint64, n int, ok bool) {
	bar = int(t.cfg.Bytes(t.pciCap+capBARField, 1)[0])
	off = uint64(t.cfg.Uint32(t.pciCap + capOffsetField))
	n = int(t.cfg.Uint32(t.pciCap + capLengthField))
	if (n != 1 && n != 2 && n != 4) || off%uint64(n) != 0 {
		return 0, 0, 0, false
	}
	return bar, off, n, true
}

// BARMapped implements pcibus.Device: the queues' notification addresses
// follow the BAR.
func (t *Transport) BARMapped(bar int, addr uint64, mapped bool) error {
	if bar != BARIndex {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.unregisterNotify()
	if mapped && !t.closed && t.opts.Notify != nil {
		err = errors.Join(err, t.registerNotify(addr+NotifyOffset))
	}
	return err
}

func (t *Transport) registerNotify(base uint64) error {
	var errs []error
	for _, q := range t.queues {
		a := base + uint64(q.index)*NotifyOffMultiplier
		if err := t.opts.Notify.RegisterNotify(a, q.kick); err != nil {
			// The MMIO exit path still delivers this queue's kicks.
			errs = append(errs, fmt.Errorf("queue %d notify at %#x: %w", q.index, a, err))
			continue
		}
		t.registered = append(t.registered, registration{addr: a, q: q})
	}
	return errors.Join(errs...)
}

func (t *Transport) unregisterNotify() error {
	var errs []error
	for _, r := range t.registered {
		if err := t.opts.Notify.UnregisterNotify(r.addr, r.q.kick); err != nil {
			errs = append(errs, fmt.Errorf("queue %d notify at %#x: %w", r.q.index, r.addr, err))
		}
	}
	t.registered = nil
	return errors.Join(errs...)
}

// ReadBAR implements pcibus.Device.
func (t *Transport) ReadBAR(bar int, offset uint64, data []byte) error {
	if bar != BARIndex || !validWidth(len(data)) || offset >= BARSize || uint64(len(data)) > BARSize-offset {
		clear(data)
		return fmt.Errorf("read BAR %d + %#x, %d bytes: %w", bar, offset, len(data), ErrBadAccess)
	}
	switch {
	case offset < CommonOffset+regionSize:
		return t.readCommon(offset-CommonOffset, data)
	case offset < ISROffset+regionSize:
		clear(data)
		if offset == ISROffset {
			// Reading the ISR acknowledges it.
			data[0] = byte(t.isr.Swap(0))
		}
		return nil
	case offset < DeviceOffset+regionSize:
		t.mu.Lock()
		defer t.mu.Unlock()
		if err := t.dev.ReadConfig(offset-DeviceOffset, data); err != nil {
			clear(data)
			return err
		}
		return nil
	case offset < NotifyOffset+regionSize:
		clear(data)
		return nil
	case offset < MSIXTableOffset+msixTableRegion:
		if offset-MSIXTableOffset < t.msix.TableSize() {
			return t.msix.ReadTable(offset-MSIXTableOffset, data)
		}
	case offset-MSIXPBAOffset < t.msix.PBASize():
		return t.msix.ReadPBA(offset-MSIXPBAOffset, data)
	}
	clear(data)
	return nil
}

// WriteBAR implements pcibus.Device.
func (t *Transport) WriteBAR(bar int, offset uint64, data []byte) error {
	if bar != BARIndex || !validWidth(len(data)) || offset >= BARSize || uint64(len(data)) > BARSize-offset {
		return fmt.Errorf("write BAR %d + %#x, %d bytes: %w", bar, offset, len(data), ErrBadAccess)
	}
	switch {
	case offset < CommonOffset+regionSize:
		return t.writeCommon(offset-CommonOffset, data)
	case offset < ISROffset+regionSize:
		return nil // read-only
	case offset < DeviceOffset+regionSize:
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.dev.WriteConfig(offset-DeviceOffset, data)
	case offset < NotifyOffset+regionSize:
		return t.notify(offset - NotifyOffset)
	case offset < MSIXTableOffset+msixTableRegion:
		if offset-MSIXTableOffset < t.msix.TableSize() {
			return t.msix.WriteTable(offset-MSIXTableOffset, data)
		}
	case offset-MSIXPBAOffset < t.msix.PBASize():
		return t.msix.WritePBA(offset-MSIXPBAOffset, data)
	}
	return nil
}

func validWidth(n int) bool { return n == 1 || n == 2 || n == 4 || n == 8 }

// notify is a queue notification that arrived as an MMIO exit (no
// ioeventfd there): it signals the same kick eventfd. The value written
// is the queue index, which the address already says; without
// VIRTIO_F_NOTIFICATION_DATA nothing else is in it.
func (t *Transport) notify(offset uint64) error {
	i := offset / NotifyOffMultiplier
	if offset%NotifyOffMultiplier != 0 || i >= uint64(len(t.queues)) {
		return fmt.Errorf("notify at %#x: no such queue: %w", offset, ErrBadAccess)
	}
	t.notifyExits.Add(1)
	t.kickMu.RLock()
	defer t.kickMu.RUnlock()
	if t.kicksClosed {
		return nil
	}
	return t.queues[i].kick.Signal()
}

// NotifyExits counts the queue notifications that reached the transport
// as BAR writes (MMIO exits) rather than through a registered ioeventfd:
// 0 on KVM says the ioeventfds are where the guest writes.
func (t *Transport) NotifyExits() uint64 { return t.notifyExits.Load() }

// commonField finds the register holding common-configuration byte o.
func commonField(o uint64) (start, size uint64, ok bool) {
	switch {
	case o < regConfigMSIXVector:
		return o &^ 3, 4, true
	case o < regDeviceStatus:
		return o &^ 1, 2, true
	case o < regQueueSelect:
		return o, 1, true
	case o < regQueueDesc:
		return o &^ 1, 2, true
	case o < regQueueNotifConfData:
		return o &^ 7, 8, true
	case o < commonCfgLen:
		return o &^ 1, 2, true
	}
	return 0, 0, false
}

// readCommon serves a read inside one register of the common
// configuration (a narrower read gets the register's bytes at its offset;
// reads past the structure return 0).
func (t *Transport) readCommon(o uint64, data []byte) error {
	clear(data)
	start, size, ok := commonField(o)
	if !ok {
		return nil
	}
	if o+uint64(len(data)) > start+size {
		return fmt.Errorf("common config: %d bytes at %#x cross a register: %w", len(data), o, ErrBadAccess)
	}
	t.mu.Lock()
	v := t.commonRegister(start)
	t.mu.Unlock()
	putBytes(data, v>>(8*(o-start)))
	return nil
}

// writeCommon serves a write inside one register; a narrower write
// replaces those bytes of the register (how 64-bit addresses arrive as
// two dwords).
func (t *Transport) writeCommon(o uint64, data []byte) error {
	start, size, ok := commonField(o)
	if !ok {
		return nil
	}
	if o+uint64(len(data)) > start+size {
		return fmt.Errorf("common config: %d bytes at %#x cross a register: %w", len(data), o, ErrBadAccess)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v := getBytes(data)
	if uint64(len(data)) < size {
		shift := 8 * (o - start)
		mask := (uint64(1)<<(8*len(data)) - 1) << shift
		v = t.commonRegister(start)&^mask | v<<shift
	}
	return t.setCommonRegister(start, v)
}

func putBytes(data []byte, v uint64) {
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
}

func getBytes(data []byte) uint64 {
	var v uint64
	for i := len(data) - 1; i >= 0; i-- {
		v = v<<8 | uint64(data[i])
	}
	return v
}

// selected is the queue queue_select names, nil if none. Call with mu
// held.
func (t *Transport) selected() *queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil
}

// commonRegister reads register r. Call with mu held.
func (t *Transport) commonRegister(r uint64) uint64 {
	switch r {
	case regDeviceFeatureSelect:
		return uint64(t.deviceFeatSel)
	case regDeviceFeature:
		return featureWord(t.offered, t.deviceFeatSel)
	case regDriverFeatureSelect:
		return uint64(t.driverFeatSel)
	case regDriverFeature:
		return featureWord(t.driverFeatures, t.driverFeatSel)
	case regConfigMSIXVector:
		return uint64(t.configVector.Load())
	case regNumQueues:
		return uint64(len(t.queues))
	case regDeviceStatus:
		return uint64(t.status)
	case regConfigGeneration:
		return uint64(uint8(t.configGen.Load()))
	case regQueueSelect:
		return uint64(t.queueSel)
	}
	q := t.selected()
	if q == nil {
		// A queue that does not exist: size 0 says so.
		return 0
	}
	switch r {
	case regQueueSize:
		return uint64(q.size)
	case regQueueMSIXVector:
		return uint64(q.vector.Load())
	case regQueueEnable:
		if q.enabled {
			return 1
		}
		return 0
	case regQueueNotifyOff:
		return uint64(q.index)
	case regQueueDesc:
		return q.desc
	case regQueueDriver:
		return q.driver
	case regQueueDevice:
		return q.device
	}
	return 0 // queue_notif_config_data, queue_reset: features not offered
}

func featureWord(features uint64, sel uint32) uint64 {
	if sel > 1 {
		return 0
	}
	return uint64(uint32(features >> (32 * sel)))
}

// setCommonRegister writes register r. Call with mu held.
func (t *Transport) setCommonRegister(r, v uint64) error {
	switch r {
	case regDeviceFeatureSelect:
		t.deviceFeatSel = uint32(v)
	case regDriverFeatureSelect:
		t.driverFeatSel = uint32(v)
	case regDriverFeature:
		// Features are fixed once FEATURES_OK was accepted.
		if t.status&virtio.StatusFeaturesOK == 0 && t.driverFeatSel <= 1 {
			shift := 32 * t.driverFeatSel
			t.driverFeatures = t.driverFeatures&^(0xffffffff<<shift) | uint64(uint32(v))<<shift
		}
	case regConfigMSIXVector:
		t.configVector.Store(t.vectorOrNone(v))
	case regDeviceStatus:
		return t.setStatus(uint8(v))
	case regQueueSelect:
		t.queueSel = uint16(v)
	case regDeviceFeature, regNumQueues, regConfigGeneration, regQueueNotifyOff:
		// read-only
	default:
		return t.setQueueRegister(r, v)
	}
	return nil
}

// setQueueRegister writes a register of the selected queue. A queue's
// ring is fixed once it is enabled or the device runs. Call with mu held.
func (t *Transport) setQueueRegister(r, v uint64) error {
	q := t.selected()
	if q == nil {
		return nil
	}
	if r == regQueueMSIXVector {
		q.vector.Store(t.vectorOrNone(v))
		return nil
	}
	if q.enabled || t.active {
		return nil
	}
	switch r {
	case regQueueSize:
		// NewQueue checks the power of two when the device starts.
		if v > 0 && v <= uint64(q.max) {
			q.size = uint16(v)
		}
	case regQueueEnable:
		// Writing 0 is not the driver's to do (queue_reset is); ignored.
		q.enabled = v == 1
	case regQueueDesc:
		q.desc = v
	case regQueueDriver:
		q.driver = v
	case regQueueDevice:
		q.device = v
	}
	return nil
}

// vectorOrNone is the vector a driver's choice maps to: NO_VECTOR for
// one beyond the table, which the driver reads back as refusal.
func (t *Transport) vectorOrNone(v uint64) uint32 {
	if v < uint64(t.msix.Vectors()) {
		return uint32(v)
	}
	return NoVector
}

// setStatus is a write of the device status. Call with mu held.
func (t *Transport) setStatus(s uint8) error {
	if s == 0 {
		return t.reset()
	}
	old := t.status
	if s&virtio.StatusFeaturesOK != 0 && old&virtio.StatusFeaturesOK == 0 && !t.featuresAcceptable() {
		// The driver reads status back and sees its features refused.
		s &^= virtio.StatusFeaturesOK
	}
	s |= old & virtio.StatusDeviceNeedsReset
	t.status = s
	if s&virtio.StatusDriverOK == 0 || t.active || s&virtio.StatusDeviceNeedsReset != 0 {
		return nil
	}
	if err := t.activate(); err != nil {
		t.status |= virtio.StatusDeviceNeedsReset
		return errors.Join(err, t.raise(t.configVector.Load(), isrConfig))
	}
	return nil
}

// featuresAcceptable: the driver took a subset of what was offered,
// including VERSION_1 (this transport has no legacy interface).
func (t *Transport) featuresAcceptable() bool {
	return t.driverFeatures&^t.offered == 0 && t.driverFeatures&virtio.FeatureVersion1 != 0
}

// activate starts the device on the enabled queues. Call with mu held.
func (t *Transport) activate() error {
	typ := t.dev.Type()
	if t.status&virtio.StatusFeaturesOK == 0 {
		return fmt.Errorf("virtio-pci %v: DRIVER_OK without FEATURES_OK: %w", typ, ErrActivate)
	}
	a := virtio.Activation{
		Memory:          t.opts.Memory,
		Features:        t.driverFeatures,
		Queues:          make([]virtio.ActiveQueue, len(t.queues)),
		ConfigInterrupt: configInterrupt{t},
	}
	for i, q := range t.queues {
		if !q.enabled {
			continue
		}
		vq, err := virtio.NewQueue(t.opts.Memory, virtio.QueueConfig{
			Size: q.size, DescAddr: q.desc, AvailAddr: q.driver, UsedAddr: q.device,
		}, t.driverFeatures, 0)
		if err != nil {
			return fmt.Errorf("virtio-pci %v: queue %d: %w: %w", typ, i, ErrActivate, err)
		}
		// A kick from before DRIVER_OK means nothing; the device looks at
		// the ring when it starts anyway.
		if _, err := q.kick.Drain(); err != nil {
			return fmt.Errorf("virtio-pci %v: queue %d: %w: %w", typ, i, ErrActivate, err)
		}
		a.Queues[i] = virtio.ActiveQueue{Queue: vq, Kick: q.kick, Interrupt: queueInterrupt{t, q}}
	}
	if err := t.dev.Activate(a); err != nil {
		return fmt.Errorf("virtio-pci %v: %w: %w", typ, ErrActivate, err)
	}
	t.active = true
	return nil
}

// reset is the driver writing 0 to the status: the device stops and
// everything the driver set up is forgotten. Call with mu held.
func (t *Transport) reset() error {
	var err error
	if t.active {
		err = t.dev.Reset()
		if err != nil {
			err = fmt.Errorf("virtio-pci %v: reset: %w", t.dev.Type(), err)
		}
		t.active = false
	}
	t.deviceFeatSel, t.driverFeatSel, t.driverFeatures = 0, 0, 0
	t.status, t.queueSel = 0, 0
	t.configVector.Store(NoVector)
	t.isr.Store(0)
	for _, q := range t.queues {
		q.reset()
	}
	return err
}

// raise sets isrBit and raises vector (nothing for NO_VECTOR). It runs on
// the device's goroutines and must not take mu.
func (t *Transport) raise(vector uint32, isrBit uint32) error {
	t.isr.Or(isrBit)
	if vector == NoVector {
		return nil
	}
	return t.msix.Notify(int(vector))
}

// queueInterrupt raises a queue's vector.
type queueInterrupt struct {
	t *Transport
	q *queue
}

func (i queueInterrupt) Trigger() error { return i.t.raise(i.q.vector.Load(), isrQueue) }

// configInterrupt announces a configuration change: the generation moves
// first, so a driver reading the configuration after the interrupt sees
// a new one.
type configInterrupt struct{ t *Transport }

func (i configInterrupt) Trigger() error {
	i.t.configGen.Add(1)
	return i.t.raise(i.t.configVector.Load(), isrConfig)
}

// Close resets the device (stopping its goroutines, which write guest
// memory: call Close before the memory goes), unregisters the
// notification addresses and releases the kicks and MSI-X routes. It does
// not close the device.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.active {
		errs = append(errs, t.dev.Reset())
		t.active = false
	}
	errs = append(errs, t.unregisterNotify())
	errs = append(errs, t.msix.Close())
	errs = append(errs, t.closeKicks())
	return errors.Join(errs...)
}

func (t *Transport) closeKicks() error {
	t.kickMu.Lock()
	defer t.kickMu.Unlock()
	t.kicksClosed = true
	var errs []error
	for _, q := range t.queues {
		errs = append(errs, q.kick.Close())
	}
	return errors.Join(errs...)
}

var _ pcibus.Device = (*Transport)(nil)
