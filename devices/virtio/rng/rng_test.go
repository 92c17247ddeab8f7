package rng

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/virtiotest"
)

func TestDeviceDescription(t *testing.T) {
	d := New()
	assert.Equal(t, virtio.TypeRNG, d.Type())
	assert.Equal(t, []uint16{QueueSize}, d.QueueSizes())
	assert.NotZero(t, d.Features()&virtio.FeatureVersion1)
	require.NoError(t, d.ReadConfig(0, nil))
	require.ErrorIs(t, d.ReadConfig(0, make([]byte, 1)), virtio.ErrBadConfig)
	require.ErrorIs(t, d.ReadConfig(4, nil), virtio.ErrBadConfig)
	require.ErrorIs(t, d.WriteConfig(0, []byte{1}), virtio.ErrBadConfig)
}

func TestFill(t *testing.T) {
	tests := []struct {
		name     string
		readable []int
		writable []int
		want     uint32
	}{
		{"one buffer", nil, []int{64}, 64},
		{"several buffers", nil, []int{1, 31, 4096}, 4128},
		{"readable buffers are ignored", []int{16}, []int{32}, 32},
		{"nothing to fill", []int{16}, nil, 0},
		{"capped per request", nil, []int{maxPerRequest - 10, 100, 100}, maxPerRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &virtio.Chain{}
			for _, n := range tt.readable {
				c.Readable = append(c.Readable, make([]byte, n))
			}
			for _, n := range tt.writable {
				c.Writable = append(c.Writable, make([]byte, n))
			}
			n, err := fill(c)
			require.NoError(t, err)
			assert.Equal(t, tt.want, n)
			for _, b := range c.Readable {
				assert.Equal(t, make([]byte, len(b)), b, "readable buffer untouched")
			}
			all := bytes.Join(c.Writable, nil)
			if n >= 32 {
				// 32 random bytes are all zero with probability 2^-256.
				assert.NotEqual(t, make([]byte, 32), all[:32])
			}
			assert.Equal(t, make([]byte, len(all)-int(n)), all[n:], "nothing written past the used length")
		})
	}
}

func TestServeEndToEnd(t *testing.T) {
	skipUnderRace(t)
	d := New()
	mem := virtiotest.NewMemory(0x4000, 1<<20)
	drv := virtiotest.NewDriver(mem, 8, 0x4000)
	q, err := drv.Queue(d.Features())
	require.NoError(t, err)
	kick, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer kick.Close()
	call, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer call.Close()
	never, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer never.Close()

	act := virtio.Activation{Memory: mem, Features: d.Features(),
		Queues: []virtio.ActiveQueue{{Queue: q, Kick: kick, Interrupt: call}}}
	require.NoError(t, d.Activate(act))
	require.ErrorIs(t, d.Activate(act), ErrActive)

	c := drv.AddIndirect(virtiotest.Out(16), virtiotest.Out(48))
	require.NoError(t, kick.Signal())
	stopped, err := virtio.Wait(call, never)
	require.NoError(t, err)
	require.False(t, stopped)
	id, n, ok := drv.Used()
	require.True(t, ok)
	assert.Equal(t, uint32(c.Head), id)
	assert.Equal(t, uint32(64), n)
	assert.NotEqual(t, make([]byte, 48), c.Buffer(1))

	require.NoError(t, d.Reset())
	require.NoError(t, d.Activate(virtio.Activation{Memory: mem, Queues: []virtio.ActiveQueue{{}}}), "queue not enabled")
	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Activate(act), ErrClosed)
	require.Error(t, New().Activate(virtio.Activation{Queues: make([]virtio.ActiveQueue, 2)}))
}

// skipUnderRace skips a test in which a goroutine playing the guest driver
// and the device's worker share ring memory: they synchronize the way a
// guest and a device do, through eventfds and the ring's own indices,
// which the race detector cannot see, so it reports races that are the
// protocol working as designed.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("race detector: driver and device share guest memory outside Go's memory model (eventfd handoff)")
	}
}
