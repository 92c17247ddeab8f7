package cost

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Units the prices are quoted in.
var (
	secondsPerHour = decimal.NewFromInt(3600)
	bytesPerGiB    = decimal.NewFromInt(1 << 30)
	bytesPerTB     = decimal.New(1, 12) // 1000 GB, as disks are sold
	bytesPerGB     = decimal.New(1, 9)
)

// AmountPlaces is the precision of every amount before it is shown in
// cents: one division per amount, rounded here.
const AmountPlaces = 12

// MonthLayout is how a month is written: 2026-04.
const MonthLayout = "2006-01"

// Period is a calendar month in a zone.
type Period struct {
	Month      string    // 2026-04
	Start, End time.Time // midnight of its first day, and of the next month's
}

// ParseMonth reads a month (YYYY-MM) in loc. Bad input is a
// *model.FieldError naming "month".
func ParseMonth(s string, loc *time.Location) (Period, error) {
	t, err := time.ParseInLocation(MonthLayout, s, loc)
	if err != nil {
		return Period{}, &model.FieldError{Field: "month", Msg: fmt.Sprintf("%q; give a month as YYYY-MM, e.g. 2026-04", s)}
	}
	return MonthOf(t), nil
}

// MonthOf is the month t falls in, in t's zone.
func MonthOf(t time.Time) Period {
	start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, t.Location())
	return Period{Month: start.Format(MonthLayout), Start: start, End: start.AddDate(0, 1, 0)}
}

// Days are the midnights of the period's days, and the end: day i is
// [Days[i], Days[i+1]). A day of a clock change is 23 or 25 hours.
func (p Period) Days() []time.Time {
	var days []time.Time
	for d := p.Start; d.Before(p.End); {
		days = append(days, d)
		d = time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, d.Location())
	}
	return append(days, p.End)
}

// Input is what Meter prices.
type Input struct {
	Period Period
	// Until ends the metering when the month is not over yet (the
	// agent's clock); zero or later than Period.End: the whole month.
	Until  time.Time
	Prices Prices
	// Events are the ledger, any VMs, any order (sorted by time, then
	// Seq); events before the period set the state it starts in.
	Events []model.Event
	// DiskBytes is each VM's allocated disk (the apparent size of its
	// disk files); a VM not in it has none.
	DiskBytes map[string]uint64
	// VM, when set, meters that VM alone.
	VM string
}

// Report is what each VM cost in a period. Amounts are dollars rounded
// to cents (half away from zero); a VM's total is the sum of its rounded
// parts, the report's the sum of the VMs'. Days are rounded on their own,
// so they may differ from the total by a cent or so.
type Report struct {
	Month  string          `json:"month"`
	Zone   string          `json:"zone"`
	Start  time.Time       `json:"start"`
	End    time.Time       `json:"end"`
	Until  time.Time       `json:"until"` // metered up to
	Prices Prices          `json:"prices"`
	VMs    []VMCost        `json:"vms"`
	Total  decimal.Decimal `json:"total"`
	// Average is Total over the VMs (0 without VMs).
	Average decimal.Decimal `json:"average"`
	Days    []Day           `json:"days"`
}

// VMCost is one VM's part of a Report.
type VMCost struct {
	VM           string          `json:"vm"`
	RunningHours decimal.Decimal `json:"running_hours"`
	TrafficBytes uint64          `json:"traffic_bytes"`
	CPU          decimal.Decimal `json:"cpu"`
	Memory       decimal.Decimal `json:"memory"`
	Disk         decimal.Decimal `json:"disk"`
	Traffic      decimal.Decimal `json:"traffic"` // the port's hours and traffic beyond the included
	Total        decimal.Decimal `json:"total"`
	// Days is the cost of each day of the period.
	Days []decimal.Decimal `json:"days"`
}

// Day is the cost of all VMs on one day.
type Day struct {
	Date string          `json:"date"` // YYYY-MM-DD
	Cost decimal.Decimal `json:"cost"`
}

// usage is what a VM used in a stretch of time, in exact unit-seconds.
type usage struct {
	running   decimal.Decimal // seconds observed running
	vcpu      decimal.Decimal // vCPU-seconds
	memory    decimal.Decimal // byte-seconds
	disk      decimal.Decimal // byte-seconds
	port      decimal.Decimal // seconds the network port is charged
	overBytes decimal.Decimal // traffic beyond the month's included
}

func (u *usage) add(o usage) {
	u.running = u.running.Add(o.running)
	u.vcpu = u.vcpu.Add(o.vcpu)
	u.memory = u.memory.Add(o.memory)
	u.disk = u.disk.Add(o.disk)
	u.port = u.port.Add(o.port)
	u.overBytes = u.overBytes.Add(o.overBytes)
}

// amounts prices u: CPU, memory, disk, traffic, each exact to
// AmountPlaces.
func (p Prices) amounts(u usage) [4]decimal.Decimal {
	per := func(rate, used, unit decimal.Decimal) decimal.Decimal {
		return rate.Mul(used).DivRound(unit, AmountPlaces)
	}
	return [4]decimal.Decimal{
		per(p.CPUGHzHour.Mul(p.VCPUGHz), u.vcpu, secondsPerHour),
		per(p.MemoryGiBHour, u.memory, secondsPerHour.Mul(bytesPerGiB)),
		per(p.DiskTBHour, u.disk, secondsPerHour.Mul(bytesPerTB)),
		per(p.TrafficHour, u.port, secondsPerHour).Add(per(p.TrafficGB, u.overBytes, bytesPerGB)),
	}
}

// vmMeter follows one VM through its events.
type vmMeter struct {
	prices    Prices
	days      []time.Time
	diskBytes uint64

	exists      bool
	seen        bool // existed at some time in the period
	observed    model.Observed
	cpus        int
	memoryBytes uint64
	traffic     decimal.Decimal // bytes in the period so far
	trafficIn   uint64
	perDay      []usage
}

// account adds [from, to) in the VM's current state, split by day.
func (m *vmMeter) account(from, to time.Time) {
	if !to.After(from) {
		return
	}
	if m.exists {
		m.seen = true
	}
	running := m.observed == model.ObservedRunning
	holds := running
	if !m.prices.OnlyRunning {
		switch m.observed {
		case model.ObservedPaused, model.ObservedStarting, model.ObservedStopping:
			holds = true
		}
	}
	diskCharged := running || (!m.prices.OnlyRunning && m.exists)
	if !m.exists {
		return
	}
	for i := range len(m.days) - 1 {
		a, b := maxTime(from, m.days[i]), minTime(to, m.days[i+1])
		if !b.After(a) {
			continue
		}
		sec := decimal.NewFromInt(b.Sub(a).Nanoseconds()).Shift(-9)
		u := &m.perDay[i]
		if running {
			u.running = u.running.Add(sec)
		}
		if holds {
			u.vcpu = u.vcpu.Add(sec.Mul(decimal.NewFromInt(int64(m.cpus))))
			u.memory = u.memory.Add(sec.Mul(decimal.NewFromUint64(m.memoryBytes)))
			u.port = u.port.Add(sec)
		}
		if diskCharged {
			u.disk = u.disk.Add(sec.Mul(decimal.NewFromUint64(m.diskBytes)))
		}
	}
}

// addTraffic counts bytes moved at t; what goes beyond the month's
// included traffic is charged on t's day.
func (m *vmMeter) addTraffic(t time.Time, bytes uint64) {
	m.seen = true
	m.trafficIn += bytes
	included := m.prices.TrafficIncludedGB.Mul(bytesPerGB)
	before := m.traffic
	m.traffic = m.traffic.Add(decimal.NewFromUint64(bytes))
	over := m.traffic.Sub(decimal.Max(included, before))
	if !over.IsPositive() {
		return
	}
	for i := range len(m.days) - 1 {
		if !t.Before(m.days[i]) && t.Before(m.days[i+1]) {
			m.perDay[i].overBytes = m.perDay[i].overBytes.Add(over)
			return
		}
	}
}

// apply changes the VM's state as ev says.
func (m *vmMeter) apply(ev model.Event) {
	switch ev.Kind {
	case model.EventDeleted:
		m.exists = false
		return
	case model.EventCreated:
		m.observed = model.ObservedStopped
	case model.EventObserved:
		m.observed = model.Observed(ev.To)
	case model.EventResized:
	default:
		// Other kinds (desired, schedule, traffic) change neither state
		// nor size; they still say the VM exists.
		m.exists = true
		return
	}
	m.exists = true
	if ev.CPUs != 0 || ev.MemoryBytes != 0 {
		m.cpus, m.memoryBytes = ev.CPUs, ev.MemoryBytes
	}
}

// Meter prices what each VM used in the period up to in.Until, from the
// ledger: a VM's state and size are those of its latest "created",
// "observed" and "resized" events, so a resize changes the meter from
// that moment; "traffic" events add bytes.
func Meter(in Input) Report {
	p := in.Period
	until := in.Until
	if until.IsZero() || until.After(p.End) {
		until = p.End
	}
	if until.Before(p.Start) {
		until = p.Start
	}
	days := p.Days()
	byVM := map[string][]model.Event{}
	for _, ev := range in.Events {
		if ev.VM == "" || (in.VM != "" && ev.VM != in.VM) {
			continue
		}
		byVM[ev.VM] = append(byVM[ev.VM], ev)
	}
	names := make([]string, 0, len(byVM))
	for name := range byVM {
		names = append(names, name)
	}
	slices.Sort(names)

	r := Report{Month: p.Month, Zone: p.Start.Location().String(), Start: p.Start, End: p.End, Until: until,
		Prices: in.Prices, VMs: []VMCost{}}
	dayTotals := make([]decimal.Decimal, len(days)-1)
	for _, name := range names {
		evs := byVM[name]
		slices.SortStableFunc(evs, func(a, b model.Event) int {
			if c := a.Time.Compare(b.Time); c != 0 {
				return c
			}
			return compareSeq(a.Seq, b.Seq)
		})
		m := &vmMeter{prices: in.Prices, days: days, diskBytes: in.DiskBytes[name],
			observed: model.ObservedStopped, perDay: make([]usage, len(days)-1)}
		cursor := p.Start
		for _, ev := range evs {
			if !ev.Time.Before(until) {
				break
			}
			if ev.Time.After(cursor) {
				m.account(cursor, ev.Time)
				cursor = ev.Time
			}
			if ev.Kind == model.EventTraffic {
				if !ev.Time.Before(p.Start) {
					m.addTraffic(ev.Time, ev.TrafficBytes)
				}
				continue
			}
			m.apply(ev)
		}
		m.account(cursor, until)
		if !m.seen {
			continue
		}
		vc := VMCost{VM: name, TrafficBytes: m.trafficIn, Days: make([]decimal.Decimal, len(days)-1)}
		var total usage
		for i, u := range m.perDay {
			total.add(u)
			day := sum(in.Prices.amounts(u))
			dayTotals[i] = dayTotals[i].Add(day)
			vc.Days[i] = day.Round(2)
		}
		a := in.Prices.amounts(total)
		vc.CPU, vc.Memory, vc.Disk, vc.Traffic = a[0].Round(2), a[1].Round(2), a[2].Round(2), a[3].Round(2)
		vc.Total = vc.CPU.Add(vc.Memory).Add(vc.Disk).Add(vc.Traffic)
		vc.RunningHours = total.running.DivRound(secondsPerHour, 4)
		r.VMs = append(r.VMs, vc)
		r.Total = r.Total.Add(vc.Total)
	}
	for i, d := range dayTotals {
		r.Days = append(r.Days, Day{Date: days[i].Format(time.DateOnly), Cost: d.Round(2)})
	}
	if len(r.VMs) > 0 {
		r.Average = r.Total.DivRound(decimal.NewFromInt(int64(len(r.VMs))), 2)
	}
	return r
}

func sum(a [4]decimal.Decimal) decimal.Decimal {
	return a[0].Add(a[1]).Add(a[2]).Add(a[3])
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Money is an amount as tables show it: $180.00.
func Money(d decimal.Decimal) string { return "$" + d.StringFixed(2) }

// Hours is a running time as tables show it.
func Hours(d decimal.Decimal) string { return strings.TrimSuffix(d.StringFixed(1), ".0") }
