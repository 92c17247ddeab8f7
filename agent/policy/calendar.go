package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	ical "github.com/arran4/golang-ical"
	"github.com/rickar/cal/v2"
)

// Date is a day in a calendar, without a zone: a holiday is a date
// wherever the schedule's zone puts midnight.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf is the date t shows on its own clock.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// Weekday is the day of the week of d.
func (d Date) Weekday() time.Weekday {
	return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC).Weekday()
}

// AddDays is d moved by n days.
func (d Date) AddDays(n int) Date {
	return DateOf(time.Date(d.Year, d.Month, d.Day+n, 12, 0, 0, 0, time.UTC))
}

// Calendar answers whether a date is a holiday, and its name.
type Calendar struct {
	country []*cal.Holiday
	dates   []HolidayDate
}

// NewCalendar builds the calendar of prepared holidays; nil when there
// are none.
func NewCalendar(h *Holidays) *Calendar {
	if h == nil {
		return nil
	}
	return &Calendar{country: countryCalendars()[h.Calendar], dates: h.Dates}
}

// Holiday returns the holiday's name when d is one.
func (c *Calendar) Holiday(d Date) (string, bool) {
	if c == nil {
		return "", false
	}
	for _, h := range c.dates {
		t, err := time.Parse(dateLayout, h.Date)
		if err != nil {
			continue // Prepare stored only valid dates
		}
		hd := DateOf(t)
		match := hd == d
		if h.Yearly {
			match = hd.Month == d.Month && hd.Day == d.Day && d.Year >= hd.Year && (h.LastYear == 0 || d.Year <= h.LastYear)
		}
		if match {
			return holidayName(h.Name), true
		}
	}
	for _, h := range c.country {
		// Bank holidays are the days off in some countries (GB);
		// religious and other observances are not days off.
		if h.Type != cal.ObservancePublic && h.Type != cal.ObservanceBank {
			continue
		}
		// The observed date is the day off: a holiday on a Sunday is
		// taken on the Monday where the country says so.
		_, observed := h.Calc(d.Year)
		if !observed.IsZero() && DateOf(observed) == d {
			return holidayName(h.Name), true
		}
	}
	return "", false
}

func holidayName(name string) string {
	if name == "" {
		return "holiday"
	}
	return name
}

// errICS is an iCalendar text Prepare cannot use.
var errICS = errors.New("not an iCalendar file wisp can read")

// parseICS reads the VEVENTs of an iCalendar file as holidays: each day
// from DTSTART up to DTEND (exclusive; one day without DTEND), named by
// SUMMARY, every year when the event repeats FREQ=YEARLY.
func parseICS(text string) ([]HolidayDate, error) {
	c, err := ical.ParseCalendar(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("%w: %v (export the calendar as .ics: BEGIN:VCALENDAR ... END:VCALENDAR)", errICS, err)
	}
	events := c.Events()
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: it has no events (BEGIN:VEVENT with DTSTART)", errICS)
	}
	var out []HolidayDate
	for i, ev := range events {
		name := ""
		if p := ev.GetProperty(ical.ComponentPropertySummary); p != nil {
			name = p.Value
		}
		what := fmt.Sprintf("event %d", i+1)
		if name != "" {
			what += " (" + name + ")"
		}
		start, err := ev.GetAllDayStartAt()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: DTSTART: %v", errICS, what, err)
		}
		first := DateOf(start)
		days := 1
		if end, err := ev.GetAllDayEndAt(); err == nil {
			days = int(time.Date(end.Year(), end.Month(), end.Day(), 12, 0, 0, 0, time.UTC).Sub(time.Date(first.Year, first.Month, first.Day, 12, 0, 0, 0, time.UTC)).Hours() / 24)
			if days < 1 {
				days = 1 // DTEND on DTSTART's day: a one-day event
			}
			if days > 366 {
				return nil, fmt.Errorf("%w: %s lasts %d days; a holiday calendar lists days off", errICS, what, days)
			}
		}
		yearly, lastYear, err := yearlyRule(ev)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errICS, what, err)
		}
		for n := range days {
			out = append(out, HolidayDate{Date: first.AddDays(n).String(), Name: name, Yearly: yearly, LastYear: lastYear})
		}
	}
	return out, nil
}

// yearlyRule reads an event's RRULE: none, or FREQ=YEARLY with an
// optional COUNT or UNTIL. Anything else would need a recurrence engine a
// holiday list does not need; such a file should list its dates.
func yearlyRule(ev *ical.VEvent) (yearly bool, lastYear int, err error) {
	p := ev.GetProperty(ical.ComponentPropertyRrule)
	if p == nil {
		return false, 0, nil
	}
	start, err := ev.GetAllDayStartAt()
	if err != nil {
		return false, 0, err
	}
	for _, part := range strings.Split(p.Value, ";") {
		k, v, _ := strings.Cut(part, "=")
		switch strings.ToUpper(k) {
		case "FREQ":
			if strings.ToUpper(v) != "YEARLY" {
				return false, 0, fmt.Errorf("RRULE %s: only FREQ=YEARLY repeats here; list the dates instead", p.Value)
			}
			yearly = true
		case "COUNT":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return false, 0, fmt.Errorf("RRULE %s: COUNT %q is not a positive number", p.Value, v)
			}
			lastYear = start.Year() + n - 1
		case "UNTIL":
			if len(v) < 8 {
				return false, 0, fmt.Errorf("RRULE %s: UNTIL %q is not a date", p.Value, v)
			}
			y, err := strconv.Atoi(v[:4])
			if err != nil {
				return false, 0, fmt.Errorf("RRULE %s: UNTIL %q is not a date", p.Value, v)
			}
			lastYear = y
		case "INTERVAL":
			if v != "1" {
				return false, 0, fmt.Errorf("RRULE %s: only every year (INTERVAL=1) repeats here; list the dates instead", p.Value)
			}
		default:
			return false, 0, fmt.Errorf("RRULE %s: %s is not supported; list the dates instead", p.Value, k)
		}
	}
	if !yearly {
		return false, 0, fmt.Errorf("RRULE %s: no FREQ", p.Value)
	}
	return yearly, lastYear, nil
}
