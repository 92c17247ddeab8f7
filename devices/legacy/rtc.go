package legacy

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/devices"
)

// The RTC occupies two ports: the index register (0x70) and the data port
// (0x71) that reads or writes the CMOS byte the index selects.
const (
	RTCIndexOffset = 0
	RTCDataOffset  = 1
	RTCSize        = 2

	// RTCCenturyIndex is the CMOS byte holding the century, the value to
	// put in the FADT's CENTURY field.
	RTCCenturyIndex = 0x32
)

// ErrCMOSIndex is returned by SetRAM for an index that is not plain CMOS RAM.
var ErrCMOSIndex = errors.New("CMOS index is not general-purpose RAM")

// CMOS register indexes.
const (
	cmosSeconds  = 0x00
	cmosMinutes  = 0x02
	cmosHours    = 0x04
	cmosWeekday  = 0x06
	cmosDay      = 0x07
	cmosMonth    = 0x08
	cmosYear     = 0x09
	cmosStatusA  = 0x0a
	cmosStatusB  = 0x0b
	cmosStatusC  = 0x0c
	cmosStatusD  = 0x0d
	cmosFirstRAM = 0x0e
	cmosSize     = 128
	cmosIndex    = 0x7f // bit 7 of the index port is the NMI mask, ignored

	// Memory size fields, in the layout SeaBIOS and other firmware read.
	cmosBaseMemLo    = 0x15 // KiB below 640 KiB
	cmosBaseMemHi    = 0x16
	cmosExtMemLo     = 0x17 // KiB between 1 MiB and 64 MiB
	cmosExtMemHi     = 0x18
	cmosExtMem2Lo    = 0x30 // same value again
	cmosExtMem2Hi    = 0x31
	cmosHighMemLo    = 0x34 // 64 KiB units between 16 MiB and 4 GiB
	cmosHighMemHi    = 0x35
	cmosAbove4GLo    = 0x5b // 64 KiB units above 4 GiB, 24 bits
	cmosAbove4GMid   = 0x5c
	cmosAbove4GHi    = 0x5d
	cmosBaseMemKiB   = 640
	cmosHighMemStart = 16 * mib
	kib              = 1 << 10
	mib              = 1 << 20
)

// Status register and hour bits.
const (
	statusAUIP     = 0x80 // update in progress: never, updates are instant
	statusADefault = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	statusBSet     = 0x80 // guest is setting the clock; updates halted
	statusBBinary  = 0x04 // DM: binary rather than BCD
	statusB24Hour  = 0x02
	statusBDefault = statusB24Hour
	statusDValid   = 0x80 // VRT: battery good, RAM valid
	hourPM         = 0x80 // in 12-hour mode
)

// RTC is the MC146818 CMOS real-time clock and its 128 bytes of CMOS RAM.
// The time registers read the clock function, in UTC, plus whatever offset
// the guest established by setting the time; they never show an update in
// progress. Status B's binary and 12/24-hour bits are honoured in both
// directions, BCD and 24-hour being the default. Alarms and the periodic,
// alarm and update interrupts are not generated (there is no IRQ 8); their
// registers are stored like RAM so a guest reads back what it wrote.
type RTC struct {
	now func() time.Time

	mu     sync.Mutex
	index  byte
	cmos   [cmosSize]byte
	offset time.Duration // guest time minus host time
	staged clockFields   // the time while status B's SET bit is on
}

var _ devices.Device = (*RTC)(nil)

// clockFields is a broken-down time in plain binary.
type clockFields struct {
	sec, min, hour, weekday, day, month, year int
}

func fieldsOf(t time.Time) clockFields {
	return clockFields{
		sec:     t.Second(),
		min:     t.Minute(),
		hour:    t.Hour(),
		weekday: int(t.Weekday()) + 1, // the RTC counts Sunday as 1
		day:     t.Day(),
		month:   int(t.Month()),
		year:    t.Year(),
	}
}

// time turns the fields back into a time. Out-of-range values from a
// careless guest are normalised by time.Date, never rejected.
func (f clockFields) time() time.Time {
	return time.Date(f.year, time.Month(f.month), f.day, f.hour, f.min, f.sec, 0, time.UTC)
}

// NewRTC returns an RTC reading time from now (nil means time.Now).
func NewRTC(now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	r := &RTC{now: now}
	r.cmos[cmosStatusA] = statusADefault
	r.cmos[cmosStatusB] = statusBDefault
	r.cmos[cmosStatusD] = statusDValid
	return r
}

// SetMemorySize fills the CMOS memory-size fields firmware reads: base
// memory (640 KiB), extended memory above 1 MiB in KiB (capped at 0xffff),
// memory between 16 MiB and 4 GiB in 64 KiB units (0x34/0x35) and memory
// above 4 GiB in 64 KiB units (0x5b-0x5d). belowFourGiB is the RAM mapped
// below 4 GiB (it stops at the PCI hole), aboveFourGiB the rest.
func (r *RTC) SetMemorySize(belowFourGiB, aboveFourGiB uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	put16 := func(lo, hi int, v uint64) {
		v = min(v, 0xffff)
		r.cmos[lo], r.cmos[hi] = byte(v), byte(v>>8)
	}
	put16(cmosBaseMemLo, cmosBaseMemHi, cmosBaseMemKiB)
	var ext, high uint64
	if belowFourGiB > mib {
		ext = (belowFourGiB - mib) / kib
	}
	if belowFourGiB > cmosHighMemStart {
		high = (belowFourGiB - cmosHighMemStart) / (64 * kib)
	}
	put16(cmosExtMemLo, cmosExtMemHi, ext)
	put16(cmosExtMem2Lo, cmosExtMem2Hi, ext)
	put16(cmosHighMemLo, cmosHighMemHi, high)
	above := min(aboveFourGiB/(64*kib), 0xffffff)
	r.cmos[cmosAbove4GLo] = byte(above)
	r.cmos[cmosAbove4GMid] = byte(above >> 8)
	r.cmos[cmosAbove4GHi] = byte(above >> 16)
}

// SetRAM stores value in a general-purpose CMOS byte, for fields the VMM
// wants firmware or the guest to find (such as 0x5f, the CPU count minus one,
// in QEMU's layout). The clock, status and century registers are refused.
func (r *RTC) SetRAM(index int, value byte) error {
	if index < cmosFirstRAM || index >= cmosSize || index == RTCCenturyIndex {
		return fmt.Errorf("set CMOS byte %#x: %w", index, ErrCMOSIndex)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmos[index] = value
	return nil
}

// Read serves one-byte reads: the index port reads as all ones (it is
// write-only), the data port returns the selected register.
func (r *RTC) Read(offset uint64, data []byte) error {
	if len(data) != 1 || offset != RTCDataOffset {
		floatBus(data)
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	data[0] = r.readRegister(r.index)
	return nil
}

// Write serves one-byte writes: the index port selects a register (bit 7,
// the NMI mask, is ignored), the data port writes it.
func (r *RTC) Write(offset uint64, data []byte) error {
	if len(data) != 1 || offset >= RTCSize {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if offset == RTCIndexOffset {
		r.index = data[0] & cmosIndex
		return nil
	}
	r.writeRegister(r.index, data[0])
	return nil
}

func isClockRegister(index byte) bool {
	switch index {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, RTCCenturyIndex:
		return true
	}
	return false
}

func (r *RTC) readRegister(index byte) byte {
	switch {
	case isClockRegister(index):
		return r.encodeField(index, r.current())
	case index == cmosStatusA:
		return r.cmos[cmosStatusA] &^ statusAUIP
	case index == cmosStatusC:
		// Interrupt flags, cleared by reading; none are ever raised.
		v := r.cmos[cmosStatusC]
		r.cmos[cmosStatusC] = 0
		return v
	case index == cmosStatusD:
		return statusDValid
	default:
		return r.cmos[index]
	}
}

func (r *RTC) writeRegister(index byte, v byte) {
	switch {
	case isClockRegister(index):
		f := r.current()
		r.decodeField(index, v, &f)
		if r.setting() {
			r.staged = f
		} else {
			r.commit(f) // hardware takes the new value at the next update
		}
	case index == cmosStatusA:
		r.cmos[cmosStatusA] = v &^ statusAUIP
	case index == cmosStatusB:
		wasSetting := r.setting()
		if !wasSetting && v&statusBSet != 0 {
			r.staged = fieldsOf(r.guestTime()) // freeze the clock here
		}
		r.cmos[cmosStatusB] = v
		if wasSetting && v&statusBSet == 0 {
			r.commit(r.staged)
		}
	case index == cmosStatusC, index == cmosStatusD:
		// Read-only.
	default:
		r.cmos[index] = v
	}
}

func (r *RTC) setting() bool { return r.cmos[cmosStatusB]&statusBSet != 0 }

func (r *RTC) guestTime() time.Time { return r.now().UTC().Add(r.offset) }

// current returns the time the clock registers show: frozen while the guest
// is setting the clock, running otherwise.
func (r *RTC) current() clockFields {
	if r.setting() {
		return r.staged
	}
	return fieldsOf(r.guestTime())
}

// commit makes f the guest's time from now on. The day of the week is
// recomputed from the date rather than trusted. A date more than about 292
// years from the host's saturates the offset (time.Duration's range): the
// guest reads a wrong year, never a crash.
func (r *RTC) commit(f clockFields) {
	r.offset = f.time().Sub(r.now())
}

func (r *RTC) binary() bool { return r.cmos[cmosStatusB]&statusBBinary != 0 }

// encode formats 0-99 for the guest in the mode status B selects.
func (r *RTC) encode(v int) byte {
	v = ((v % 100) + 100) % 100
	if r.binary() {
		return byte(v)
	}
	return byte(v/10<<4 | v%10)
}

// decode parses a guest-written value. Invalid BCD digits are taken at face
// value (0x0f decodes as 15); time.Date normalises the result.
func (r *RTC) decode(v byte) int {
	if r.binary() {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0f)
}

func (r *RTC) encodeField(index byte, f clockFields) byte {
	switch index {
	case cmosSeconds:
		return r.encode(f.sec)
	case cmosMinutes:
		return r.encode(f.min)
	case cmosHours:
		if r.cmos[cmosStatusB]&statusB24Hour != 0 {
			return r.encode(f.hour)
		}
		h := f.hour % 12
		if h == 0 {
			h = 12
		}
		v := r.encode(h)
		if f.hour >= 12 {
			v |= hourPM
		}
		return v
	case cmosWeekday:
		return r.encode(f.weekday)
	case cmosDay:
		return r.encode(f.day)
	case cmosMonth:
		return r.encode(f.month)
	case cmosYear:
		return r.encode(f.year % 100)
	default: // RTCCenturyIndex
		return r.encode(f.year / 100)
	}
}

func (r *RTC) decodeField(index byte, v byte, f *clockFields) {
	switch index {
	case cmosSeconds:
		f.sec = r.decode(v)
	case cmosMinutes:
		f.min = r.decode(v)
	case cmosHours:
		if r.cmos[cmosStatusB]&statusB24Hour != 0 {
			f.hour = r.decode(v)
			return
		}
		h := r.decode(v&^hourPM) % 12 // 12 AM is hour 0
		if v&hourPM != 0 {
			h += 12
		}
		f.hour = h
	case cmosWeekday:
		f.weekday = r.decode(v)
	case cmosDay:
		f.day = r.decode(v)
	case cmosMonth:
		f.month = r.decode(v)
	case cmosYear:
		f.year = f.year/100*100 + r.decode(v)
	default: // RTCCenturyIndex
		f.year = r.decode(v)*100 + f.year%100
	}
}
