package legacy

import (
	"encoding/binary"
	"time"

	"github.com/wisp-vmm/wisp/devices"
)

// PMTimerFrequency is the ACPI power-management timer's fixed rate.
const PMTimerFrequency = 3579545

// PMTimerSize is the width of the PM timer register.
const PMTimerSize = 4

// PMTimer is the ACPI PM timer: a free-running 24-bit counter at 3.579545
// MHz that the guest reads (Linux's acpi_pm clocksource and its timer
// calibration). It is derived from the host's monotonic clock on each read,
// so it costs nothing between reads.
type PMTimer struct {
	start time.Time
	now   func() time.Time
}

var _ devices.Device = (*PMTimer)(nil)

// NewPMTimer returns a timer counting from start; now may be nil for
// time.Now.
func NewPMTimer(start time.Time, now func() time.Time) *PMTimer {
	if now == nil {
		now = time.Now
	}
	return &PMTimer{start: start, now: now}
}

// Read returns the counter. Only aligned 4-byte reads (the only access
// ACPI allows) see it; other reads float high.
func (p *PMTimer) Read(offset uint64, data []byte) error {
	if offset != 0 || len(data) != PMTimerSize {
		floatBus(data)
		return nil
	}
	elapsed := p.now().Sub(p.start)
	// ticks = ns * f / 1e9, split to stay within 64 bits for centuries.
	ns := uint64(elapsed.Nanoseconds())
	ticks := (ns/1e9)*PMTimerFrequency + (ns%1e9)*PMTimerFrequency/1e9
	binary.LittleEndian.PutUint32(data, uint32(ticks)&0xffffff)
	return nil
}

// Write is ignored: the counter is read-only.
func (p *PMTimer) Write(uint64, []byte) error { return nil }
