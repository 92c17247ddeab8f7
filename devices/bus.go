// Package devices holds wisp's device plane: a bus of address ranges and the
// interface every emulated device implements. Devices never see KVM or QEMU;
// a backend turns guest exits into Bus.Read and Bus.Write calls.
package devices

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Device is anything that answers guest accesses to its address range.
// offset is relative to the base the device was inserted at; len(data) is the
// access width (1, 2, 4 or 8 bytes for port I/O and MMIO). A device returns an
// error for an access it cannot serve; the caller decides whether that is fatal.
type Device interface {
	Read(offset uint64, data []byte) error
	Write(offset uint64, data []byte) error
}

// IRQ is an interrupt line a device can pulse. Backends implement it with
// KVM_IRQ_LINE or an irqfd; tests with a counter.
type IRQ interface {
	Trigger() error
}

// Errors a Bus returns; test with errors.Is.
var (
	ErrOverlap   = errors.New("address range overlaps another device")
	ErrNoDevice  = errors.New("no device at address")
	ErrBadRange  = errors.New("invalid address range")
	ErrCrossEdge = errors.New("access crosses the end of a device range")
)

type entry struct {
	base, length uint64
	dev          Device
}

func (e entry) end() uint64 { return e.base + e.length } // exclusive; Insert rules out overflow

// Bus maps guest addresses (one Bus for port I/O, one for MMIO) to devices.
// Lookups are a binary search over ranges kept sorted by base; inserting a
// range that overlaps an existing one fails, so two devices never silently
// shadow each other.
type Bus struct {
	mu      sync.RWMutex
	entries []entry
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{} }

// Insert places dev at [base, base+length).
func (b *Bus) Insert(dev Device, base, length uint64) error {
	if dev == nil || length == 0 || base+length < base {
		return fmt.Errorf("insert [%#x, +%#x): %w", base, length, ErrBadRange)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 && b.entries[i-1].end() > base {
		prev := b.entries[i-1]
		return fmt.Errorf("insert [%#x, +%#x) over [%#x, +%#x): %w", base, length, prev.base, prev.length, ErrOverlap)
	}
	if i < len(b.entries) && b.entries[i].base < base+length {
		next := b.entries[i]
		return fmt.Errorf("insert [%#x, +%#x) over [%#x, +%#x): %w", base, length, next.base, next.length, ErrOverlap)
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base: base, length: length, dev: dev}
	return nil
}

// Remove takes the device at exactly base off the bus.
func (b *Bus) Remove(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("remove %#x: %w", base, ErrNoDevice)
}

// find returns the entry holding [addr, addr+size).
func (b *Bus) find(addr uint64, size int) (entry, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base > addr })
	if i == 0 {
		return entry{}, fmt.Errorf("%#x: %w", addr, ErrNoDevice)
	}
	e := b.entries[i-1]
	if addr >= e.end() {
		return entry{}, fmt.Errorf("%#x: %w", addr, ErrNoDevice)
	}
	if addr+uint64(size) > e.end() || addr+uint64(size) < addr {
		return entry{}, fmt.Errorf("%#x+%d: %w", addr, size, ErrCrossEdge)
	}
	return e, nil
}

// Read dispatches a guest read of len(data) bytes at addr.
func (b *Bus) Read(addr uint64, data []byte) error {
	e, err := b.find(addr, len(data))
	if err != nil {
		return err
	}
	return e.dev.Read(addr-e.base, data)
}

// Write dispatches a guest write of data at addr.
func (b *Bus) Write(addr uint64, data []byte) error {
	e, err := b.find(addr, len(data))
	if err != nil {
		return err
	}
	return e.dev.Write(addr-e.base, data)
}
