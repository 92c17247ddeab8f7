package legacy

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices"
)

// countingIRQ is a fake interrupt line: the device plane has no KVM, so
// counting pulses is the whole contract to check.
type countingIRQ struct {
	pulses atomic.Int64
	err    error
}

func (c *countingIRQ) Trigger() error {
	c.pulses.Add(1)
	return c.err
}

func (c *countingIRQ) count() int64 { return c.pulses.Load() }

// readByte and writeByte do a one-byte access and fail the test on error.
func readByte(t testing.TB, d devices.Device, offset uint64) byte {
	t.Helper()
	var b [1]byte
	require.NoError(t, d.Read(offset, b[:]))
	return b[0]
}

func writeByte(t testing.TB, d devices.Device, offset uint64, v byte) {
	t.Helper()
	require.NoError(t, d.Write(offset, []byte{v}))
}

// counter counts callback invocations.
type counter struct{ n atomic.Int64 }

func (c *counter) inc()         { c.n.Add(1) }
func (c *counter) count() int64 { return c.n.Load() }
