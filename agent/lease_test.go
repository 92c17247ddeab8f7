package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// TestLeases: a VM with a lease is refused a start outside its window,
// started when the window opens (once: a user's stop inside it holds) and
// stopped when it closes. Only desired states are checked: no VMM runs.
func TestLeases(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	run, err := os.MkdirTemp("", "wl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(run) })
	a, err := New(Config{StateDir: t.TempDir(), RunDir: run, Wisp: "/bin/false", Now: clock.Now,
		Host: model.Capacity{CPUs: 4, MemoryBytes: 4 << 30}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	ctx := context.Background()
	from, until := t0.Add(time.Hour), t0.Add(3*time.Hour)
	spec := model.Spec{CPUs: 1, MemoryBytes: 128 << 20}

	_, err = a.Create(ctx, CreateRequest{Name: "bad", Spec: spec, LeaseFrom: &until, LeaseUntil: &from})
	require.ErrorIs(t, err, model.ErrInvalid, "a window that ends before it begins")

	_, err = a.Create(ctx, CreateRequest{Name: "lease", Spec: spec, LeaseFrom: &from, LeaseUntil: &until})
	require.NoError(t, err)
	_, err = a.Do(ctx, "lease", model.OpStart, OpOptions{NoWait: true})
	require.ErrorIs(t, err, model.ErrConflict)
	assert.Contains(t, err.Error(), "may run only within its lease (from 2026-12-07T09:00:00Z until 2026-12-07T11:00:00Z)")

	desired := func() model.Desired {
		vm, err := a.Get(ctx, "lease")
		require.NoError(t, err)
		return vm.Desired
	}
	a.applyLeases()
	assert.Equal(t, model.DesiredStopped, desired(), "before the window")
	clock.Set(from)
	a.applyLeases()
	assert.Equal(t, model.DesiredRunning, desired(), "the window opened")

	// A user stops it inside the window: the lease does not start it again.
	_, err = a.store.UpdateVM("lease", func(vm *model.VM) ([]model.Event, error) {
		vm.Observed = model.ObservedRunning // stands for the VMM the loop would have started
		return nil, nil
	})
	require.NoError(t, err)
	_, err = a.Do(ctx, "lease", model.OpStop, OpOptions{NoWait: true})
	require.NoError(t, err)
	clock.Set(from.Add(time.Minute))
	a.applyLeases()
	assert.Equal(t, model.DesiredStopped, desired(), "a stop inside the window holds")

	_, err = a.Do(ctx, "lease", model.OpResume, OpOptions{NoWait: true})
	require.Error(t, err)
	_, err = a.store.UpdateVM("lease", func(vm *model.VM) ([]model.Event, error) {
		return vm.SetDesired(model.DesiredRunning, "test: running again"), nil
	})
	require.NoError(t, err)
	clock.Set(until)
	a.applyLeases()
	assert.Equal(t, model.DesiredStopped, desired(), "the window closed")
	evs, err := a.store.Events(storeQuery("lease"))
	require.NoError(t, err)
	var reasons []string
	for _, e := range evs {
		if e.Kind == model.EventDesired {
			reasons = append(reasons, e.Reason)
		}
	}
	assert.Equal(t, []string{"lease began", "user: stop", "test: running again", "lease ended at 2026-12-07T11:00:00Z"}, reasons)
}

func storeQuery(vm string) store.EventQuery { return store.EventQuery{VM: vm} }
