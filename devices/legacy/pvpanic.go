package legacy

import (
	"sync"

	"github.com/wisp-vmm/wisp/devices"
)

// PVPanicSize is the number of ports the pvpanic device occupies.
const PVPanicSize = 1

// PVPanicEvent is a set of pvpanic event bits, as the guest writes them.
type PVPanicEvent byte

const (
	// PVPanicPanicked: the guest kernel panicked.
	PVPanicPanicked PVPanicEvent = 1 << 0
	// PVPanicCrashLoaded: the guest panicked with a crash kernel loaded;
	// it is about to kexec into it to save a dump, so leave it running.
	PVPanicCrashLoaded PVPanicEvent = 1 << 1

	// PVPanicCapabilities is what the device offers; a guest reads it to
	// learn which events it may send. Other bits written are ignored.
	PVPanicCapabilities = PVPanicPanicked | PVPanicCrashLoaded
)

// PVPanic is the pvpanic ISA device (QEMU's "pvpanic", ACPI ID QEMU0001):
// reads return the capability bits, and a write of supported event bits
// tells the host the guest panicked.
type PVPanic struct {
	onEvent func(PVPanicEvent)

	mu       sync.Mutex
	reported PVPanicEvent
}

var _ devices.Device = (*PVPanic)(nil)

// NewPVPanic returns a device that calls onEvent (which may be nil) with the
// supported bits of every write that has any.
func NewPVPanic(onEvent func(PVPanicEvent)) *PVPanic {
	return &PVPanic{onEvent: onEvent}
}

// Reported returns every event bit the guest has written so far, so a VMM
// can tell after the fact that the guest panicked.
func (p *PVPanic) Reported() PVPanicEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reported
}

// Read serves a one-byte read of the capabilities; other widths read as all ones.
func (p *PVPanic) Read(offset uint64, data []byte) error {
	if len(data) != 1 || offset != 0 {
		floatBus(data)
		return nil
	}
	data[0] = byte(PVPanicCapabilities)
	return nil
}

// Write serves a one-byte event write; other widths are ignored.
func (p *PVPanic) Write(offset uint64, data []byte) error {
	if len(data) != 1 || offset != 0 {
		return nil
	}
	ev := PVPanicEvent(data[0]) & PVPanicCapabilities
	if ev == 0 {
		return nil
	}
	p.mu.Lock()
	p.reported |= ev
	p.mu.Unlock()
	if p.onEvent != nil {
		p.onEvent(ev)
	}
	return nil
}
