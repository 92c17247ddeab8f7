// Package policy holds the agent's policies as pure functions of their
// records, the VMs and a clock: schedules (when they fire, in which zone,
// on which days, around which holidays) and which VMs they touch. It never
// reads the time itself and never changes a VM; the agent does that with
// what these functions say.
package policy

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	// A schedule's zone must mean the same on every host, whatever tzdata
	// the host has (or lacks): the zone database is built in.
	_ "time/tzdata"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Action is what a schedule does to its VMs.
type Action string

// Actions. Suspend and resize are part of the model, but the agent cannot
// do them yet, so Prepare refuses schedules that use them.
const (
	ActionStart   Action = "start"
	ActionStop    Action = "stop" // graceful: the power button, forced after the default timeout
	ActionPause   Action = "pause"
	ActionResume  Action = "resume"
	ActionSuspend Action = "suspend"
	ActionResize  Action = "resize"
)

// Actions lists every action, for help texts and validation.
func Actions() []Action {
	return []Action{ActionStart, ActionStop, ActionPause, ActionResume, ActionSuspend, ActionResize}
}

// Op is the agent operation the action is.
func (a Action) Op() model.Op { return model.Op(a) }

// DefaultZone is the zone of a schedule that names none.
const DefaultZone = "UTC"

// Schedule is a recurring action on one VM, on the VMs with some labels, or
// on a stable fraction of those.
type Schedule struct {
	// ID names the schedule (a VM name's rules); events and reasons say it.
	ID string `json:"id"`
	// VM is the one VM the schedule acts on; or else Labels select a group.
	VM     string            `json:"vm,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Fraction of the group (0 < f ≤ 1; 0 means all of it): the first
	// ceil(f·n) VMs ordered by a hash of (ID, VM name), so the same VMs are
	// picked every time and a VM joining the group moves few others.
	Fraction float64 `json:"fraction,omitempty"`
	Action   Action  `json:"action"`
	// Size is the named size of a resize.
	Size string `json:"size,omitempty"`
	// At is the time of day, HH:MM (24 h), in TZ.
	At string `json:"at"`
	// Days the schedule fires on: "daily" (the default), "mon-fri",
	// "sat,sun", "weekend", "weekdays", or days and ranges with commas.
	Days string `json:"days,omitempty"`
	// TZ is an IANA zone ("Europe/Berlin"); DefaultZone when empty.
	TZ string `json:"tz,omitempty"`
	// Holidays, when set, count as weekend days.
	Holidays  *Holidays `json:"holidays,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Holidays say which dates are public holidays for a schedule.
type Holidays struct {
	// Calendar is a country ("DE") or a country and region ("DE-BY").
	Calendar string `json:"calendar,omitempty"`
	// ICS is an iCalendar file's text, accepted on the way in only:
	// Prepare turns its events into Dates, so the schedule does not depend
	// on the file later.
	ICS string `json:"ics,omitempty"`
	// Dates are holidays an administrator added, and those of an ICS.
	Dates []HolidayDate `json:"dates,omitempty"`
}

// HolidayDate is one holiday.
type HolidayDate struct {
	Date string `json:"date"` // YYYY-MM-DD
	Name string `json:"name,omitempty"`
	// Yearly: the same month and day every year from Date's year on,
	// through LastYear when it is not 0.
	Yearly   bool `json:"yearly,omitempty"`
	LastYear int  `json:"last_year,omitempty"`
}

const dateLayout = "2006-01-02"

// Prepare checks a schedule as a client sent it and returns it as it is
// stored: its days, action and calendar in canonical spelling, an ICS
// turned into dates. Bad input is one *model.FieldError naming the field
// and the fix.
func Prepare(s Schedule) (Schedule, error) {
	if s.ID != "" {
		if err := model.ValidName(s.ID); err != nil {
			return s, &model.FieldError{Field: "id", Msg: fmt.Sprintf("%q: a schedule id follows the VM name rules ([a-z0-9][a-z0-9-]{0,62})", s.ID)}
		}
		if s.ID == "next" {
			return s, &model.FieldError{Field: "id", Msg: `"next" is reserved (GET /v1/schedules/next); choose another id`}
		}
	}
	if err := prepareTarget(&s); err != nil {
		return s, err
	}
	s.Action = Action(strings.ToLower(strings.TrimSpace(string(s.Action))))
	switch s.Action {
	case ActionStart, ActionStop, ActionPause, ActionResume:
		if s.Size != "" {
			return s, &model.FieldError{Field: "size", Msg: fmt.Sprintf("only a resize takes a size; drop it for %s", s.Action)}
		}
	case ActionSuspend:
		return s, &model.FieldError{Field: "action", Msg: "suspend is not available yet: the agent cannot save a VM's state to disk; schedule stop (or pause) instead"}
	case ActionResize:
		return s, &model.FieldError{Field: "action", Msg: "resize is not available yet: the agent cannot resize VMs; schedule stop and start instead"}
	case "":
		return s, &model.FieldError{Field: "action", Msg: "missing; use " + actionList()}
	default:
		return s, &model.FieldError{Field: "action", Msg: fmt.Sprintf("unknown action %q; use %s", s.Action, actionList())}
	}
	if _, _, err := parseAt(s.At); err != nil {
		return s, err
	}
	days, err := parseDays(s.Days)
	if err != nil {
		return s, err
	}
	s.Days = formatDays(days)
	if s.TZ == "" {
		s.TZ = DefaultZone
	}
	if _, err := loadZone(s.TZ); err != nil {
		return s, err
	}
	if s.Holidays != nil {
		h, err := prepareHolidays(*s.Holidays)
		if err != nil {
			return s, err
		}
		s.Holidays = h
	}
	return s, nil
}

func actionList() string {
	var names []string
	for _, a := range Actions() {
		names = append(names, string(a))
	}
	return strings.Join(names, ", ")
}

func prepareTarget(s *Schedule) error {
	switch {
	case s.VM != "" && len(s.Labels) > 0:
		return &model.FieldError{Field: "vm", Msg: "give a vm or labels, not both"}
	case s.VM == "" && len(s.Labels) == 0:
		return &model.FieldError{Field: "vm", Msg: "missing: name a vm, or labels (tier=web) for a group"}
	case s.VM != "":
		if err := model.ValidName(s.VM); err != nil {
			return &model.FieldError{Field: "vm", Msg: err.Error()}
		}
		if s.Fraction != 0 {
			return &model.FieldError{Field: "fraction", Msg: "a fraction is of a group: select VMs with labels instead of one vm"}
		}
	}
	for k := range s.Labels {
		if k == "" {
			return &model.FieldError{Field: "labels", Msg: "a label key must not be empty (KEY=VALUE)"}
		}
	}
	if math.IsNaN(s.Fraction) || s.Fraction < 0 || s.Fraction > 1 {
		return &model.FieldError{Field: "fraction", Msg: fmt.Sprintf("%v: want more than 0 and at most 1 (0.5 is half the group)", s.Fraction)}
	}
	return nil
}

// parseAt reads HH:MM.
func parseAt(at string) (hour, minute int, err error) {
	bad := &model.FieldError{Field: "at", Msg: fmt.Sprintf("%q: want a time of day HH:MM (24 h), such as 07:00 or 22:30", at)}
	h, m, ok := strings.Cut(strings.TrimSpace(at), ":")
	if !ok || len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return 0, 0, bad
	}
	hour, herr := strconv.Atoi(h)
	minute, merr := strconv.Atoi(m)
	if herr != nil || merr != nil || hour < 0 || hour > 23 || minute < 0 || minute > 59 {
		return 0, 0, bad
	}
	return hour, minute, nil
}

func loadZone(name string) (*time.Location, error) {
	if name == "Local" {
		return nil, &model.FieldError{Field: "tz", Msg: `"Local" is whatever the agent's host says; name a zone such as Europe/Berlin`}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, &model.FieldError{Field: "tz", Msg: fmt.Sprintf("unknown time zone %q: use an IANA name such as Europe/Berlin, America/New_York or UTC", name)}
	}
	return loc, nil
}

// dayName is a day as schedules spell it.
func dayName(d time.Weekday) string {
	return [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}[d]
}

// weekOrder is the order days are written in: Monday first.
func weekOrder() [7]time.Weekday {
	return [7]time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}
}

func parseDay(s string) (time.Weekday, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	for d := time.Sunday; d <= time.Saturday; d++ {
		if s == dayName(d) || s == strings.ToLower(d.String()) {
			return d, true
		}
	}
	return 0, false
}

// parseDays reads a days expression into the set of weekdays.
func parseDays(expr string) ([7]bool, error) {
	var days [7]bool
	bad := func(part string) error {
		return &model.FieldError{Field: "days", Msg: fmt.Sprintf("%q is not a day: use mon..sun, a range (mon-fri), a list (sat,sun), daily, weekdays or weekend", part)}
	}
	if strings.TrimSpace(expr) == "" {
		expr = "daily"
	}
	for _, part := range strings.Split(expr, ",") {
		p := strings.ToLower(strings.TrimSpace(part))
		switch p {
		case "daily", "every day", "all":
			for i := range days {
				days[i] = true
			}
			continue
		case "weekdays":
			for d := time.Monday; d <= time.Friday; d++ {
				days[d] = true
			}
			continue
		case "weekend", "weekends":
			days[time.Saturday], days[time.Sunday] = true, true
			continue
		}
		from, to, isRange := strings.Cut(p, "-")
		first, ok := parseDay(from)
		if !ok {
			return days, bad(part)
		}
		last := first
		if isRange {
			if last, ok = parseDay(to); !ok {
				return days, bad(part)
			}
		}
		// A range may wrap the week's end: fri-mon is fri, sat, sun, mon.
		for d := first; ; d = (d + 1) % 7 {
			days[d] = true
			if d == last {
				break
			}
		}
	}
	return days, nil
}

// formatDays writes a set of weekdays canonically: "daily", or runs of
// days Monday first ("mon-fri", "sat,sun", "mon,wed-fri").
func formatDays(days [7]bool) string {
	if !slices.Contains(days[:], false) {
		return "daily"
	}
	var parts []string
	order := weekOrder()
	for i := 0; i < 7; {
		if !days[order[i]] {
			i++
			continue
		}
		j := i
		for j+1 < 7 && days[order[j+1]] {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, dayName(order[i]))
		case j == i+1:
			parts = append(parts, dayName(order[i]), dayName(order[j]))
		default:
			parts = append(parts, dayName(order[i])+"-"+dayName(order[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func prepareHolidays(h Holidays) (*Holidays, error) {
	out := &Holidays{}
	if h.Calendar != "" {
		code := strings.ToUpper(strings.TrimSpace(h.Calendar))
		if _, ok := countryCalendars()[code]; !ok {
			return nil, &model.FieldError{Field: "holidays.calendar", Msg: fmt.Sprintf("unknown calendar %q: use a country code (DE, FR, US, ...) or a country and region (DE-BY); known: %s",
				h.Calendar, strings.Join(CalendarCodes(), " "))}
		}
		out.Calendar = code
	}
	for i, d := range h.Dates {
		t, err := time.Parse(dateLayout, strings.TrimSpace(d.Date))
		if err != nil {
			return nil, &model.FieldError{Field: fmt.Sprintf("holidays.dates[%d]", i), Msg: fmt.Sprintf("%q: want a date YYYY-MM-DD, such as 2026-12-24", d.Date)}
		}
		if d.LastYear != 0 && (!d.Yearly || d.LastYear < t.Year()) {
			return nil, &model.FieldError{Field: fmt.Sprintf("holidays.dates[%d]", i), Msg: "last_year is for a yearly holiday, and not before its date's year"}
		}
		d.Date = t.Format(dateLayout)
		out.Dates = append(out.Dates, d)
	}
	if h.ICS != "" {
		dates, err := parseICS(h.ICS)
		if err != nil {
			return nil, &model.FieldError{Field: "holidays.ics", Msg: err.Error()}
		}
		out.Dates = append(out.Dates, dates...)
	}
	if out.Calendar == "" && len(out.Dates) == 0 {
		return nil, nil
	}
	return out, nil
}

// CalendarCodes lists the calendars Prepare knows, sorted.
func CalendarCodes() []string {
	var codes []string
	for c := range countryCalendars() {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}
