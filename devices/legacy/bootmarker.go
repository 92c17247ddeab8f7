package legacy

import (
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/devices"
)

const (
	// BootMarkerSize is the number of ports the boot marker occupies.
	BootMarkerSize = 1
	// BootMarkerHistory bounds the marks kept for Marks; a guest writing
	// forever must not grow host memory. Later marks still reach the
	// callback and are counted in BootMarker.Dropped.
	BootMarkerHistory = 1024
)

// BootMark is one byte a guest wrote to the boot-marker port and when,
// measured from the start time the marker was given.
type BootMark struct {
	Code  byte
	Since time.Duration
}

// BootMarker is a one-byte debug port for measuring boot: the guest's
// firmware, kernel or init write a code at each milestone and the host
// records how long after wisp started that happened. Reads return 0.
type BootMarker struct {
	start  time.Time
	now    func() time.Time
	record func(code byte, since time.Duration)

	mu      sync.Mutex
	marks   []BootMark
	dropped uint64
}

var _ devices.Device = (*BootMarker)(nil)

// NewBootMarker returns a marker that measures from start using now (nil
// means time.Now; start should then carry a monotonic reading, as time.Now
// values do) and passes each mark to record (which may be nil).
func NewBootMarker(start time.Time, now func() time.Time, record func(code byte, since time.Duration)) *BootMarker {
	if now == nil {
		now = time.Now
	}
	return &BootMarker{start: start, now: now, record: record}
}

// Marks returns a copy of the marks recorded so far, oldest first.
func (b *BootMarker) Marks() []BootMark {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BootMark(nil), b.marks...)
}

// Dropped returns how many marks did not fit in the history.
func (b *BootMarker) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// Read serves a one-byte read, which returns 0; other widths read as all ones.
func (b *BootMarker) Read(offset uint64, data []byte) error {
	if len(data) != 1 || offset != 0 {
		floatBus(data)
		return nil
	}
	data[0] = 0
	return nil
}

// Write records a one-byte write as a mark; other widths are ignored.
func (b *BootMarker) Write(offset uint64, data []byte) error {
	if len(data) != 1 || offset != 0 {
		return nil
	}
	b.mu.Lock()
	// Taking the time under the lock keeps the history in time order when
	// several vCPUs write at once.
	mark := BootMark{Code: data[0], Since: b.now().Sub(b.start)}
	if len(b.marks) < BootMarkerHistory {
		b.marks = append(b.marks, mark)
	} else {
		b.dropped++
	}
	b.mu.Unlock()
	if b.record != nil {
		b.record(mark.Code, mark.Since)
	}
	return nil
}
