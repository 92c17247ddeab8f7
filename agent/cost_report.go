package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/wisp-vmm/wisp/agent/cost"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/policy"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/vmm"
)

// CostQuery selects what GET /v1/cost and /v1/cost/forecast price.
type CostQuery struct {
	Month string // YYYY-MM; "": the month the agent's clock is in
	VM    string // "": every VM
	TZ    string // the zone months and days are in; "": the agent's
	// WhatIfs are the forecast's changes (cost.ParseWhatIf), and
	// off-holidays=CC (a country or region calendar, as schedules take).
	WhatIfs []string
}

// Prices is the price table: the administrator's, else the seed's
// defaults.
func (a *Agent) Prices(ctx context.Context) (cost.Prices, error) {
	var p cost.Prices
	err := a.store.Get(cost.PricesBucket, cost.PricesKey, &p)
	if errors.Is(err, model.ErrNotFound) {
		return cost.DefaultPrices(), nil
	}
	if err != nil {
		return cost.Prices{}, fmt.Errorf("price table: %w", err)
	}
	return p, nil
}

// SetPrices stores the price table.
func (a *Agent) SetPrices(ctx context.Context, p cost.Prices) (cost.Prices, error) {
	if err := a.store.Put(cost.PricesBucket, cost.PricesKey, p); err != nil {
		return cost.Prices{}, fmt.Errorf("price table: %w", err)
	}
	return p, nil
}

// RecordTraffic adds bytes a VM moved over its NICs to the ledger, as a
// "traffic" event at the agent's clock. The NIC counters that call it
// are the VMM's to report.
func (a *Agent) RecordTraffic(vm string, bytes uint64) error {
	if bytes == 0 {
		return nil
	}
	return a.store.AppendEvents(model.Event{Time: a.now(), VM: vm, Kind: model.EventTraffic, TrafficBytes: bytes})
}

// costPeriod is the month q asks for, in its zone.
func (a *Agent) costPeriod(q CostQuery) (cost.Period, error) {
	loc := time.Local
	if q.TZ != "" {
		var err error
		if loc, err = time.LoadLocation(q.TZ); err != nil {
			return cost.Period{}, &model.FieldError{Field: "tz", Msg: fmt.Sprintf("%q is not a time zone; give one such as Europe/Berlin or UTC", q.TZ)}
		}
	}
	if q.Month == "" {
		return cost.MonthOf(a.now().In(loc)), nil
	}
	return cost.ParseMonth(q.Month, loc)
}

// diskBytes is a VM's allocated disk: the apparent size of each --disk
// file, looked at now (a disk grown since counts as grown all month). A
// file that is not there counts nothing; a deleted VM's disks are not
// known any more.
func diskBytes(spec model.Spec) uint64 {
	var total uint64
	for _, d := range spec.Disks {
		disk, err := vmm.ParseDisk(d)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(disk.Path); err == nil && fi.Size() > 0 {
			total += uint64(fi.Size())
		}
	}
	return total
}

// Cost meters the month's ledger.
func (a *Agent) Cost(ctx context.Context, q CostQuery) (cost.Report, error) {
	period, err := a.costPeriod(q)
	if err != nil {
		return cost.Report{}, err
	}
	prices, err := a.Prices(ctx)
	if err != nil {
		return cost.Report{}, err
	}
	evs, err := a.store.Events(store.EventQuery{VM: q.VM})
	if err != nil {
		return cost.Report{}, err
	}
	vms, err := a.list()
	if err != nil {
		return cost.Report{}, err
	}
	if q.VM != "" && len(evs) == 0 {
		return cost.Report{}, fmt.Errorf("vm %s %w", q.VM, model.ErrNotFound)
	}
	disks := map[string]uint64{}
	for _, vm := range vms {
		disks[vm.Name] = diskBytes(vm.Spec)
	}
	return cost.Meter(cost.Input{Period: period, Until: a.now(), Prices: prices, Events: evs, DiskBytes: disks, VM: q.VM}), nil
}

// CostForecast prices the month with the VMs as they are (every VM that
// is wanted running, or runs, on all month at its size) and with q's
// what-ifs. Each VM's traffic is the month's so far, scaled to the whole
// month.
func (a *Agent) CostForecast(ctx context.Context, q CostQuery) (cost.Forecast, error) {
	period, err := a.costPeriod(q)
	if err != nil {
		return cost.Forecast{}, err
	}
	whatIfs, err := a.whatIfs(q, period)
	if err != nil {
		return cost.Forecast{}, err
	}
	sofar, err := a.Cost(ctx, CostQuery{Month: period.Month, TZ: period.Start.Location().String(), VM: q.VM})
	if err != nil {
		return cost.Forecast{}, err
	}
	traffic := map[string]uint64{}
	now := a.now()
	for _, v := range sofar.VMs {
		traffic[v.VM] = projected(v.TrafficBytes, period, now)
	}
	vms, err := a.list()
	if err != nil {
		return cost.Forecast{}, err
	}
	var plans []cost.Plan
	for _, vm := range vms {
		on := vm.Desired == model.DesiredRunning || vm.Observed == model.ObservedRunning || vm.Observed == model.ObservedPaused
		if !on || (q.VM != "" && vm.Name != q.VM) {
			continue
		}
		plans = append(plans, cost.Plan{VM: vm.Name, CPUs: vm.Spec.CPUs, MemoryBytes: vm.Spec.MemoryBytes,
			DiskBytes: diskBytes(vm.Spec), TrafficBytes: traffic[vm.Name]})
	}
	return cost.ForecastPlans(sofar.Prices, period, plans, whatIfs), nil
}

// projected scales the bytes moved from the period's start to now to the
// whole period.
func projected(bytes uint64, p cost.Period, now time.Time) uint64 {
	if !now.After(p.Start) || !now.Before(p.End) {
		return bytes
	}
	full := decimal.NewFromInt(p.End.Sub(p.Start).Nanoseconds())
	elapsed := decimal.NewFromInt(now.Sub(p.Start).Nanoseconds())
	return uint64(decimal.NewFromUint64(bytes).Mul(full).DivRound(elapsed, 0).IntPart())
}

// whatIfs reads q's what-ifs; off-holidays=CC becomes the calendar's
// holidays in the period.
func (a *Agent) whatIfs(q CostQuery, p cost.Period) ([]cost.WhatIf, error) {
	var out []cost.WhatIf
	for _, s := range q.WhatIfs {
		cc, ok := strings.CutPrefix(s, "off-holidays=")
		if !ok {
			w, err := cost.ParseWhatIf(s)
			if err != nil {
				return nil, err
			}
			out = append(out, w)
			continue
		}
		// The schedules' check of a calendar name, and their calendar.
		sched, err := policy.Prepare(policy.Schedule{VM: "cost", Action: policy.ActionStop, At: "00:00", TZ: "UTC",
			Holidays: &policy.Holidays{Calendar: cc}})
		if err != nil {
			return nil, &model.FieldError{Field: "what_if", Msg: fmt.Sprintf("%q: %v", s, err)}
		}
		cal := policy.NewCalendar(sched.Holidays)
		var dates []string
		for _, day := range p.Days()[:len(p.Days())-1] {
			if _, holiday := cal.Holiday(policy.DateOf(day)); holiday {
				dates = append(dates, day.Format(time.DateOnly))
			}
		}
		out = append(out, cost.OffDays(s, dates))
	}
	return out, nil
}
