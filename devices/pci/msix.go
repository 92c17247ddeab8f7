package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// MSIMessage is what a function writes to raise a message-signalled
// interrupt: on x86 an address in the 0xfee00000 page naming the
// destination APIC and data holding the vector.
type MSIMessage struct {
	Address uint64
	Data    uint32
}

// MSIRouter turns MSI messages into interrupts. The KVM backend implements
// it with an eventfd per route, bound by an irqfd to a GSI whose routing
// entry is the message; tests record what was raised.
type MSIRouter interface {
	// NewMSIRoute makes a route that raises msg.
	NewMSIRoute(msg MSIMessage) (MSIRoute, error)
}

// MSIRoute is one message an MSI-X vector raises.
type MSIRoute interface {
	// Update points the route at a new message (the guest reprogrammed
	// the vector).
	Update(msg MSIMessage) error
	// Trigger raises the interrupt once. It is called from device
	// goroutines and must be cheap (an eventfd write).
	Trigger() error
	// Close releases the route.
	Close() error
}

// BARLocation places a structure inside a BAR.
type BARLocation struct {
	BAR    int
	Offset uint32
}

// MSI-X capability layout (PCI Local Bus 3.0, 6.8.2).
const (
	msixCapControl   = 2
	msixCapTable     = 4
	msixCapPBA       = 8
	msixCapBodyLen   = 10
	msixEnable       = 1 << 15
	msixFunctionMask = 1 << 14
	msixEntrySize    = 16
	msixVectorMasked = 1 << 0
	// MaxMSIXVectors is the most vectors one table holds.
	MaxMSIXVectors = 2048
)

type msixVector struct {
	addrLo, addrHi, data, ctrl uint32
	pending                    bool
	route                      MSIRoute   // nil until the vector is first unmasked
	routed                     MSIMessage // what route raises
}

func (v *msixVector) message() MSIMessage {
	return MSIMessage{Address: uint64(v.addrHi)<<32 | uint64(v.addrLo), Data: v.data}
}

func (v *msixVector) masked() bool { return v.ctrl&msixVectorMasked != 0 }

// MSIX is a function's MSI-X capability with its table and pending bit
// array, which live in one of the function's BARs (the device hands
// accesses there to ReadTable/WriteTable and ReadPBA/WritePBA).
//
// Delivery: Notify on an enabled, unmasked vector raises its route at
// once. On a masked vector (its own mask bit or the function mask) it sets
// the vector's pending bit instead, and the interrupt is raised when the
// guest unmasks it, as the spec asks. While MSI-X is disabled the function
// would signal INTx, which wisp's functions do not have: the interrupt is
// dropped (drivers that do not enable MSI-X poll). A vector gets its route
// when it is first unmasked, so only vectors a driver uses take a GSI; the
// route follows the table when the vector is unmasked again after the
// guest rewrote it, and at delivery should the guest have rewritten it
// while unmasked (which the spec leaves undefined).
type MSIX struct {
	router     MSIRouter
	cfg        *Config
	cap        int
	table, pba BARLocation

	mu             sync.Mutex
	enabled        bool
	functionMasked bool
	vectors        []msixVector
	dropped        uint64
	closed         bool // routes released: nothing is raised any more
}

// NewMSIX adds an MSI-X capability with n vectors to cfg, its table and
// pending bit array at table and pba (8-byte aligned, inside declared
// memory BARs, not overlapping). All vectors start masked, MSI-X disabled.
func NewMSIX(cfg *Config, n int, table, pba BARLocation, router MSIRouter) (*MSIX, error) {
	if n < 1 || n > MaxMSIXVectors {
		return nil, fmt.Errorf("MSI-X with %d vectors (want 1..%d): %w", n, MaxMSIXVectors, ErrLayout)
	}
	if router == nil {
		return nil, fmt.Errorf("MSI-X without a router: %w", ErrLayout)
	}
	m := &MSIX{router: router, cfg: cfg, table: table, pba: pba, vectors: make([]msixVector, n)}
	for _, s := range []struct {
		name string
		loc  BARLocation
		size uint64
	}{{"table", table, m.TableSize()}, {"PBA", pba, m.PBASize()}} {
		bar, ok := cfg.BAR(s.loc.BAR)
		if !ok || !bar.IsMemory() || s.loc.Offset%8 != 0 || uint64(s.loc.Offset)+s.size > bar.Size {
			return nil, fmt.Errorf("MSI-X %s at BAR %d + %#x (%#x bytes): not inside a memory BAR or misaligned: %w",
				s.name, s.loc.BAR, s.loc.Offset, s.size, ErrLayout)
		}
	}
	if table.BAR == pba.BAR && uint64(table.Offset) < uint64(pba.Offset)+m.PBASize() && uint64(pba.Offset) < uint64(table.Offset)+m.TableSize() {
		return nil, fmt.Errorf("MSI-X table and PBA overlap: %w", ErrLayout)
	}
	for i := range m.vectors {
		m.vectors[i].ctrl = msixVectorMasked
	}
	body := make([]byte, msixCapBodyLen)
	le := binary.LittleEndian
	le.PutUint16(body[0:], uint16(n-1))
	le.PutUint32(body[2:], table.Offset|uint32(table.BAR))
	le.PutUint32(body[6:], pba.Offset|uint32(pba.BAR))
	off, err := cfg.AddCapability(CapMSIX, body)
	if err != nil {
		return nil, fmt.Errorf("MSI-X: %w", err)
	}
	if err := cfg.SetWritable(off+msixCapControl, []byte{0, byte((msixEnable | msixFunctionMask) >> 8)}); err != nil {
		return nil, fmt.Errorf("MSI-X: %w", err)
	}
	m.cap = off
	return m, nil
}

// Vectors is the table size.
func (m *MSIX) Vectors() int { return len(m.vectors) }

// CapabilityOffset is where the capability sits in the configuration
// space.
func (m *MSIX) CapabilityOffset() int { return m.cap }

// Table and PBA say where the table and pending bit array are.
func (m *MSIX) Table() BARLocation { return m.table }

// PBA says where the pending bit array is.
func (m *MSIX) PBA() BARLocation { return m.pba }

// TableSize is the table's size in bytes.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.vectors)) * msixEntrySize }

// PBASize is the pending bit array's size in bytes (whole qwords).
func (m *MSIX) PBASize() uint64 { return uint64(len(m.vectors)+63) / 64 * 8 }

// ConfigWritten tells m that the guest wrote configuration bytes [offset,
// offset+n): the device calls it from WriteConfig, after Config.Write. A
// change of the enable or function-mask bit takes effect here, raising
// what became deliverable.
func (m *MSIX) ConfigWritten(offset, n int) error {
	if !Overlaps(offset, n, m.cap+msixCapControl, 2) {
		return nil
	}
	ctrl := m.cfg.Uint16(m.cap + msixCapControl)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled = ctrl&msixEnable != 0
	m.functionMasked = ctrl&msixFunctionMask != 0
	var errs []error
	for i := range m.vectors {
		errs = append(errs, m.unmasked(i))
	}
	return errors.Join(errs...)
}

// Enabled says whether the guest enabled MSI-X.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// deliverable says whether vector i may raise its interrupt now. Call
// with mu held.
func (m *MSIX) deliverable(i int) bool {
	return !m.closed && m.enabled && !m.functionMasked && !m.vectors[i].masked()
}

// unmasked brings vector i's route in line with its entry and raises a
// pending interrupt, if the vector is deliverable. Call with mu held.
func (m *MSIX) unmasked(i int) error {
	if !m.deliverable(i) {
		return nil
	}
	v := &m.vectors[i]
	if err := m.sync(v); err != nil {
		return fmt.Errorf("MSI-X vector %d: %w", i, err)
	}
	if v.pending {
		v.pending = false
		if err := v.route.Trigger(); err != nil {
			return fmt.Errorf("MSI-X vector %d: %w", i, err)
		}
	}
	return nil
}

// sync makes v's route raise v's current message. Call with mu held.
func (m *MSIX) sync(v *msixVector) error {
	msg := v.message()
	if v.route == nil {
		r, err := m.router.NewMSIRoute(msg)
		if err != nil {
			return err
		}
		v.route, v.routed = r, msg
		return nil
	}
	if v.routed != msg {
		if err := v.route.Update(msg); err != nil {
			return err
		}
		v.routed = msg
	}
	return nil
}

// Notify raises vector i: now if it is deliverable, when it is unmasked
// if it is masked, never if MSI-X is disabled.
func (m *MSIX) Notify(i int) error {
	if i < 0 || i >= len(m.vectors) {
		return fmt.Errorf("notify vector %d of %d: %w", i, len(m.vectors), ErrNoVector)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := &m.vectors[i]
	switch {
	case m.closed:
		return nil
	case !m.enabled:
		m.dropped++
		return nil
	case m.functionMasked || v.masked():
		v.pending = true
		return nil
	}
	if err := m.sync(v); err != nil {
		return fmt.Errorf("MSI-X vector %d: %w", i, err)
	}
	if err := v.route.Trigger(); err != nil {
		return fmt.Errorf("MSI-X vector %d: %w", i, err)
	}
	return nil
}

// Dropped counts interrupts raised while MSI-X was disabled.
func (m *MSIX) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// checkTableAccess accepts dword and qword accesses, naturally aligned,
// inside size bytes.
func checkTableAccess(what string, offset uint64, n int, size uint64) error {
	if (n != 4 && n != 8) || offset%uint64(n) != 0 || offset >= size || uint64(n) > size-offset {
		return fmt.Errorf("MSI-X %s: %d bytes at %#x: %w", what, n, offset, ErrBadAccess)
	}
	return nil
}

// ReadTable serves a read at offset into the table.
func (m *MSIX) ReadTable(offset uint64, data []byte) error {
	if err := checkTableAccess("table", offset, len(data), m.TableSize()); err != nil {
		clear(data)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < len(data); i += 4 {
		binary.LittleEndian.PutUint32(data[i:], m.tableDword(offset+uint64(i)))
	}
	return nil
}

func (m *MSIX) tableDword(offset uint64) uint32 {
	v := &m.vectors[offset/msixEntrySize]
	switch offset % msixEntrySize {
	case 0:
		return v.addrLo
	case 4:
		return v.addrHi
	case 8:
		return v.data
	}
	return v.ctrl
}

// WriteTable serves a write at offset into the table. Unmasking a vector
// routes it and raises its pending interrupt.
func (m *MSIX) WriteTable(offset uint64, data []byte) error {
	if err := checkTableAccess("table", offset, len(data), m.TableSize()); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i := 0; i < len(data); i += 4 {
		o := offset + uint64(i)
		idx := int(o / msixEntrySize)
		v := &m.vectors[idx]
		val := binary.LittleEndian.Uint32(data[i:])
		switch o % msixEntrySize {
		case 0:
			v.addrLo = val &^ 3 // message addresses are dword aligned
		case 4:
			v.addrHi = val
		case 8:
			v.data = val
		default:
			// Only the mask bit is defined; the rest is reserved, 0.
			v.ctrl = val & msixVectorMasked
			errs = append(errs, m.unmasked(idx))
		}
	}
	return errors.Join(errs...)
}

// ReadPBA serves a read at offset into the pending bit array.
func (m *MSIX) ReadPBA(offset uint64, data []byte) error {
	if err := checkTableAccess("PBA", offset, len(data), m.PBASize()); err != nil {
		clear(data)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(data)
	for b := range len(data) * 8 {
		i := int(offset)*8 + b
		if i < len(m.vectors) && m.vectors[i].pending {
			data[b/8] |= 1 << (b % 8)
		}
	}
	return nil
}

// WritePBA serves a write into the pending bit array, which is read-only.
func (m *MSIX) WritePBA(offset uint64, data []byte) error {
	return checkTableAccess("PBA", offset, len(data), m.PBASize())
}

// Close releases every route.
func (m *MSIX) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	for i := range m.vectors {
		if r := m.vectors[i].route; r != nil {
			errs = append(errs, r.Close())
			m.vectors[i].route = nil
		}
	}
	return errors.Join(errs...)
}
