package cost

import (
	"errors"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

const (
	gib = uint64(1) << 30
	tb  = uint64(1_000_000_000_000) // 1000 GB, as disks are sold
	gb  = uint64(1_000_000_000)
)

// ledger writes the events of VMs whose lives a test describes.
type ledger struct {
	evs []model.Event
}

func (l *ledger) add(ev model.Event) {
	ev.Seq = uint64(len(l.evs) + 1)
	l.evs = append(l.evs, ev)
}

// unit is a VM of the seed's unit size, created before the month and
// running from then on.
func (l *ledger) unit(name string, since time.Time) {
	l.add(model.Event{Time: since, VM: name, Kind: model.EventCreated, CPUs: 1, MemoryBytes: gib})
	l.observe(name, since, model.ObservedStopped, model.ObservedRunning)
}

func (l *ledger) observe(name string, at time.Time, from, to model.Observed) {
	l.add(model.Event{Time: at, VM: name, Kind: model.EventObserved, From: string(from), To: string(to), CPUs: 1, MemoryBytes: gib})
}

// off records name stopped over each interval, as the agent would have
// written it when the VM was stopped and started again.
func (l *ledger) off(name string, ivs []Interval) {
	for _, iv := range merge(ivs, Period{Start: iv0, End: ivEnd}) {
		l.observe(name, iv.From, model.ObservedRunning, model.ObservedStopped)
		l.observe(name, iv.To, model.ObservedStopped, model.ObservedRunning)
	}
}

// traffic records bytes moved by name at t.
func (l *ledger) traffic(name string, at time.Time, bytes uint64) {
	l.add(model.Event{Time: at, VM: name, Kind: model.EventTraffic, TrafficBytes: bytes})
}

// Bounds wide enough for any test's intervals.
var (
	iv0   = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	ivEnd = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

func month(t *testing.T, s string) Period {
	t.Helper()
	p, err := ParseMonth(s, time.UTC)
	require.NoError(t, err)
	return p
}

func whatIfs(t *testing.T, names ...string) []WhatIf {
	t.Helper()
	var out []WhatIf
	for _, n := range names {
		w, err := ParseWhatIf(n)
		require.NoError(t, err)
		out = append(out, w)
	}
	return out
}

// offIntervals is what the what-ifs switch off for VM i of n.
func offIntervals(t *testing.T, p Period, i, n int, names ...string) []Interval {
	var out []Interval
	for _, w := range whatIfs(t, names...) {
		out = append(out, w.offFor(p, i, n)...)
	}
	return out
}

func TestPricesDefaultIsTheSeedsUnit(t *testing.T) {
	p := DefaultPrices()
	assert.Equal(t, "0.25", p.UnitHour().String())
	// The traffic beyond the included costs, per GB, what the included
	// 100 GB cost over a 30-day month: 0.02 × 720 / 100.
	assert.True(t, p.TrafficHour.Mul(decimal.NewFromInt(720)).Div(p.TrafficIncludedGB).Equal(p.TrafficGB))
}

// TestMeterSeedArithmetic meters the ledger of the seed's scenarios. Each
// VM is the seed's unit: 1 vCPU (1 GHz), 1 GiB, a 1000 GB disk and 100 GB
// of traffic in the month, $0.25 an hour while it runs.
func TestMeterSeedArithmetic(t *testing.T) {
	april := month(t, "2026-04")               // 30 days, Wed 1st; weekends 4-5, 11-12, 18-19, 25-26
	december := month(t, "2025-12")            // 31 days, Mon 1st; 23 weekdays
	germanChristmas := "2025-12-25,2025-12-26" // DE: 1. and 2. Weihnachtstag (Thu, Fri)
	before := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		period Period
		// vms: how many; whatIfs: switched off as these say (VM i of n,
		// in name order).
		vms             int
		whatIfs         []string
		total, average  string
		days0, daysLast string // the first and last day's cost
	}{
		// 30 days × 24 h × $0.25 = $180.00.
		{name: "always on", period: april, vms: 1, total: "180.00", average: "180.00", days0: "6.00", daysLast: "6.00"},
		// Off 22:00-06:00: 30 × 16 h × $0.25 = $120.00, the seed's
		// "about $120". Day 1 runs 06:00-22:00 only: 16 × 0.25 = $4.00.
		{name: "every server off 8 h each night", period: april, vms: 1, whatIfs: []string{"off-nights=8h"},
			total: "120.00", average: "120.00", days0: "4.00", daysLast: "4.00"},
		// VM a always on: $180.00; VM b off 20:00-08:00: 30 × 12 h ×
		// $0.25 = $90.00. $270.00 for two, $135.00 on average.
		{name: "half the servers off 12 h each night", period: april, vms: 2, whatIfs: []string{"half-off-nights=12h"},
			total: "270.00", average: "135.00", days0: "9.00", daysLast: "9.00"},
		// 22 weekdays × 24 h × $0.25 = $132.00. April 1st is a
		// Wednesday ($6.00), the 30th a Thursday.
		{name: "weekends off", period: april, vms: 1, whatIfs: []string{"off-weekends"},
			total: "132.00", average: "132.00", days0: "6.00", daysLast: "6.00"},
		// 22 weekdays × 16 h × $0.25 = $88.00.
		{name: "nights and weekends off", period: april, vms: 1, whatIfs: []string{"off-nights=8h", "off-weekends"},
			total: "88.00", average: "88.00", days0: "4.00", daysLast: "4.00"},
		// December 2025 in Germany: 23 weekdays less Christmas Day and
		// Boxing Day (Thu 25th, Fri 26th) = 21 working days × 16 h ×
		// $0.25 = $84.00 (two VMs: $168.00). The 31st is a Wednesday:
		// $4.00.
		{name: "nights, weekends and two public holidays (DE) off", period: december, vms: 2,
			whatIfs: []string{"off-nights=8h", "off-weekends", "off-days=" + germanChristmas},
			total:   "168.00", average: "84.00", days0: "8.00", daysLast: "8.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l ledger
			disks := map[string]uint64{}
			for i := range tt.vms {
				name := string(rune('a' + i))
				disks[name] = tb
				l.unit(name, before)
				l.off(name, offIntervals(t, tt.period, i, tt.vms, tt.whatIfs...))
				l.traffic(name, tt.period.Start.AddDate(0, 0, 10), 100*gb)
			}
			r := Meter(Input{Period: tt.period, Until: tt.period.End.Add(time.Hour), Prices: DefaultPrices(), Events: l.evs, DiskBytes: disks})
			assert.Equal(t, tt.total, r.Total.StringFixed(2))
			assert.Equal(t, tt.average, r.Average.StringFixed(2))
			require.Len(t, r.VMs, tt.vms)
			require.Len(t, r.Days, len(tt.period.Days())-1)
			assert.Equal(t, tt.days0, r.Days[0].Cost.StringFixed(2))
			assert.Equal(t, tt.daysLast, r.Days[len(r.Days)-1].Cost.StringFixed(2))
			assert.True(t, r.Until.Equal(tt.period.End))

			// The forecast of the same month prices the same plans to
			// the cent.
			var plans []Plan
			for i := range tt.vms {
				plans = append(plans, Plan{VM: string(rune('a' + i)), CPUs: 1, MemoryBytes: gib, DiskBytes: tb, TrafficBytes: 100 * gb})
			}
			f := ForecastPlans(DefaultPrices(), tt.period, plans, whatIfs(t, tt.whatIfs...))
			got := f.Baseline
			if f.WhatIf != nil {
				got = *f.WhatIf
				assert.Equal(t, tt.whatIfs, f.WhatIfs)
				assert.Equal(t, f.Baseline.Total.Sub(got.Total).StringFixed(2), f.Saving.StringFixed(2))
			}
			assert.Equal(t, tt.total, got.Total.StringFixed(2))
			assert.Equal(t, tt.average, got.Average.StringFixed(2))
		})
	}
}

// TestMeterSplitsPerResource checks the split and the settings: a
// resize, traffic beyond the included, a paused VM with only_running off.
func TestMeterSplitsPerResource(t *testing.T) {
	april := month(t, "2026-04")
	mid := time.Date(2026, 4, 16, 0, 0, 0, 0, time.UTC)
	notOnlyRunning := DefaultPrices()
	notOnlyRunning.OnlyRunning = false
	tests := []struct {
		name   string
		prices Prices
		ledger func(l *ledger)
		until  time.Time
		// CPU, memory, disk, traffic, total, running hours
		want [6]string
	}{
		{
			// 720 h: CPU 720 × 0.10 = 72.00, memory 72.00, disk 720 ×
			// 0.03 = 21.60, port 720 × 0.02 = 14.40.
			name: "the unit", prices: DefaultPrices(),
			ledger: func(l *ledger) { l.unit("a", iv0); l.traffic("a", mid, 100*gb) },
			want:   [6]string{"72.00", "72.00", "21.60", "14.40", "180.00", "720"},
		},
		{
			// Half-way 2 vCPUs and 2 GiB: CPU (360 × 1 + 360 × 2) ×
			// 0.10 = 108.00, memory the same; disk and port unchanged.
			name: "a resize changes the meter from that moment", prices: DefaultPrices(),
			ledger: func(l *ledger) {
				l.unit("a", iv0)
				l.add(model.Event{Time: mid, VM: "a", Kind: model.EventResized, CPUs: 2, MemoryBytes: 2 * gib})
			},
			want: [6]string{"108.00", "108.00", "21.60", "14.40", "252.00", "720"},
		},
		{
			// 150 GB: 50 GB beyond the included × 0.144 = 7.20 on top
			// of the port's 14.40.
			name: "traffic beyond the included", prices: DefaultPrices(),
			ledger: func(l *ledger) {
				l.unit("a", iv0)
				l.traffic("a", april.Start.Add(time.Hour), 60*gb)
				l.traffic("a", mid, 90*gb)
			},
			want: [6]string{"72.00", "72.00", "21.60", "21.60", "187.20", "720"},
		},
		{
			// Created on the 1st, running 10 days, paused 10, stopped
			// 10. Only running: 240 h × 0.25 = 60.00.
			name: "paused and stopped cost nothing by default", prices: DefaultPrices(),
			ledger: pausedThenStopped(april),
			want:   [6]string{"24.00", "24.00", "7.20", "4.80", "60.00", "240"},
		},
		{
			// CPU, memory, port while running or paused, 480 h: 48.00,
			// 48.00, 9.60; disk the whole month it exists, 720 h × 0.03
			// = 21.60. 127.20.
			name: "only_running off charges paused VMs and disks", prices: notOnlyRunning,
			ledger: pausedThenStopped(april),
			want:   [6]string{"48.00", "48.00", "21.60", "9.60", "127.20", "240"},
		},
		{
			// Metered up to the agent's clock: 10 days of 24 h × 0.25 =
			// 60.00.
			name: "a month not over yet", prices: DefaultPrices(),
			ledger: func(l *ledger) { l.unit("a", iv0) },
			until:  april.Start.AddDate(0, 0, 10),
			want:   [6]string{"24.00", "24.00", "7.20", "4.80", "60.00", "240"},
		},
		{
			// Deleted on the 6th at 00:00: 5 days × 24 h × 0.25 = 30.00.
			name: "a deleted VM is charged until it was deleted", prices: notOnlyRunning,
			ledger: func(l *ledger) {
				l.unit("a", iv0)
				l.add(model.Event{Time: april.Start.AddDate(0, 0, 5), VM: "a", Kind: model.EventDeleted})
			},
			want: [6]string{"12.00", "12.00", "3.60", "2.40", "30.00", "120"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l ledger
			tt.ledger(&l)
			r := Meter(Input{Period: april, Until: tt.until, Prices: tt.prices, Events: l.evs, DiskBytes: map[string]uint64{"a": tb}})
			require.Len(t, r.VMs, 1)
			v := r.VMs[0]
			got := [6]string{v.CPU.StringFixed(2), v.Memory.StringFixed(2), v.Disk.StringFixed(2), v.Traffic.StringFixed(2), v.Total.StringFixed(2), v.RunningHours.String()}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, v.Total, r.Total)
		})
	}
}

func pausedThenStopped(p Period) func(l *ledger) {
	return func(l *ledger) {
		l.add(model.Event{Time: p.Start, VM: "a", Kind: model.EventCreated, CPUs: 1, MemoryBytes: gib})
		l.observe("a", p.Start, model.ObservedStopped, model.ObservedRunning)
		l.observe("a", p.Start.AddDate(0, 0, 10), model.ObservedRunning, model.ObservedPaused)
		l.observe("a", p.Start.AddDate(0, 0, 20), model.ObservedPaused, model.ObservedStopped)
	}
}

func TestMeterLeavesOutOtherVMsAndEarlierOnes(t *testing.T) {
	april := month(t, "2026-04")
	var l ledger
	l.unit("a", iv0)
	l.unit("b", iv0)
	l.unit("gone", iv0)
	l.add(model.Event{Time: april.Start.AddDate(0, 0, -1), VM: "gone", Kind: model.EventDeleted})
	r := Meter(Input{Period: april, Prices: DefaultPrices(), Events: l.evs, VM: "b"})
	require.Len(t, r.VMs, 1)
	assert.Equal(t, "b", r.VMs[0].VM)
	r = Meter(Input{Period: april, Prices: DefaultPrices(), Events: l.evs})
	assert.Equal(t, []string{"a", "b"}, []string{r.VMs[0].VM, r.VMs[1].VM})
}

func TestParsePrices(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantField string // "" means accepted
		wantMsg   string
		check     func(t *testing.T, p Prices)
	}{
		{name: "empty object is the defaults", body: `{}`, check: func(t *testing.T, p Prices) {
			assert.Equal(t, DefaultPrices().Rows(), p.Rows())
		}},
		{name: "strings and numbers, digit for digit", body: `{"cpu_ghz_hour":"0.12","traffic_gb":0.05,"only_running":false}`, check: func(t *testing.T, p Prices) {
			assert.Equal(t, "0.12", p.CPUGHzHour.String())
			assert.Equal(t, "0.05", p.TrafficGB.String())
			assert.False(t, p.OnlyRunning)
		}},
		{name: "negative", body: `{"memory_gib_hour":"-0.10"}`, wantField: "memory_gib_hour", wantMsg: `memory_gib_hour: "-0.10" is negative; give a price of 0 or more`},
		{name: "negative number", body: `{"disk_tb_hour":-1}`, wantField: "disk_tb_hour", wantMsg: `disk_tb_hour: "-1" is negative; give a price of 0 or more`},
		{name: "not a number", body: `{"cpu_ghz_hour":"ten cents"}`, wantField: "cpu_ghz_hour", wantMsg: `cpu_ghz_hour: "ten cents" is not a number; give a decimal such as 0.10`},
		{name: "exponent", body: `{"traffic_hour":"1e-2"}`, wantField: "traffic_hour"},
		{name: "unknown", body: `{"gpu_hour":"1"}`, wantField: "gpu_hour"},
		{name: "bool", body: `{"only_running":"yes"}`, wantField: "only_running"},
		{name: "not an object", body: `[1]`, wantField: "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePrices([]byte(tt.body))
			if tt.wantField == "" {
				require.NoError(t, err)
				tt.check(t, p)
				return
			}
			var fe *model.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.wantField, fe.Field)
			assert.True(t, errors.Is(err, model.ErrInvalid))
			if tt.wantMsg != "" {
				assert.Equal(t, tt.wantMsg, err.Error())
			}
		})
	}
}

func TestParseWhatIfRefuses(t *testing.T) {
	for _, s := range []string{"off-nights", "off-nights=0h", "off-nights=25h", "off-weekends=2", "off-days=25.12.2025", "sometimes"} {
		t.Run(s, func(t *testing.T) {
			_, err := ParseWhatIf(s)
			var fe *model.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "what_if", fe.Field)
		})
	}
}

func TestParseMonth(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	p, err := ParseMonth("2026-03", berlin)
	require.NoError(t, err)
	// March in Berlin loses an hour to the clock change.
	assert.Equal(t, 743*time.Hour, p.End.Sub(p.Start))
	assert.Len(t, p.Days(), 32)
	_, err = ParseMonth("March", berlin)
	assert.ErrorIs(t, err, model.ErrInvalid)
}
