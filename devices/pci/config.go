// Package pci is wisp's PCI bus 0: a host bridge that answers
// configuration cycles through the PC's type-1 mechanism (ports
// 0xcf8/0xcfc) and through ECAM, configuration spaces with the standard
// header rules (read-only and writable bits, BAR sizing, capability lists),
// BARs the guest may move around, a BAR allocator and MSI-X. Devices never
// see KVM: interrupts leave through an MSIRouter the backend implements.
//
// A guest is hostile: every offset, width and value it hands over is
// checked, and a bad access is an error for that access (a read returns
// all-ones or zeros as hardware would), never a panic.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes of a function's configuration space.
const (
	// ConfigSize is a conventional PCI function's configuration space.
	ConfigSize = 256
	// ExtendedConfigSize is a PCI Express function's, reachable through
	// ECAM only.
	ExtendedConfigSize = 4096
)

// Registers of a type 0 configuration header (PCI Local Bus 3.0, 6.1).
const (
	RegVendorID          = 0x00
	RegDeviceID          = 0x02
	RegCommand           = 0x04
	RegStatus            = 0x06
	RegRevision          = 0x08
	RegClass             = 0x09 // 3 bytes: programming interface, subclass, base class
	RegCacheLineSize     = 0x0c
	RegLatencyTimer      = 0x0d
	RegHeaderType        = 0x0e
	RegBAR0              = 0x10
	RegSubsystemVendorID = 0x2c
	RegSubsystemID       = 0x2e
	RegROM               = 0x30
	RegCapabilities      = 0x34
	RegInterruptLine     = 0x3c
	RegInterruptPin      = 0x3d

	// firstCapability is where capabilities may start: right after the
	// header.
	firstCapability = 0x40
)

// Command register bits.
const (
	CommandIO          uint16 = 1 << 0
	CommandMemory      uint16 = 1 << 1
	CommandBusMaster   uint16 = 1 << 2
	CommandParity      uint16 = 1 << 6
	CommandSERR        uint16 = 1 << 8
	CommandINTxDisable uint16 = 1 << 10
)

// Status register bits.
const (
	StatusCapList uint16 = 1 << 4
	// statusErrors are the write-1-to-clear error bits: master data
	// parity error, signalled/received target abort, received master
	// abort, signalled system error, detected parity error.
	statusErrors uint16 = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// Capability IDs.
const (
	CapVendor uint8 = 0x09
	CapMSIX   uint8 = 0x11
)

// NumBARs is how many BARs a type 0 header has.
const NumBARs = 6

// BAR register low bits.
const (
	barIO         = 1 << 0
	barMem64      = 2 << 1
	barPrefetch   = 1 << 3
	barMemFlags   = 0xf
	barIOFlags    = 0x3
	minMemBARSize = 16
	minIOBARSize  = 4
	maxIOBARSize  = 256
)

// Errors; test with errors.Is.
var (
	// ErrBadAccess: a configuration access of a width or at an offset
	// the bus does not serve (not 1, 2 or 4 bytes, crossing a dword, past
	// the configuration space).
	ErrBadAccess = errors.New("pci: invalid configuration access")
	// ErrLayout: a device's configuration layout is impossible (BAR size
	// not a power of two, capabilities that do not fit ...). A programming
	// error in the VMM, not the guest's doing.
	ErrLayout = errors.New("pci: invalid configuration layout")
	// ErrBusFull: no free slot on bus 0.
	ErrBusFull = errors.New("pci: no free slot on bus 0")
	// ErrNoSpace: the allocator's window has no room for a BAR.
	ErrNoSpace = errors.New("pci: no room in the address window")
	// ErrNoVector: an MSI-X vector number beyond the table.
	ErrNoVector = errors.New("pci: no such MSI-X vector")
)

// Header is what identifies a function.
type Header struct {
	VendorID, DeviceID uint16
	// Class is the 24-bit class code: base class << 16 | subclass << 8 |
	// programming interface (0x020000 is an Ethernet controller).
	Class    uint32
	Revision uint8
	// SubsystemVendorID and SubsystemID identify the board.
	SubsystemVendorID, SubsystemID uint16
	// Extended makes the configuration space 4 KiB (PCI Express); the
	// guest reaches bytes past 256 through ECAM only.
	Extended bool
}

// BARKind says what a BAR decodes.
type BARKind uint8

// BAR kinds.
const (
	BARMem32 BARKind = iota + 1 // 32-bit memory, below 4 GiB
	BARMem64                    // 64-bit memory; takes two BAR registers
	BARIO                       // port I/O
)

func (k BARKind) String() string {
	switch k {
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	case BARIO:
		return "io"
	}
	return fmt.Sprintf("BARKind(%d)", uint8(k))
}

// BAR describes one base address register.
type BAR struct {
	Kind BARKind
	// Size is a power of two: at least 16 bytes for memory, 4 to 256
	// for I/O.
	Size         uint64
	Prefetchable bool
}

// IsMemory says whether b decodes memory (rather than ports).
func (b BAR) IsMemory() bool { return b.Kind == BARMem32 || b.Kind == BARMem64 }

// Config is one function's configuration space: its bytes, which bits the
// guest may write (wmask) and which it clears by writing 1 (w1c), its BARs
// and its capability list.
//
// A Config is not safe for concurrent use. Guest accesses reach it through
// the Bus, which serialises them; a device changes it only inside its
// ReadConfig and WriteConfig (called by the Bus) or before it is added.
type Config struct {
	data, wmask, w1c []byte
	bars             [NumBARs]BAR
	lastCap          int // offset of the last capability, 0 for none
	nextCap          int // where the next capability goes
}

// NewConfig lays out a type 0 header for h. The command register's bus
// master bit is writable; memory and I/O decode become writable with the
// first BAR of that kind. The interrupt pin is 0 (no INTx): wisp's
// functions interrupt through MSI-X.
func NewConfig(h Header) *Config {
	size := ConfigSize
	if h.Extended {
		size = ExtendedConfigSize
	}
	c := &Config{
		data:    make([]byte, size),
		wmask:   make([]byte, size),
		w1c:     make([]byte, size),
		nextCap: firstCapability,
	}
	le := binary.LittleEndian
	le.PutUint16(c.data[RegVendorID:], h.VendorID)
	le.PutUint16(c.data[RegDeviceID:], h.DeviceID)
	c.data[RegRevision] = h.Revision
	c.data[RegClass] = byte(h.Class)
	c.data[RegClass+1] = byte(h.Class >> 8)
	c.data[RegClass+2] = byte(h.Class >> 16)
	le.PutUint16(c.data[RegSubsystemVendorID:], h.SubsystemVendorID)
	le.PutUint16(c.data[RegSubsystemID:], h.SubsystemID)
	le.PutUint16(c.wmask[RegCommand:], CommandBusMaster|CommandParity|CommandSERR|CommandINTxDisable)
	le.PutUint16(c.w1c[RegStatus:], statusErrors)
	c.wmask[RegCacheLineSize] = 0xff
	c.wmask[RegInterruptLine] = 0xff
	return c
}

// Size is 256 or 4096.
func (c *Config) Size() int { return len(c.data) }

// AddBAR declares BAR i. Its address starts at 0; the Bus assigns one when
// the device is added. A 64-bit BAR also takes register i+1.
func (c *Config) AddBAR(i int, b BAR) error {
	if i < 0 || i >= NumBARs || (b.Kind == BARMem64 && i+1 >= NumBARs) {
		return fmt.Errorf("BAR %d (%v): index out of range: %w", i, b.Kind, ErrLayout)
	}
	if c.bars[i].Kind != 0 || (i > 0 && c.bars[i-1].Kind == BARMem64) || (b.Kind == BARMem64 && c.bars[i+1].Kind != 0) {
		return fmt.Errorf("BAR %d: register taken: %w", i, ErrLayout)
	}
	lo, hi := uint64(minMemBARSize), uint64(1)<<31
	switch b.Kind {
	case BARMem32:
	case BARMem64:
		hi = 1 << 62
	case BARIO:
		lo, hi = minIOBARSize, maxIOBARSize
		if b.Prefetchable {
			return fmt.Errorf("BAR %d: an I/O BAR cannot be prefetchable: %w", i, ErrLayout)
		}
	default:
		return fmt.Errorf("BAR %d: kind %v: %w", i, b.Kind, ErrLayout)
	}
	if b.Size < lo || b.Size > hi || b.Size&(b.Size-1) != 0 {
		return fmt.Errorf("BAR %d (%v): size %#x: want a power of two in [%#x, %#x]: %w", i, b.Kind, b.Size, lo, hi, ErrLayout)
	}
	le := binary.LittleEndian
	reg := RegBAR0 + 4*i
	mask := ^(b.Size - 1)
	var flags uint32
	switch b.Kind {
	case BARIO:
		flags = barIO
		le.PutUint32(c.wmask[reg:], uint32(mask)&^barIOFlags)
		c.setCommandWritable(CommandIO)
	case BARMem64:
		flags = barMem64
		le.PutUint32(c.wmask[reg:], uint32(mask)&^barMemFlags)
		le.PutUint32(c.wmask[reg+4:], uint32(mask>>32))
		c.setCommandWritable(CommandMemory)
	case BARMem32:
		le.PutUint32(c.wmask[reg:], uint32(mask)&^barMemFlags)
		c.setCommandWritable(CommandMemory)
	}
	if b.Prefetchable {
		flags |= barPrefetch
	}
	le.PutUint32(c.data[reg:], flags)
	c.bars[i] = b
	return nil
}

func (c *Config) setCommandWritable(bits uint16) {
	le := binary.LittleEndian
	le.PutUint16(c.wmask[RegCommand:], le.Uint16(c.wmask[RegCommand:])|bits)
}

// BAR returns BAR i's declaration; ok is false for a register that holds
// no BAR (unused, or the upper half of a 64-bit one).
func (c *Config) BAR(i int) (b BAR, ok bool) {
	if i < 0 || i >= NumBARs || c.bars[i].Kind == 0 {
		return BAR{}, false
	}
	return c.bars[i], true
}

// BARAddress is the address BAR i holds now (whatever the guest wrote,
// sizing patterns included).
func (c *Config) BARAddress(i int) uint64 {
	b, ok := c.BAR(i)
	if !ok {
		return 0
	}
	le := binary.LittleEndian
	reg := RegBAR0 + 4*i
	lo := le.Uint32(c.data[reg:])
	switch b.Kind {
	case BARIO:
		return uint64(lo &^ barIOFlags)
	case BARMem64:
		return uint64(lo&^barMemFlags) | uint64(le.Uint32(c.data[reg+4:]))<<32
	}
	return uint64(lo &^ barMemFlags)
}

// SetBARAddress programs BAR i with addr, as firmware does; addr must be
// aligned to the BAR's size and fit its kind.
func (c *Config) SetBARAddress(i int, addr uint64) error {
	b, ok := c.BAR(i)
	if !ok {
		return fmt.Errorf("BAR %d: not declared: %w", i, ErrLayout)
	}
	if addr&(b.Size-1) != 0 || (b.Kind != BARMem64 && addr+b.Size > 1<<32) {
		return fmt.Errorf("BAR %d (%v, %#x bytes) at %#x: misaligned or out of reach: %w", i, b.Kind, b.Size, addr, ErrLayout)
	}
	le := binary.LittleEndian
	reg := RegBAR0 + 4*i
	flags := le.Uint32(c.data[reg:]) & barMemFlags
	if b.Kind == BARIO {
		flags &= barIOFlags
	}
	le.PutUint32(c.data[reg:], uint32(addr)|flags)
	if b.Kind == BARMem64 {
		le.PutUint32(c.data[reg+4:], uint32(addr>>32))
	}
	return nil
}

// Command is the command register.
func (c *Config) Command() uint16 { return binary.LittleEndian.Uint16(c.data[RegCommand:]) }

// AddCapability appends a capability with ID id and body (the bytes after
// the ID and next pointer) to the list, dword aligned in the first 256
// bytes, and returns its offset. Its bytes start read-only; make some
// writable with SetWritable.
func (c *Config) AddCapability(id uint8, body []byte) (int, error) {
	off := c.nextCap
	n := 2 + len(body)
	if off+n > ConfigSize {
		return 0, fmt.Errorf("capability %#x (%d bytes) at %#x: past the first 256 bytes: %w", id, n, off, ErrLayout)
	}
	c.data[off] = id
	c.data[off+1] = 0
	copy(c.data[off+2:], body)
	if c.lastCap == 0 {
		c.data[RegCapabilities] = byte(off)
		le := binary.LittleEndian
		le.PutUint16(c.data[RegStatus:], le.Uint16(c.data[RegStatus:])|StatusCapList)
	} else {
		c.data[c.lastCap+1] = byte(off)
	}
	c.lastCap = off
	c.nextCap = (off + n + 3) &^ 3
	return off, nil
}

// SetWritable makes the bits set in mask, at offset onwards, writable by
// the guest (and the others read-only).
func (c *Config) SetWritable(offset int, mask []byte) error {
	if offset < 0 || offset+len(mask) > len(c.data) {
		return fmt.Errorf("writable mask [%#x, +%d): %w", offset, len(mask), ErrLayout)
	}
	copy(c.wmask[offset:], mask)
	return nil
}

// checkAccess accepts 1, 2 or 4 bytes inside one dword; offsets past the
// space are fine (they read as 0) up to ExtendedConfigSize.
func checkAccess(offset, n int) error {
	if (n != 1 && n != 2 && n != 4) || offset < 0 || offset+n > ExtendedConfigSize || offset/4 != (offset+n-1)/4 {
		return fmt.Errorf("%d bytes at %#x: %w", n, offset, ErrBadAccess)
	}
	return nil
}

// Read serves a guest read of len(data) bytes at offset. Bytes past the
// space (a conventional function's extended space) read as 0.
func (c *Config) Read(offset int, data []byte) error {
	if err := checkAccess(offset, len(data)); err != nil {
		clear(data)
		return err
	}
	for i := range data {
		if o := offset + i; o < len(c.data) {
			data[i] = c.data[o]
		} else {
			data[i] = 0
		}
	}
	return nil
}

// Write serves a guest write of data at offset: writable bits take the
// new value, write-1-to-clear bits written as 1 clear, the rest stay.
func (c *Config) Write(offset int, data []byte) error {
	if err := checkAccess(offset, len(data)); err != nil {
		return err
	}
	for i, v := range data {
		o := offset + i
		if o >= len(c.data) {
			break
		}
		c.data[o] = (c.data[o] &^ c.wmask[o]) | (v & c.wmask[o])
		c.data[o] &^= v & c.w1c[o]
	}
	return nil
}

// Bytes returns n bytes at offset for the device's own use (nil when out
// of range).
func (c *Config) Bytes(offset, n int) []byte {
	if offset < 0 || n < 0 || offset+n > len(c.data) {
		return nil
	}
	return c.data[offset : offset+n : offset+n]
}

// Uint16 and Uint32 read the space for the device's own use (0 when out
// of range).
func (c *Config) Uint16(offset int) uint16 {
	if b := c.Bytes(offset, 2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

// Uint32 reads a little-endian dword at offset.
func (c *Config) Uint32(offset int) uint32 {
	if b := c.Bytes(offset, 4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// Put stores data at offset, ignoring the masks: for the device's own
// registers (a data window it fills on read). It fails out of range.
func (c *Config) Put(offset int, data []byte) error {
	b := c.Bytes(offset, len(data))
	if b == nil {
		return fmt.Errorf("put [%#x, +%d): %w", offset, len(data), ErrLayout)
	}
	copy(b, data)
	return nil
}

// Overlaps says whether the access [offset, offset+n) touches
// [start, start+size).
func Overlaps(offset, n, start, size int) bool {
	return offset < start+size && start < offset+n
}
