package kvmvm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices"
	"github.com/wisp-vmm/wisp/internal/ratelog"
)

// failingDevice fails every access, as a device does with a malformed
// guest request.
type failingDevice struct{}

func (failingDevice) Read(uint64, []byte) error  { return errors.New("bad read") }
func (failingDevice) Write(uint64, []byte) error { return errors.New("bad write") }

// TestServeLimitsLogLines runs serve without KVM: a guest hammering a
// failing device gets a bounded number of lines, then a count.
func TestServeLimitsLogLines(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var log bytes.Buffer
	inst := &instance{
		opts:      Options{Log: &log},
		pio:       devices.NewBus(),
		mmio:      devices.NewBus(),
		accessLog: ratelog.New[accessKey](ratelog.Config{Burst: 3, Interval: time.Minute, Now: clock}),
	}
	require.NoError(t, inst.pio.Insert(failingDevice{}, 0x500, 8))
	require.NoError(t, inst.mmio.Insert(failingDevice{}, 0x500, 8))

	tests := []struct {
		name  string
		flood func()
		want  []string
	}{
		{
			name: "unserved ports log nothing",
			flood: func() {
				for range 10000 {
					inst.serve(inst.pio, 0x80, []byte{0}, true)
				}
			},
			want: nil,
		},
		{
			name: "a flood at one port",
			flood: func() {
				for range 10000 {
					inst.serve(inst.pio, 0x500, []byte{0}, true)
				}
			},
			want: []string{"wisp: 0x500: bad write", "wisp: 0x500: bad write", "wisp: 0x500: bad write"},
		},
		{
			name: "MMIO at the same address has its own budget",
			flood: func() {
				data := make([]byte, 4)
				for range 10000 {
					inst.serve(inst.mmio, 0x500, data, false)
				}
				assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}, data, "a failed read floats high")
			},
			want: []string{"wisp: 0x500: bad read", "wisp: 0x500: bad read", "wisp: 0x500: bad read"},
		},
		{
			name: "a minute later the count comes first",
			flood: func() {
				now = now.Add(time.Minute)
				inst.serve(inst.pio, 0x500, []byte{0}, true)
			},
			want: []string{"wisp: 0x500: 9997 more suppressed", "wisp: 0x500: bad write"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log.Reset()
			tt.flood()
			var got []string
			if s := strings.TrimSuffix(log.String(), "\n"); s != "" {
				got = strings.Split(s, "\n")
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
