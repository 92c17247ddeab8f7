package legacy

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for the RTC; tests move it by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A Thursday afternoon in a leap year.
var rtcTestTime = time.Date(2024, time.February, 29, 13, 45, 7, 0, time.UTC)

func newTestRTC() (*RTC, *fakeClock) {
	clk := &fakeClock{t: rtcTestTime}
	return NewRTC(clk.now), clk
}

func readCMOS(t *testing.T, r *RTC, index byte) byte {
	t.Helper()
	writeByte(t, r, RTCIndexOffset, index)
	return readByte(t, r, RTCDataOffset)
}

func writeCMOS(t *testing.T, r *RTC, index, v byte) {
	t.Helper()
	writeByte(t, r, RTCIndexOffset, index)
	writeByte(t, r, RTCDataOffset, v)
}

func TestRTCTimeFormats(t *testing.T) {
	type regs struct{ sec, min, hour, wday, day, month, year, century byte }
	tests := []struct {
		name    string
		statusB byte
		clock   time.Time
		want    regs
	}{
		{"BCD 24h (default)", statusB24Hour, rtcTestTime,
			regs{0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}},
		{"binary 24h", statusB24Hour | statusBBinary, rtcTestTime,
			regs{7, 45, 13, 5, 29, 2, 24, 20}},
		{"BCD 12h afternoon", 0, rtcTestTime,
			regs{0x07, 0x45, 0x81, 0x05, 0x29, 0x02, 0x24, 0x20}},
		{"binary 12h afternoon", statusBBinary, rtcTestTime,
			regs{7, 45, 0x81, 5, 29, 2, 24, 20}},
		{"BCD 12h just after midnight is 12 AM", 0, time.Date(1999, 12, 31, 0, 5, 59, 0, time.UTC),
			regs{0x59, 0x05, 0x12, 0x06, 0x31, 0x12, 0x99, 0x19}},
		{"BCD 12h noon is 12 PM", 0, time.Date(2000, 1, 2, 12, 0, 0, 0, time.UTC),
			regs{0x00, 0x00, 0x92, 0x01, 0x02, 0x01, 0x00, 0x20}},
		{"binary 24h late evening", statusB24Hour | statusBBinary, time.Date(2107, 7, 31, 23, 59, 58, 0, time.UTC),
			regs{58, 59, 23, 1, 31, 7, 7, 21}},
		{"host clock in another zone reads as UTC", statusB24Hour,
			time.Date(2024, 2, 29, 15, 45, 7, 0, time.FixedZone("EET", 2*3600)),
			regs{0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRTC(func() time.Time { return tt.clock })
			writeCMOS(t, r, cmosStatusB, tt.statusB)
			got := regs{
				readCMOS(t, r, cmosSeconds), readCMOS(t, r, cmosMinutes), readCMOS(t, r, cmosHours),
				readCMOS(t, r, cmosWeekday), readCMOS(t, r, cmosDay), readCMOS(t, r, cmosMonth),
				readCMOS(t, r, cmosYear), readCMOS(t, r, RTCCenturyIndex),
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestRTCStatusRegisters(t *testing.T) {
	tests := []struct {
		name  string
		index byte
		write int // -1: don't write
		want  byte
	}{
		{"A default", cmosStatusA, -1, 0x26},
		{"A never shows UIP", cmosStatusA, 0xff, 0x7f},
		{"B default: 24h, BCD", cmosStatusB, -1, 0x02},
		{"B stores the guest's mode", cmosStatusB, 0x06, 0x06},
		{"C: no interrupt flags", cmosStatusC, -1, 0x00},
		{"C is read-only", cmosStatusC, 0xff, 0x00},
		{"D: RAM valid", cmosStatusD, -1, 0x80},
		{"D is read-only", cmosStatusD, 0x00, 0x80},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRTC()
			if tt.write >= 0 {
				writeCMOS(t, r, tt.index, byte(tt.write))
			}
			assert.Equal(t, tt.want, readCMOS(t, r, tt.index))
		})
	}
}

func TestRTCIndexPort(t *testing.T) {
	r, _ := newTestRTC()
	writeByte(t, r, RTCIndexOffset, 0x80|cmosSeconds) // NMI masked, seconds selected
	assert.Equal(t, byte(0x07), readByte(t, r, RTCDataOffset), "bit 7 (NMI mask) is ignored")
	assert.Equal(t, byte(0xff), readByte(t, r, RTCIndexOffset), "the index port is write-only")
}

func TestRTCClockRuns(t *testing.T) {
	r, clk := newTestRTC()
	clk.advance(53 * time.Second)
	assert.Equal(t, byte(0x00), readCMOS(t, r, cmosSeconds))
	assert.Equal(t, byte(0x46), readCMOS(t, r, cmosMinutes))
	clk.advance(11 * time.Hour)
	assert.Equal(t, byte(0x01), readCMOS(t, r, cmosDay), "leap day rolls into March")
	assert.Equal(t, byte(0x03), readCMOS(t, r, cmosMonth))
}

func TestRTCGuestSetsTime(t *testing.T) {
	tests := []struct {
		name    string
		statusB byte
		fields  map[byte]byte
		want    time.Time
	}{
		{"BCD 24h, the way Linux's mc146818 code does it", statusB24Hour, map[byte]byte{
			cmosSeconds: 0x30, cmosMinutes: 0x15, cmosHours: 0x22, cmosDay: 0x04,
			cmosMonth: 0x07, cmosYear: 0x26, RTCCenturyIndex: 0x20,
		}, time.Date(2026, 7, 4, 22, 15, 30, 0, time.UTC)},
		{"binary 12h PM", statusBBinary, map[byte]byte{
			cmosSeconds: 1, cmosMinutes: 2, cmosHours: 0x80 | 3, cmosDay: 5,
			cmosMonth: 6, cmosYear: 7, RTCCenturyIndex: 20,
		}, time.Date(2007, 6, 5, 15, 2, 1, 0, time.UTC)},
		{"BCD 12h midnight", 0, map[byte]byte{cmosHours: 0x12}, time.Date(2024, 2, 29, 0, 45, 7, 0, time.UTC)},
		{"nonsense is normalised, not rejected", statusB24Hour | statusBBinary, map[byte]byte{
			cmosMonth: 13, cmosDay: 32,
		}, time.Date(2025, 2, 1, 13, 45, 7, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTestRTC()
			writeCMOS(t, r, cmosStatusB, tt.statusB|statusBSet)
			clk.advance(time.Hour) // frozen while SET is on
			for idx, v := range tt.fields {
				writeCMOS(t, r, idx, v)
			}
			if sec, ok := tt.fields[cmosSeconds]; ok {
				assert.Equal(t, sec, readCMOS(t, r, cmosSeconds), "reads show the staged time")
			}
			writeCMOS(t, r, cmosStatusB, tt.statusB)

			clk.advance(10 * time.Second) // and running again once SET is off
			writeCMOS(t, r, cmosStatusB, statusB24Hour|statusBBinary)
			got := time.Date(
				int(readCMOS(t, r, RTCCenturyIndex))*100+int(readCMOS(t, r, cmosYear)),
				time.Month(readCMOS(t, r, cmosMonth)), int(readCMOS(t, r, cmosDay)),
				int(readCMOS(t, r, cmosHours)), int(readCMOS(t, r, cmosMinutes)), int(readCMOS(t, r, cmosSeconds)),
				0, time.UTC)
			want := tt.want.Add(10 * time.Second)
			assert.Equal(t, want, got)
			assert.Equal(t, byte(want.Weekday())+1, readCMOS(t, r, cmosWeekday), "weekday follows the date")
		})
	}
}

func TestRTCWriteWithoutSetTakesEffect(t *testing.T) {
	r, _ := newTestRTC()
	writeCMOS(t, r, cmosMinutes, 0x00)
	assert.Equal(t, byte(0x00), readCMOS(t, r, cmosMinutes))
	assert.Equal(t, byte(0x13), readCMOS(t, r, cmosHours), "other fields keep running from the old time")
	assert.Equal(t, byte(0x07), readCMOS(t, r, cmosSeconds))
}

func TestRTCRAM(t *testing.T) {
	r, _ := newTestRTC()
	for i := cmosFirstRAM; i < cmosSize; i++ {
		if i == RTCCenturyIndex {
			continue
		}
		writeCMOS(t, r, byte(i), byte(i)^0x5a)
	}
	writeCMOS(t, r, 0x01, 0x30) // alarm registers are plain storage
	writeCMOS(t, r, 0x03, 0x31)
	writeCMOS(t, r, 0x05, 0x32)
	for i := cmosFirstRAM; i < cmosSize; i++ {
		if i == RTCCenturyIndex {
			continue
		}
		assert.Equal(t, byte(i)^0x5a, readCMOS(t, r, byte(i)), "CMOS byte %#x", i)
	}
	assert.Equal(t, byte(0x30), readCMOS(t, r, 0x01))
	assert.Equal(t, byte(0x31), readCMOS(t, r, 0x03))
	assert.Equal(t, byte(0x32), readCMOS(t, r, 0x05))
	assert.Equal(t, byte(0x07), readCMOS(t, r, cmosSeconds), "clock untouched")
}

func TestRTCSetMemorySize(t *testing.T) {
	tests := []struct {
		name         string
		below, above uint64
		want         map[byte]byte
	}{
		{"512 MiB", 512 << 20, 0, map[byte]byte{
			0x15: 0x80, 0x16: 0x02, // 640 KiB
			0x17: 0xff, 0x18: 0xff, 0x30: 0xff, 0x31: 0xff, // capped at 0xffff KiB
			0x34: 0x00, 0x35: 0x1f, // (512-16) MiB / 64 KiB = 0x1f00
			0x5b: 0, 0x5c: 0, 0x5d: 0,
		}},
		{"8 MiB", 8 << 20, 0, map[byte]byte{
			0x17: 0x00, 0x18: 0x1c, // 7 MiB = 0x1c00 KiB
			0x34: 0, 0x35: 0,
		}},
		{"3 GiB + 5 GiB", 3 << 30, 5 << 30, map[byte]byte{
			0x34: 0x00, 0x35: 0xbf, // (3072-16) MiB / 64 KiB = 0xbf00
			0x5b: 0x00, 0x5c: 0x40, 0x5d: 0x01, // 5 GiB / 64 KiB = 0x14000
		}},
		{"absurd sizes are capped", ^uint64(0), ^uint64(0), map[byte]byte{
			0x34: 0xff, 0x35: 0xff, 0x5b: 0xff, 0x5c: 0xff, 0x5d: 0xff,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRTC()
			r.SetMemorySize(tt.below, tt.above)
			for idx, want := range tt.want {
				assert.Equal(t, want, readCMOS(t, r, idx), "CMOS byte %#x", idx)
			}
		})
	}
}

func TestRTCSetRAM(t *testing.T) {
	tests := []struct {
		index   int
		wantErr bool
	}{
		{0x5f, false},
		{cmosFirstRAM, false},
		{cmosSize - 1, false},
		{cmosSeconds, true},
		{cmosStatusB, true},
		{RTCCenturyIndex, true},
		{cmosSize, true},
		{-1, true},
	}
	for _, tt := range tests {
		r, _ := newTestRTC()
		err := r.SetRAM(tt.index, 0x42)
		if tt.wantErr {
			assert.ErrorIs(t, err, ErrCMOSIndex, "index %#x", tt.index)
			continue
		}
		require.NoError(t, err, "index %#x", tt.index)
		assert.Equal(t, byte(0x42), readCMOS(t, r, byte(tt.index)))
	}
}

func TestRTCUnsupportedAccesses(t *testing.T) {
	r, _ := newTestRTC()
	writeByte(t, r, RTCIndexOffset, cmosSeconds)
	for _, tc := range []struct {
		offset uint64
		width  int
	}{{RTCDataOffset, 2}, {RTCIndexOffset, 4}, {RTCSize, 1}, {^uint64(0), 1}} {
		data := make([]byte, tc.width)
		require.NoError(t, r.Read(tc.offset, data))
		for _, b := range data {
			assert.Equal(t, byte(0xff), b)
		}
		require.NoError(t, r.Write(tc.offset, make([]byte, tc.width)))
	}
	assert.Equal(t, byte(0x07), readByte(t, r, RTCDataOffset), "index and clock untouched")
}
