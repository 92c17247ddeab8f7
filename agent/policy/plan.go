package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Plan is a prepared schedule ready to answer when it fires.
type Plan struct {
	s            Schedule
	loc          *time.Location
	hour, minute int
	days         [7]bool
	cal          *Calendar
}

// Compile makes the plan of a schedule Prepare accepted; a stored schedule
// that no longer compiles (a zone gone from the database) is its error.
func Compile(s Schedule) (*Plan, error) {
	hour, minute, err := parseAt(s.At)
	if err != nil {
		return nil, err
	}
	days, err := parseDays(s.Days)
	if err != nil {
		return nil, err
	}
	zone := s.TZ
	if zone == "" {
		zone = DefaultZone
	}
	loc, err := loadZone(zone)
	if err != nil {
		return nil, err
	}
	return &Plan{s: s, loc: loc, hour: hour, minute: minute, days: days, cal: NewCalendar(s.Holidays)}, nil
}

// Schedule is the plan's schedule.
func (p *Plan) Schedule() Schedule { return p.s }

// Describe says what the schedule does and when, for reasons and events:
// "stop at 22:00 Europe/Berlin".
func (p *Plan) Describe() string {
	return fmt.Sprintf("%s at %02d:%02d %s", p.s.Action, p.hour, p.minute, p.loc)
}

// Occurrence is one time a schedule comes due, or would have but for a
// holiday.
type Occurrence struct {
	Time time.Time // in the schedule's zone
	// Holiday names the holiday that changed what happens that day: it
	// made a weekday schedule skip (Skipped) or a weekend one fire.
	Holiday string
	Skipped bool
}

// on says what happens on local date d: whether the schedule fires, and
// the holiday when one decided it.
func (p *Plan) on(d Date) (fires bool, holiday string) {
	wd := d.Weekday()
	normal := p.days[wd]
	if wd == time.Saturday || wd == time.Sunday {
		return normal, "" // a holiday on a weekend day changes nothing
	}
	name, ok := p.cal.Holiday(d)
	if !ok {
		return normal, ""
	}
	// A weekday holiday is a weekend day: schedules that fire on a
	// weekend day fire, the others do not.
	weekend := p.days[time.Saturday] || p.days[time.Sunday]
	if weekend == normal {
		return normal, "" // daily, or sat-only on a mon-sat: no change
	}
	return weekend, name
}

// instant is when the schedule's time of day happens on local date d. A
// time the clocks skip (02:30 on a spring-forward day) is the instant
// they jump, the next valid one; a time that happens twice (autumn) is
// its first, so each date has exactly one instant.
func (p *Plan) instant(d Date) time.Time {
	t := time.Date(d.Year, d.Month, d.Day, p.hour, p.minute, 0, 0, p.loc)
	if t.Hour() == p.hour && t.Minute() == p.minute {
		return firstOf(t)
	}
	// The wall time does not exist; time.Date moved it by the jump,
	// forward or back depending on the zone's data. The jump itself is a
	// zone bound of t.
	want := time.Date(d.Year, d.Month, d.Day, p.hour, p.minute, 0, 0, time.UTC)
	got := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
	start, end := t.ZoneBounds()
	if got.After(want) {
		return start
	}
	return end
}

// firstOf returns the first instant showing t's wall time when the clocks
// went back over it (time.Date may pick the second).
func firstOf(t time.Time) time.Time {
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return t
	}
	_, off := t.Zone()
	_, prevOff := start.Add(-time.Nanosecond).Zone()
	if prevOff <= off {
		return t
	}
	earlier := t.Add(-time.Duration(prevOff-off) * time.Second)
	if earlier.Before(start) && earlier.Hour() == t.Hour() && earlier.Minute() == t.Minute() {
		return earlier
	}
	return t
}

// maxLookBack bounds how far Due walks back: an agent down for longer
// than a year catches up on the latest occurrence all the same, it just
// does not count older ones.
const maxLookBack = 400

// Due returns the occurrences that fire in (after, upTo], oldest first.
func (p *Plan) Due(after, upTo time.Time) []Occurrence {
	if !upTo.After(after) {
		return nil
	}
	from := DateOf(after.In(p.loc)).AddDays(-1)
	if limit := DateOf(upTo.In(p.loc)).AddDays(-maxLookBack); before(from, limit) {
		from = limit
	}
	last := DateOf(upTo.In(p.loc)).AddDays(1)
	var out []Occurrence
	for d := from; !before(last, d); d = d.AddDays(1) {
		fires, holiday := p.on(d)
		if !fires {
			continue
		}
		t := p.instant(d)
		if t.After(after) && !t.After(upTo) {
			out = append(out, Occurrence{Time: t, Holiday: holiday})
		}
	}
	return out
}

// maxLookAhead bounds Next's walk: a schedule that fires at all fires
// within weeks, holidays or not.
const maxLookAhead = 800

// Next returns the next count occurrences that fire after after, with the
// ones a holiday skips in between (which do not count), oldest first.
func (p *Plan) Next(after time.Time, count int) []Occurrence {
	var out []Occurrence
	fired := 0
	d := DateOf(after.In(p.loc)).AddDays(-1)
	for range maxLookAhead {
		if fired >= count {
			break
		}
		fires, holiday := p.on(d)
		t := p.instant(d)
		d = d.AddDays(1)
		if !t.After(after) {
			continue
		}
		switch {
		case fires:
			out = append(out, Occurrence{Time: t, Holiday: holiday})
			fired++
		case holiday != "":
			out = append(out, Occurrence{Time: t, Holiday: holiday, Skipped: true})
		}
	}
	return out
}

func before(a, b Date) bool {
	if a.Year != b.Year {
		return a.Year < b.Year
	}
	if a.Month != b.Month {
		return a.Month < b.Month
	}
	return a.Day < b.Day
}

// Targets returns the names of the VMs the schedule acts on, sorted: its
// one VM when that exists; or the VMs whose labels include all of the
// schedule's; or of those the first ceil(fraction·n) by a hash of (ID,
// name). The hash (SHA-256, not Go's seeded map hash) makes the choice the
// same on every night, agent restart and version; a VM that joins the
// group takes its place in that order without reshuffling the others.
func Targets(s Schedule, vms []model.VM) []string {
	var group []string
	for _, vm := range vms {
		switch {
		case s.VM != "":
			if vm.Name == s.VM {
				group = append(group, vm.Name)
			}
		case hasLabels(vm.Labels, s.Labels):
			group = append(group, vm.Name)
		}
	}
	if s.VM == "" && s.Fraction > 0 && s.Fraction < 1 && len(group) > 0 {
		rank := func(name string) uint64 {
			sum := sha256.Sum256([]byte(s.ID + "\x00" + name))
			return binary.BigEndian.Uint64(sum[:8])
		}
		slices.SortFunc(group, func(a, b string) int {
			ra, rb := rank(a), rank(b)
			switch {
			case ra < rb:
				return -1
			case ra > rb:
				return 1
			}
			return cmp.Compare(a, b)
		})
		// The epsilon keeps 0.7·10 (7.000000000000001 in floating point)
		// from becoming 8.
		n := int(math.Ceil(s.Fraction*float64(len(group)) - 1e-9))
		group = group[:n]
	}
	slices.Sort(group)
	return group
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}
