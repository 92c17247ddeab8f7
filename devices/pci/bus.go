package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/wisp-vmm/wisp/devices"
)

// Device is one PCI function (function 0 of its slot).
//
// The Bus calls ReadConfig, WriteConfig and BARMapped one at a time, with
// its lock held: they must not call back into the Bus. ReadBAR and
// WriteBAR come straight from vCPUs, concurrently, and the device locks
// what it needs.
type Device interface {
	// Config is the function's configuration space; the Bus reads BAR
	// addresses and the command register from it.
	Config() *Config
	// ReadConfig and WriteConfig serve a guest configuration access of 1,
	// 2 or 4 bytes within one dword. Most devices hand them to
	// Config().Read and Config().Write and react to what changed.
	ReadConfig(offset int, data []byte) error
	WriteConfig(offset int, data []byte) error
	// ReadBAR and WriteBAR serve an access at offset into BAR bar's
	// region.
	ReadBAR(bar int, offset uint64, data []byte) error
	WriteBAR(bar int, offset uint64, data []byte) error
	// BARMapped tells the device that BAR bar now decodes at addr
	// (mapped) or has stopped decoding (the guest turned decode off or
	// is moving it), so it can move what it registered at the old
	// address (ioeventfds).
	BARMapped(bar int, addr uint64, mapped bool) error
}

// Slots on bus 0.
const (
	// NumSlots is how many device numbers a bus has.
	NumSlots = 32
	// HostBridgeSlot holds the host bridge; devices start after it.
	HostBridgeSlot = 0
)

// The host bridge's identity: Red Hat's "QEMU PCIe host bridge", a plain
// host bridge every OS knows needs no driver.
const (
	hostBridgeVendor = 0x1b36
	hostBridgeDevice = 0x0008
	classHostBridge  = 0x060000
)

// x86 port space ends here; an I/O BAR beyond it never decodes.
const ioSpaceEnd = 1 << 16

// maxPhysAddr bounds where a 64-bit BAR may decode: x86's largest
// physical address width is 52 bits.
const maxPhysAddr = 1 << 52

// mapping is where a BAR currently decodes.
type mapping struct {
	addr   uint64
	mapped bool
}

type slot struct {
	dev  Device
	bars [NumBARs]mapping
}

// Bus is PCI bus 0 behind the host bridge. It routes configuration
// accesses (type-1 ports and ECAM) to the functions and keeps each BAR on
// the port-I/O or MMIO bus where the guest put it, while the function's
// decode is enabled.
type Bus struct {
	pio, mmio     *devices.Bus
	memory, ports *Allocator

	mu    sync.Mutex
	slots [NumSlots]*slot
	// address is the type-1 CONFIG_ADDRESS register.
	address uint32
}

// NewBus makes bus 0 with a host bridge at 00:00.0. BARs go on pio and
// mmio; memory and ports allocate their first addresses (either may be
// nil: BARs of that kind then start at 0, unassigned, for the guest to
// place).
func NewBus(pio, mmio *devices.Bus, memory, ports *Allocator) *Bus {
	b := &Bus{pio: pio, mmio: mmio, memory: memory, ports: ports}
	host := NewConfig(Header{VendorID: hostBridgeVendor, DeviceID: hostBridgeDevice, Class: classHostBridge})
	b.slots[HostBridgeSlot] = &slot{dev: plainDevice{host}}
	return b
}

// Add puts dev in the first free slot, assigns its BARs from the
// allocators (decode stays off until the guest turns it on, as after
// firmware) and returns the slot number.
func (b *Bus) Add(dev Device) (int, error) {
	if dev == nil || dev.Config() == nil {
		return 0, fmt.Errorf("add a device without a configuration space: %w", ErrLayout)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := -1
	for i := range b.slots {
		if b.slots[i] == nil {
			n = i
			break
		}
	}
	if n < 0 {
		return 0, ErrBusFull
	}
	cfg := dev.Config()
	for i := range NumBARs {
		bar, ok := cfg.BAR(i)
		if !ok {
			continue
		}
		alloc := b.memory
		if bar.Kind == BARIO {
			alloc = b.ports
		}
		if alloc == nil {
			continue
		}
		addr, err := alloc.Alloc(bar.Size, bar.Size)
		if err != nil {
			return 0, fmt.Errorf("slot %d BAR %d (%v, %#x bytes): %w", n, i, bar.Kind, bar.Size, err)
		}
		if err := cfg.SetBARAddress(i, addr); err != nil {
			return 0, fmt.Errorf("slot %d: %w", n, err)
		}
	}
	s := &slot{dev: dev}
	b.slots[n] = s
	if err := b.remap(s); err != nil {
		b.slots[n] = nil
		return 0, fmt.Errorf("slot %d: %w", n, err)
	}
	return n, nil
}

// ConfigIO is the type-1 configuration mechanism, to be placed on the
// port bus at 0xcf8 for 8 ports: CONFIG_ADDRESS (a dword at 0xcf8) and
// CONFIG_DATA (0xcfc-0xcff, any width within the dword).
func (b *Bus) ConfigIO() devices.Device { return configIO{b} }

// ECAM is PCI Express's memory-mapped configuration space for bus 0, to
// be placed on the MMIO bus for 1 MiB: function devfn's space at
// devfn << 12.
func (b *Bus) ECAM() devices.Device { return ecam{b} }

// Close unmaps every BAR (the devices are their owners' to close).
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range b.slots {
		if s == nil {
			continue
		}
		for i := range s.bars {
			if s.bars[i].mapped {
				errs = append(errs, b.unmap(s, i))
			}
		}
	}
	return errors.Join(errs...)
}

// readConfig serves a read of function devfn's space; absent functions
// read as all-ones (a master abort), which is how a scan finds nothing.
func (b *Bus) readConfig(devfn uint8, offset int, data []byte) error {
	s := b.function(devfn)
	if s == nil {
		fill(data, 0xff)
		return nil
	}
	if err := checkAccess(offset, len(data)); err != nil {
		fill(data, 0xff)
		return fmt.Errorf("%02x.%d: %w", devfn>>3, devfn&7, err)
	}
	if err := s.dev.ReadConfig(offset, data); err != nil {
		return fmt.Errorf("%02x.%d: read config %#x: %w", devfn>>3, devfn&7, offset, err)
	}
	return nil
}

// writeConfig serves a write to function devfn's space and then brings
// its BAR mappings in line with what the guest wrote.
func (b *Bus) writeConfig(devfn uint8, offset int, data []byte) error {
	s := b.function(devfn)
	if s == nil {
		return nil
	}
	if err := checkAccess(offset, len(data)); err != nil {
		return fmt.Errorf("%02x.%d: %w", devfn>>3, devfn&7, err)
	}
	werr := s.dev.WriteConfig(offset, data)
	if werr != nil {
		werr = fmt.Errorf("%02x.%d: write config %#x: %w", devfn>>3, devfn&7, offset, werr)
	}
	if err := b.remap(s); err != nil {
		return errors.Join(werr, fmt.Errorf("%02x.%d: %w", devfn>>3, devfn&7, err))
	}
	return werr
}

// function returns the slot for devfn, nil when nothing is there (only
// function 0 of each slot exists). Call with mu held.
func (b *Bus) function(devfn uint8) *slot {
	if devfn&7 != 0 {
		return nil
	}
	return b.slots[devfn>>3]
}

// decodes says where BAR i of cfg should decode now, if anywhere: decode
// enabled for its kind, and an address that is neither 0 nor a sizing
// pattern reaching the top of its address space.
func decodes(cfg *Config, i int) (uint64, bool) {
	bar, ok := cfg.BAR(i)
	if !ok {
		return 0, false
	}
	cmd := cfg.Command()
	addr := cfg.BARAddress(i)
	var limit uint64
	switch bar.Kind {
	case BARIO:
		if cmd&CommandIO == 0 {
			return 0, false
		}
		limit = ioSpaceEnd
	case BARMem32:
		if cmd&CommandMemory == 0 {
			return 0, false
		}
		limit = 1 << 32
	case BARMem64:
		if cmd&CommandMemory == 0 {
			return 0, false
		}
		limit = maxPhysAddr
	}
	// End strictly below the limit: all-ones written for sizing reads
	// back as the last size-aligned block, which must not decode.
	if addr == 0 || addr >= limit || bar.Size >= limit-addr {
		return 0, false
	}
	return addr, true
}

// remap moves every BAR of s to where its registers say. Call with mu
// held.
func (b *Bus) remap(s *slot) error {
	cfg := s.dev.Config()
	var errs []error
	for i := range NumBARs {
		want, on := decodes(cfg, i)
		cur := s.bars[i]
		if cur.mapped == on && (!on || cur.addr == want) {
			continue
		}
		if cur.mapped {
			errs = append(errs, b.unmap(s, i))
		}
		if on {
			errs = append(errs, b.mapBAR(s, i, want))
		}
	}
	return errors.Join(errs...)
}

func (b *Bus) busFor(cfg *Config, i int) *devices.Bus {
	if bar, _ := cfg.BAR(i); bar.Kind == BARIO {
		return b.pio
	}
	return b.mmio
}

func (b *Bus) mapBAR(s *slot, i int, addr uint64) error {
	cfg := s.dev.Config()
	bar, _ := cfg.BAR(i)
	if err := b.busFor(cfg, i).Insert(barRegion{s.dev, i}, addr, bar.Size); err != nil {
		// Overlapping another device: the BAR stays dark, as the guest
		// asked for something the platform cannot decode.
		return fmt.Errorf("map BAR %d at %#x: %w", i, addr, err)
	}
	s.bars[i] = mapping{addr: addr, mapped: true}
	if err := s.dev.BARMapped(i, addr, true); err != nil {
		return fmt.Errorf("BAR %d mapped at %#x: %w", i, addr, err)
	}
	return nil
}

func (b *Bus) unmap(s *slot, i int) error {
	cfg := s.dev.Config()
	old := s.bars[i].addr
	s.bars[i] = mapping{}
	err := b.busFor(cfg, i).Remove(old)
	if err != nil {
		err = fmt.Errorf("unmap BAR %d at %#x: %w", i, old, err)
	}
	if derr := s.dev.BARMapped(i, old, false); derr != nil {
		err = errors.Join(err, fmt.Errorf("BAR %d unmapped from %#x: %w", i, old, derr))
	}
	return err
}

// barRegion puts one BAR of a device on a devices.Bus.
type barRegion struct {
	dev Device
	bar int
}

func (r barRegion) Read(offset uint64, data []byte) error {
	return r.dev.ReadBAR(r.bar, offset, data)
}

func (r barRegion) Write(offset uint64, data []byte) error {
	return r.dev.WriteBAR(r.bar, offset, data)
}

// Type-1 CONFIG_ADDRESS fields.
const (
	addrEnable   = 1 << 31
	addrWritable = addrEnable | 0xff<<16 | 0xff<<8 | 0xfc // bus, devfn, register
	configData   = 4                                      // CONFIG_DATA's offset from 0xcf8
)

// configIO is ports 0xcf8-0xcff.
type configIO struct{ b *Bus }

func (c configIO) Read(offset uint64, data []byte) error {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case offset == 0 && len(data) == 4:
		binary.LittleEndian.PutUint32(data, b.address)
		return nil
	case offset >= configData && offset+uint64(len(data)) <= configData+4:
		devfn, reg, ok := b.target(int(offset - configData))
		if !ok {
			fill(data, 0xff)
			return nil
		}
		return b.readConfig(devfn, reg, data)
	}
	// Byte and word accesses to 0xcf8-0xcfb are other chipset registers
	// on a PC (0xcf9 is reset control); wisp has none of them.
	fill(data, 0xff)
	return nil
}

func (c configIO) Write(offset uint64, data []byte) error {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case offset == 0 && len(data) == 4:
		b.address = binary.LittleEndian.Uint32(data) & addrWritable
		return nil
	case offset >= configData && offset+uint64(len(data)) <= configData+4:
		devfn, reg, ok := b.target(int(offset - configData))
		if !ok {
			return nil
		}
		return b.writeConfig(devfn, reg, data)
	}
	return nil
}

// target decodes CONFIG_ADDRESS for an access at byte within CONFIG_DATA.
// ok is false when the enable bit is clear or the bus is not 0.
func (b *Bus) target(byteInData int) (devfn uint8, reg int, ok bool) {
	a := b.address
	if a&addrEnable == 0 || (a>>16)&0xff != 0 {
		return 0, 0, false
	}
	return uint8(a >> 8), int(a&0xfc) + byteInData, true
}

// ecam is bus 0's 1 MiB of memory-mapped configuration space.
type ecam struct{ b *Bus }

// ECAM layout: 4 KiB per function, devfn above it.
const (
	ecamFunctionShift = 12
	ecamRegisterMask  = ExtendedConfigSize - 1
	ecamSize          = 1 << 20
)

func ecamDecode(offset uint64) (uint8, int, bool) {
	if offset >= ecamSize {
		return 0, 0, false
	}
	return uint8(offset >> ecamFunctionShift), int(offset & ecamRegisterMask), true
}

func (e ecam) Read(offset uint64, data []byte) error {
	devfn, reg, ok := ecamDecode(offset)
	if !ok {
		fill(data, 0xff)
		return fmt.Errorf("ECAM offset %#x: %w", offset, ErrBadAccess)
	}
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	return e.b.readConfig(devfn, reg, data)
}

func (e ecam) Write(offset uint64, data []byte) error {
	devfn, reg, ok := ecamDecode(offset)
	if !ok {
		return fmt.Errorf("ECAM offset %#x: %w", offset, ErrBadAccess)
	}
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	return e.b.writeConfig(devfn, reg, data)
}

// plainDevice is a function with only a configuration space (the host
// bridge).
type plainDevice struct{ cfg *Config }

func (d plainDevice) Config() *Config                               { return d.cfg }
func (d plainDevice) ReadConfig(offset int, data []byte) error      { return d.cfg.Read(offset, data) }
func (d plainDevice) WriteConfig(offset int, data []byte) error     { return d.cfg.Write(offset, data) }
func (d plainDevice) ReadBAR(int, uint64, []byte) error             { return ErrBadAccess }
func (d plainDevice) WriteBAR(int, uint64, []byte) error            { return ErrBadAccess }
func (d plainDevice) BARMapped(bar int, addr uint64, on bool) error { return nil }

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}
