package agent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/cost"
	"github.com/wisp-vmm/wisp/agent/model"
)

// costMonth is a 30-day month after any real clock these tests run by:
// the store stamps a VM's "created" event with the real time, and it must
// come before the month.
const costMonth = "2030-04"

// unitVM creates the seed's unit: 1 vCPU, 1 GiB, a 1000 GB disk (a sparse
// file of 10^12 bytes: its apparent size counts), running from March on,
// and 100 GB of traffic in April.
func unitVM(t *testing.T, a *Agent, clock *fakeClock, name string) {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(disk)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(1_000_000_000_000))
	require.NoError(t, f.Close())
	_, err = a.Create(context.Background(), CreateRequest{Name: name, Spec: model.Spec{CPUs: 1, MemoryBytes: 1 << 30, Disks: []string{disk}}})
	require.NoError(t, err)
	_, err = a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		vm.SetDesired(model.DesiredRunning, "test")
		evs := vm.SetObserved(model.ObservedRunning, "stands for a running VMM")
		evs[0].Time = time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC)
		return evs, nil
	})
	require.NoError(t, err)
	clock.Set(time.Date(2030, 4, 15, 12, 0, 0, 0, time.UTC))
	require.NoError(t, a.RecordTraffic(name, 100_000_000_000))
}

func dollars(t *testing.T, s decimal.Decimal) string {
	t.Helper()
	return s.StringFixed(2)
}

func TestCostOverHTTP(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	clock := &fakeClock{}
	h.a.cfg.Now = clock.Now
	unitVM(t, h.a, clock, "web1")
	clock.Set(time.Date(2030, 5, 2, 9, 0, 0, 0, time.UTC))

	// 30 days × 24 h × $0.25.
	var rep cost.Report
	h.mustJSON(t, http.MethodGet, "/v1/cost?month="+costMonth+"&tz=UTC", nil, http.StatusOK, &rep)
	assert.Equal(t, "180.00", dollars(t, rep.Total))
	require.Len(t, rep.VMs, 1)
	assert.Equal(t, "web1", rep.VMs[0].VM)
	assert.Equal(t, "21.60", dollars(t, rep.VMs[0].Disk), "720 h × $0.03 for the 1000 GB file")
	assert.Equal(t, uint64(100_000_000_000), rep.VMs[0].TrafficBytes)
	require.Len(t, rep.Days, 30)
	assert.Equal(t, "6.00", dollars(t, rep.Days[29].Cost))

	// With nights off (8 h): 30 × 16 h × $0.25 = $120.00, saving $60.00.
	var f cost.Forecast
	h.mustJSON(t, http.MethodGet, "/v1/cost/forecast?month="+costMonth+"&tz=UTC&what_if=off-nights%3D8h", nil, http.StatusOK, &f)
	assert.Equal(t, "180.00", dollars(t, f.Baseline.Total))
	require.NotNil(t, f.WhatIf)
	assert.Equal(t, "120.00", dollars(t, f.WhatIf.Total))
	assert.Equal(t, "60.00", dollars(t, *f.Saving))
	assert.Equal(t, []string{"off-nights=8h"}, f.WhatIfs)

	tests := []struct {
		name, path string
		status     int
		field      string
	}{
		{"bad month", "/v1/cost?month=April", http.StatusBadRequest, "month"},
		{"bad zone", "/v1/cost?tz=Mars/Olympus", http.StatusBadRequest, "tz"},
		{"unknown vm", "/v1/cost?vm=nope", http.StatusNotFound, ""},
		{"a what-if is for forecasts", "/v1/cost?what_if=off-weekends", http.StatusBadRequest, "what_if"},
		{"unknown what-if", "/v1/cost/forecast?what_if=sometimes", http.StatusBadRequest, "what_if"},
		{"unknown holiday calendar", "/v1/cost/forecast?what_if=off-holidays%3DXX", http.StatusBadRequest, "what_if"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.status == http.StatusBadRequest && tt.field != "what_if" && tt.field != "tz" {
				ctx = breaksContract(ctx) // the document's pattern refuses it too
			}
			status, _, body := h.call(t, ctx, http.MethodGet, tt.path, nil)
			assert.Equal(t, tt.status, status, "%s", body)
			if tt.field != "" {
				assert.Contains(t, string(body), `"field":"`+tt.field+`"`)
			}
		})
	}
}

// TestPricesOverHTTP: a price that is negative or not a number is one
// clear error naming it, and nothing is stored.
func TestPricesOverHTTP(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	var p cost.Prices
	h.mustJSON(t, http.MethodGet, "/v1/prices", nil, http.StatusOK, &p)
	assert.Equal(t, cost.DefaultPrices().Rows(), p.Rows())

	bad := []struct {
		name, body, field, message string
	}{
		{"negative", `{"memory_gib_hour":"-0.10"}`, "memory_gib_hour", `memory_gib_hour: \"-0.10\" is negative; give a price of 0 or more`},
		{"not a number", `{"cpu_ghz_hour":"ten cents"}`, "cpu_ghz_hour", `cpu_ghz_hour: \"ten cents\" is not a number; give a decimal such as 0.10`},
		{"unknown", `{"gpu_hour":"1"}`, "gpu_hour", ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := h.call(t, breaksContract(context.Background()), http.MethodPut, "/v1/prices", []byte(tt.body))
			assert.Equal(t, http.StatusBadRequest, status, "%s", body)
			assert.Contains(t, string(body), `"field":"`+tt.field+`"`)
			assert.Contains(t, string(body), tt.message)
			var after cost.Prices
			h.mustJSON(t, http.MethodGet, "/v1/prices", nil, http.StatusOK, &after)
			assert.Equal(t, cost.DefaultPrices().Rows(), after.Rows(), "nothing stored")
		})
	}

	var set cost.Prices
	h.mustJSON(t, http.MethodPut, "/v1/prices", map[string]any{"cpu_ghz_hour": "0.12", "only_running": false}, http.StatusOK, &set)
	assert.Equal(t, "0.12", set.CPUGHzHour.String())
	assert.Equal(t, "0.1", set.MemoryGiBHour.String(), "left out: the default")
	var got cost.Prices
	h.mustJSON(t, http.MethodGet, "/v1/prices", nil, http.StatusOK, &got)
	assert.Equal(t, set.Rows(), got.Rows())
	assert.False(t, got.OnlyRunning)
}

func TestOpenAPIDocumentHasCostRoutes(t *testing.T) {
	doc := loadDocument(t)
	for _, p := range []string{"/v1/prices", "/v1/cost", "/v1/cost/forecast"} {
		assert.NotNil(t, doc.Paths.Value(p), p)
	}
}
