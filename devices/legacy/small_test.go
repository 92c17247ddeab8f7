package legacy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBootMarkerRecordsCodesAndTimes(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: start}
	var got []BootMark
	b := NewBootMarker(start, clk.now, func(code byte, since time.Duration) {
		got = append(got, BootMark{code, since})
	})

	steps := []struct {
		after time.Duration
		code  byte
	}{
		{12 * time.Millisecond, 0x01}, // e.g. firmware done
		{40 * time.Millisecond, 0x10}, // kernel entry
		{0, 0x10},                     // the same code twice is recorded twice
		{300 * time.Millisecond, 0xff},
	}
	var want []BootMark
	var elapsed time.Duration
	for _, st := range steps {
		clk.advance(st.after)
		elapsed += st.after
		writeByte(t, b, 0, st.code)
		want = append(want, BootMark{st.code, elapsed})
	}
	assert.Equal(t, want, got)
	assert.Equal(t, want, b.Marks())
	assert.Equal(t, byte(0), readByte(t, b, 0))
}

func TestBootMarkerHistoryIsBounded(t *testing.T) {
	var calls counter
	b := NewBootMarker(time.Now(), nil, func(byte, time.Duration) { calls.inc() })
	for i := range BootMarkerHistory + 10 {
		writeByte(t, b, 0, byte(i))
	}
	assert.Len(t, b.Marks(), BootMarkerHistory)
	assert.Equal(t, uint64(10), b.Dropped())
	assert.Equal(t, int64(BootMarkerHistory+10), calls.count(), "every mark still reaches the callback")
}

func TestBootMarkerUnsupportedAccesses(t *testing.T) {
	b := NewBootMarker(time.Now(), nil, nil)
	data := []byte{0, 0}
	require.NoError(t, b.Read(0, data))
	assert.Equal(t, []byte{0xff, 0xff}, data)
	require.NoError(t, b.Write(0, []byte{1, 2, 3, 4}))
	require.NoError(t, b.Write(1, []byte{1}))
	assert.Empty(t, b.Marks())
}

func TestPVPanic(t *testing.T) {
	tests := []struct {
		name      string
		write     []byte
		offset    uint64
		wantEvent PVPanicEvent // 0: no callback
	}{
		{"panicked", []byte{1}, 0, PVPanicPanicked},
		{"crash kernel loaded", []byte{2}, 0, PVPanicCrashLoaded},
		{"both", []byte{3}, 0, PVPanicPanicked | PVPanicCrashLoaded},
		{"unsupported bits are masked", []byte{0xfd}, 0, PVPanicPanicked},
		{"shutdown bit is not offered", []byte{4}, 0, 0},
		{"zero", []byte{0}, 0, 0},
		{"word write ignored", []byte{1, 0}, 0, 0},
		{"wrong offset ignored", []byte{1}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var events []PVPanicEvent
			p := NewPVPanic(func(ev PVPanicEvent) { events = append(events, ev) })
			assert.Equal(t, byte(0x03), readByte(t, p, 0), "capabilities: PANICKED|CRASH_LOADED")
			require.NoError(t, p.Write(tt.offset, tt.write))
			if tt.wantEvent == 0 {
				assert.Empty(t, events)
			} else {
				assert.Equal(t, []PVPanicEvent{tt.wantEvent}, events)
			}
			assert.Equal(t, tt.wantEvent, p.Reported())
		})
	}
}

func TestPVPanicReportedAccumulates(t *testing.T) {
	p := NewPVPanic(nil)
	writeByte(t, p, 0, byte(PVPanicCrashLoaded))
	writeByte(t, p, 0, byte(PVPanicPanicked))
	assert.Equal(t, PVPanicPanicked|PVPanicCrashLoaded, p.Reported())
	data := []byte{0, 0, 0, 0}
	require.NoError(t, p.Read(0, data))
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}, data)
}
