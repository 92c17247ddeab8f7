package cost

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Interval is a stretch of time, [From, To).
type Interval struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Plan is a VM as a forecast sees it: its size, and when it is off in the
// simulated month (running the rest of the time).
type Plan struct {
	VM           string
	CPUs         int
	MemoryBytes  uint64
	DiskBytes    uint64
	TrafficBytes uint64 // expected in the month
	Off          []Interval
}

// PricePlans prices VMs over a simulated month: each runs from the
// period's start except in its off intervals. It builds the events the
// agent would have written and runs Meter on them, so a forecast and a
// bill agree to the cent. Schedules hook in here: turn each schedule's
// stops and starts into off intervals per VM and pass them.
func PricePlans(prices Prices, period Period, plans []Plan) Report {
	var evs []model.Event
	disks := map[string]uint64{}
	for _, pl := range plans {
		disks[pl.VM] = pl.DiskBytes
		ev := func(t time.Time, kind, from, to string) model.Event {
			return model.Event{Time: t, VM: pl.VM, Kind: kind, From: from, To: to, CPUs: pl.CPUs, MemoryBytes: pl.MemoryBytes}
		}
		evs = append(evs, ev(period.Start, model.EventCreated, "", ""),
			ev(period.Start, model.EventObserved, string(model.ObservedStopped), string(model.ObservedRunning)))
		if pl.TrafficBytes > 0 {
			evs = append(evs, model.Event{Time: period.Start, VM: pl.VM, Kind: model.EventTraffic, TrafficBytes: pl.TrafficBytes})
		}
		for _, off := range merge(pl.Off, period) {
			evs = append(evs,
				ev(off.From, model.EventObserved, string(model.ObservedRunning), string(model.ObservedStopped)),
				ev(off.To, model.EventObserved, string(model.ObservedStopped), string(model.ObservedRunning)))
		}
	}
	// Seq keeps each VM's events in the order written when times tie.
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
	}
	return Meter(Input{Period: period, Until: period.End, Prices: prices, Events: evs, DiskBytes: disks})
}

// merge clips intervals to the period, sorts them and joins those that
// touch or overlap.
func merge(in []Interval, p Period) []Interval {
	var out []Interval
	for _, iv := range in {
		iv.From, iv.To = maxTime(iv.From, p.Start), minTime(iv.To, p.End)
		if iv.To.After(iv.From) {
			out = append(out, iv)
		}
	}
	slices.SortFunc(out, func(a, b Interval) int { return a.From.Compare(b.From) })
	var merged []Interval
	for _, iv := range out {
		if n := len(merged); n > 0 && !iv.From.After(merged[n-1].To) {
			merged[n-1].To = maxTime(merged[n-1].To, iv.To)
			continue
		}
		merged = append(merged, iv)
	}
	return merged
}

// WhatIf is one change a forecast tries, as `wisp cost --forecast
// --what-if` names it:
//
//	off-nights=8h         every VM off 8 h each night (centred on 02:00: 22:00-06:00)
//	half-off-nights=12h   every other VM, in name order, off 12 h each night (20:00-08:00)
//	off-weekends          every VM off on Saturdays and Sundays
//	off-days=2025-12-25,2025-12-26   every VM off on these days (public holidays)
type WhatIf struct {
	Name string
	// offFor returns VM i's (of n, in name order) off intervals in the
	// period.
	offFor func(p Period, i, n int) []Interval
}

// nightMiddle is the time of day nights are centred on.
const nightMiddle = 2 * time.Hour

// ParseWhatIf reads one what-if. Bad input is a *model.FieldError naming
// "what_if".
func ParseWhatIf(s string) (WhatIf, error) {
	kind, arg, hasArg := strings.Cut(s, "=")
	bad := func(msg string) (WhatIf, error) {
		return WhatIf{}, &model.FieldError{Field: "what_if", Msg: fmt.Sprintf("%q: %s", s, msg)}
	}
	switch kind {
	case "off-nights", "half-off-nights":
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil || d <= 0 || d > 24*time.Hour {
			return bad("give how long the night is, from 1m to 24h, e.g. " + kind + "=8h")
		}
		half := kind == "half-off-nights"
		return WhatIf{Name: s, offFor: func(p Period, i, _ int) []Interval {
			if half && i%2 == 0 {
				return nil
			}
			return daily(p, func(day time.Time) (Interval, bool) {
				// The night that begins on day.
				mid := wholeDay(day).To.Add(nightMiddle)
				return Interval{From: mid.Add(-d / 2), To: mid.Add(d - d/2)}, true
			})
		}}, nil
	case "off-weekends":
		if hasArg {
			return bad("takes no value")
		}
		return WhatIf{Name: s, offFor: func(p Period, _, _ int) []Interval {
			return daily(p, func(day time.Time) (Interval, bool) {
				wd := day.Weekday()
				return wholeDay(day), wd == time.Saturday || wd == time.Sunday
			})
		}}, nil
	case "off-days":
		var dates []string
		for _, ds := range strings.Split(arg, ",") {
			if _, err := time.Parse(time.DateOnly, ds); err != nil {
				return bad(fmt.Sprintf("%q is not a date; give YYYY-MM-DD,YYYY-MM-DD", ds))
			}
			dates = append(dates, ds)
		}
		return OffDays(s, dates), nil
	}
	return bad("unknown what-if; want off-nights=DURATION, half-off-nights=DURATION, off-weekends or off-days=DATE,...")
}

// OffDays is a what-if that switches every VM off on the dates given
// (YYYY-MM-DD), whole days in the period's zone: public holidays that a
// calendar resolved, under the name the user gave.
func OffDays(name string, dates []string) WhatIf {
	return WhatIf{Name: name, offFor: func(p Period, _, _ int) []Interval {
		return daily(p, func(day time.Time) (Interval, bool) {
			return wholeDay(day), slices.Contains(dates, day.Format(time.DateOnly))
		})
	}}
}

// daily collects fn's interval for every day from the one before the
// period (its night reaches into the first day) to the last.
func daily(p Period, fn func(day time.Time) (Interval, bool)) []Interval {
	var out []Interval
	first := p.Start.AddDate(0, 0, -1)
	for day := first; day.Before(p.End); day = time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, day.Location()) {
		if iv, ok := fn(day); ok {
			out = append(out, iv)
		}
	}
	return out
}

func wholeDay(day time.Time) Interval {
	return Interval{From: day, To: time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, day.Location())}
}

// Apply adds the what-ifs' off intervals to plans (sorted by VM name
// first, so "every other VM" is the same VMs every time).
func Apply(p Period, plans []Plan, whatIfs []WhatIf) []Plan {
	out := slices.Clone(plans)
	slices.SortFunc(out, func(a, b Plan) int { return strings.Compare(a.VM, b.VM) })
	for i := range out {
		out[i].Off = slices.Clone(out[i].Off)
		for _, w := range whatIfs {
			out[i].Off = append(out[i].Off, w.offFor(p, i, len(out))...)
		}
	}
	return out
}

// Forecast is a month's cost with the VMs as they are, and with the
// what-ifs applied.
type Forecast struct {
	Baseline Report   `json:"baseline"`
	WhatIfs  []string `json:"what_ifs"`
	WhatIf   *Report  `json:"what_if,omitempty"`
	// Saving is Baseline's total less WhatIf's.
	Saving *decimal.Decimal `json:"saving,omitempty"`
}

// ForecastPlans prices plans as they are and, when there are what-ifs,
// with them.
func ForecastPlans(prices Prices, p Period, plans []Plan, whatIfs []WhatIf) Forecast {
	f := Forecast{Baseline: PricePlans(prices, p, plans), WhatIfs: []string{}}
	if len(whatIfs) == 0 {
		return f
	}
	r := PricePlans(prices, p, Apply(p, plans, whatIfs))
	saving := f.Baseline.Total.Sub(r.Total)
	f.WhatIf, f.Saving = &r, &saving
	for _, w := range whatIfs {
		f.WhatIfs = append(f.WhatIfs, w.Name)
	}
	return f
}
