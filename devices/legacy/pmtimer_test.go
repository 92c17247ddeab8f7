package legacy

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPMTimerCounts(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		elapsed time.Duration
		want    uint32
	}{
		{0, 0},
		{time.Second, PMTimerFrequency & 0xffffff},
		{time.Millisecond, 3579},
		{10 * time.Second, (10 * PMTimerFrequency) & 0xffffff},
	}
	for _, tt := range tests {
		now := start.Add(tt.elapsed)
		p := NewPMTimer(start, func() time.Time { return now })
		var b [4]byte
		require.NoError(t, p.Read(0, b[:]))
		assert.Equal(t, tt.want, binary.LittleEndian.Uint32(b[:]), tt.elapsed)
	}
}

func TestPMTimerOddAccesses(t *testing.T) {
	p := NewPMTimer(time.Now(), nil)
	b := []byte{0, 0}
	require.NoError(t, p.Read(0, b))
	assert.Equal(t, []byte{0xff, 0xff}, b)
	require.NoError(t, p.Write(0, []byte{1, 2, 3, 4}))
}
