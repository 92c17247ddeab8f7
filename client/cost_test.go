package client

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/cost"
	"github.com/wisp-vmm/wisp/agent/model"
)

// clock is the agent's injected clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// newClockedTestAgent is newTestAgent with the agent's clock the test's.
func newClockedTestAgent(t *testing.T, clk *clock) *testAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "wc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "agent.sock")
	a, err := agent.New(agent.Config{
		StateDir: t.TempDir(), RunDir: dir, Socket: socket, Wisp: "/bin/false",
		Host: model.Capacity{CPUs: 8, MemoryBytes: 8 * gib}, Now: clk.Now,
	})
	require.NoError(t, err)
	ln, err := net.Listen("unix", socket)
	require.NoError(t, err)
	srv := &http.Server{Handler: a.Handler()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, http.ErrServerClosed)
		require.NoError(t, a.Close())
	})
	c := New(socket)
	c.http.Transport = newContractCheck(t, c.http.Transport)
	return &testAgent{a: a, c: c}
}

// TestCostRoundTrip: half the servers off 12 h each night in a 30-day
// month. VM a runs all month: 720 h × $0.25 = $180.00; VM b is off
// 20:00-08:00: 360 h × $0.25 = $90.00. $270.00, $135.00 on average
// Each is the seed's unit: 1 vCPU, 1 GiB, a 1000 GB disk file (sparse:
// its apparent size counts) and no traffic beyond the included.
func TestCostRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	ta := newClockedTestAgent(t, clk)
	// After any real clock the test runs by: the store stamps "created"
	// with the real time, which must come before the month.
	april := time.Date(2030, 4, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"a", "b"} {
		disk := filepath.Join(t.TempDir(), "disk.img")
		require.NoError(t, os.WriteFile(disk, nil, 0o600))
		require.NoError(t, os.Truncate(disk, 1_000_000_000_000))
		_, err := ta.a.Create(ctx, agent.CreateRequest{Name: name, Spec: model.Spec{CPUs: 1, MemoryBytes: gib, Disks: []string{disk}}})
		require.NoError(t, err)
		_, err = ta.a.Store().UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
			vm.SetDesired(model.DesiredRunning, "test")
			evs := vm.SetObserved(model.ObservedRunning, "test")
			evs[0].Time = april.AddDate(0, -1, 0)
			return evs, nil
		})
		require.NoError(t, err)
	}
	var nights []model.Event
	for d := -1; d < 30; d++ {
		off := april.AddDate(0, 0, d).Add(20 * time.Hour)
		nights = append(nights,
			model.Event{Time: off, VM: "b", Kind: model.EventObserved, From: "running", To: "stopped", CPUs: 1, MemoryBytes: gib},
			model.Event{Time: off.Add(12 * time.Hour), VM: "b", Kind: model.EventObserved, From: "stopped", To: "running", CPUs: 1, MemoryBytes: gib})
	}
	require.NoError(t, ta.a.Store().AppendEvents(nights...))
	clk.Set(april.AddDate(0, 1, 3))

	q := agent.CostQuery{Month: "2030-04", TZ: "UTC"}
	r, err := ta.c.Cost(ctx, q)
	require.NoError(t, err)
	require.Len(t, r.VMs, 2)
	assert.Equal(t, "180.00", r.VMs[0].Total.StringFixed(2))
	assert.Equal(t, "90.00", r.VMs[1].Total.StringFixed(2))
	assert.Equal(t, "270.00", r.Total.StringFixed(2))
	assert.Equal(t, "135.00", r.Average.StringFixed(2))

	one, err := ta.c.Cost(ctx, agent.CostQuery{Month: "2030-04", TZ: "UTC", VM: "b"})
	require.NoError(t, err)
	require.Len(t, one.VMs, 1)
	assert.Equal(t, "360", one.VMs[0].RunningHours.String())

	f, err := ta.c.CostForecast(ctx, agent.CostQuery{Month: "2030-04", TZ: "UTC", WhatIfs: []string{"half-off-nights=12h"}})
	require.NoError(t, err)
	assert.Equal(t, "360.00", f.Baseline.Total.StringFixed(2), "both on all month")
	require.NotNil(t, f.WhatIf)
	assert.Equal(t, r.Total, f.WhatIf.Total, "the forecast and the meter agree")

	_, err = ta.c.CostForecast(ctx, agent.CostQuery{WhatIfs: []string{"never"}})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "what_if", e.Field)
}

// TestPricesRoundTrip: --set values go to the agent as written; a bad
// one is an *Error naming the field and nothing is stored.
func TestPricesRoundTrip(t *testing.T) {
	ctx := context.Background()
	ta := newTestAgent(t)
	p, err := ta.c.Prices(ctx)
	require.NoError(t, err)
	assert.Equal(t, "0.25", p.UnitHour().String())

	bad := context.WithValue(ctx, breaksContract, true)
	for field, value := range map[string]string{"cpu_ghz_hour": "abc", "disk_tb_hour": "-0.03"} {
		_, err := ta.c.UpdatePrices(bad, p, map[string]string{field: value})
		var e *Error
		require.ErrorAs(t, err, &e, field)
		assert.Equal(t, field, e.Field)
		assert.ErrorIs(t, err, model.ErrInvalid)
	}
	after, err := ta.c.Prices(ctx)
	require.NoError(t, err)
	assert.Equal(t, p.Rows(), after.Rows(), "nothing stored")

	up, err := ta.c.UpdatePrices(ctx, p, map[string]string{"cpu_ghz_hour": "0.15", "only_running": "false"})
	require.NoError(t, err)
	assert.Equal(t, "0.15", up.CPUGHzHour.String())
	assert.Equal(t, "0.03", up.DiskTBHour.String(), "kept")
	assert.False(t, up.OnlyRunning)

	back, err := ta.c.SetPrices(ctx, cost.DefaultPrices())
	require.NoError(t, err)
	assert.Equal(t, cost.DefaultPrices().Rows(), back.Rows())
}
