package policy

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	return loc
}

func mustPlan(t *testing.T, s Schedule) *Plan {
	t.Helper()
	s, err := Prepare(s)
	require.NoError(t, err)
	p, err := Compile(s)
	require.NoError(t, err)
	return p
}

func times(occ []Occurrence) []string {
	var out []string
	for _, o := range occ {
		s := o.Time.Format("Mon 2006-01-02 15:04 MST")
		if o.Holiday != "" {
			s += " " + o.Holiday
		}
		if o.Skipped {
			s += " (skipped)"
		}
		out = append(out, s)
	}
	return out
}

func TestWeekdayScheduleAcrossDaylightSaving(t *testing.T) {
	loc := berlin(t)
	tests := []struct {
		name string
		at   string
		days string
		from time.Time
		want []string
	}{
		{name: "spring forward, a time that exists", at: "07:00", days: "mon-fri",
			from: time.Date(2026, 3, 26, 12, 0, 0, 0, loc), // Thursday; DST starts Sunday 29 March
			want: []string{"Fri 2026-03-27 07:00 CET", "Mon 2026-03-30 07:00 CEST", "Tue 2026-03-31 07:00 CEST"}},
		{name: "autumn back, a time that exists", at: "22:00", days: "mon-fri",
			from: time.Date(2026, 10, 23, 12, 0, 0, 0, loc), // Friday; DST ends Sunday 25 October
			want: []string{"Fri 2026-10-23 22:00 CEST", "Mon 2026-10-26 22:00 CET", "Tue 2026-10-27 22:00 CET"}},
		{name: "02:30 skipped in spring fires once at 03:00", at: "02:30", days: "daily",
			from: time.Date(2026, 3, 28, 12, 0, 0, 0, loc),
			want: []string{"Sun 2026-03-29 03:00 CEST", "Mon 2026-03-30 02:30 CEST"}},
		{name: "02:30 twice in autumn fires once, the first time", at: "02:30", days: "daily",
			from: time.Date(2026, 10, 24, 12, 0, 0, 0, loc),
			want: []string{"Sun 2026-10-25 02:30 CEST", "Mon 2026-10-26 02:30 CET"}},
		{name: "weekend across the change", at: "00:00", days: "sat,sun",
			from: time.Date(2026, 3, 27, 12, 0, 0, 0, loc),
			want: []string{"Sat 2026-03-28 00:00 CET", "Sun 2026-03-29 00:00 CET", "Sat 2026-04-04 00:00 CEST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPlan(t, Schedule{ID: "s", VM: "web1", Action: ActionStop, At: tt.at, Days: tt.days, TZ: "Europe/Berlin"})
			next := p.Next(tt.from, len(tt.want))
			assert.Equal(t, tt.want, times(next))
			// Due over the same span fires each once, the same instants.
			due := p.Due(tt.from, next[len(next)-1].Time)
			assert.Equal(t, tt.want, times(due))
		})
	}
}

func TestAutumnHourFiresOnceWhenPolledEveryMinute(t *testing.T) {
	loc := berlin(t)
	p := mustPlan(t, Schedule{ID: "s", VM: "web1", Action: ActionStop, At: "02:30", TZ: "Europe/Berlin"})
	// The runner asks for (last, now] every round; across the doubled
	// hour the occurrence must come once.
	last := time.Date(2026, 10, 25, 1, 0, 0, 0, loc)
	end := last.Add(4 * time.Hour)
	fired := 0
	for now := last.Add(time.Minute); now.Before(end); now = now.Add(time.Minute) {
		fired += len(p.Due(last, now))
		last = now
	}
	assert.Equal(t, 1, fired)
}

func TestHolidays(t *testing.T) {
	loc := berlin(t)
	// Karfreitag (Good Friday) 2026 is Friday 3 April; 2026-12-24 is a
	// Thursday.
	tests := []struct {
		name     string
		days     string
		holidays Holidays
		from     time.Time
		count    int
		want     []string
	}{
		{name: "weekday schedule skips a named weekday holiday", days: "mon-fri", holidays: Holidays{Calendar: "de"},
			from: time.Date(2026, 4, 1, 12, 0, 0, 0, loc), count: 3,
			want: []string{"Wed 2026-04-01 22:00 CEST", "Thu 2026-04-02 22:00 CEST", "Fri 2026-04-03 22:00 CEST Karfreitag (skipped)",
				"Mon 2026-04-06 22:00 CEST Ostermontag (skipped)", "Tue 2026-04-07 22:00 CEST"}},
		{name: "weekend schedule fires on a weekday holiday", days: "weekend", holidays: Holidays{Calendar: "DE"},
			from: time.Date(2026, 4, 1, 12, 0, 0, 0, loc), count: 3,
			want: []string{"Fri 2026-04-03 22:00 CEST Karfreitag", "Sat 2026-04-04 22:00 CEST", "Sun 2026-04-05 22:00 CEST"}},
		{name: "a date the administrator added", days: "mon-fri", holidays: Holidays{Dates: []HolidayDate{{Date: "2026-12-24", Name: "Heiligabend"}}},
			from: time.Date(2026, 12, 23, 12, 0, 0, 0, loc), count: 2,
			want: []string{"Wed 2026-12-23 22:00 CET", "Thu 2026-12-24 22:00 CET Heiligabend (skipped)", "Fri 2026-12-25 22:00 CET"}},
		{name: "a regional calendar", days: "mon-fri", holidays: Holidays{Calendar: "DE-BY"},
			from: time.Date(2026, 1, 5, 12, 0, 0, 0, loc), count: 1, // Heilige Drei Könige, Tuesday 6 January, in Bavaria only
			want: []string{"Mon 2026-01-05 22:00 CET"}},
		{name: "an iCalendar file, yearly", days: "mon-fri", holidays: Holidays{ICS: "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART;VALUE=DATE:20201224\r\nDTEND;VALUE=DATE:20201226\r\nRRULE:FREQ=YEARLY\r\nSUMMARY:Company holidays\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"},
			from: time.Date(2026, 12, 23, 12, 0, 0, 0, loc), count: 2,
			want: []string{"Wed 2026-12-23 22:00 CET", "Thu 2026-12-24 22:00 CET Company holidays (skipped)", "Fri 2026-12-25 22:00 CET Company holidays (skipped)", "Mon 2026-12-28 22:00 CET"}},
		{name: "daily does not care", days: "daily", holidays: Holidays{Calendar: "DE"},
			from: time.Date(2026, 4, 2, 12, 0, 0, 0, loc), count: 2,
			want: []string{"Thu 2026-04-02 22:00 CEST", "Fri 2026-04-03 22:00 CEST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.holidays
			p := mustPlan(t, Schedule{ID: "s", VM: "web1", Action: ActionStop, At: "22:00", Days: tt.days, TZ: "Europe/Berlin", Holidays: &h})
			assert.Equal(t, tt.want, times(p.Next(tt.from, tt.count)))
		})
	}
}

func vmsNamed(names ...string) []model.VM {
	var vms []model.VM
	for _, n := range names {
		vms = append(vms, model.VM{Name: n, Labels: map[string]string{"tier": "web"}})
	}
	return vms
}

func TestHalfOfAGroupIsStable(t *testing.T) {
	s := Schedule{ID: "night-half", Labels: map[string]string{"tier": "web"}, Fraction: 0.5, Action: ActionStop, At: "22:00"}
	var web []string
	for i := range 10 {
		web = append(web, fmt.Sprintf("web%d", i))
	}
	vms := vmsNamed(web...)
	chosen := Targets(s, vms)
	require.Len(t, chosen, 5)
	// Every night the same, whatever order the VMs come in.
	for range 3 {
		reversed := append([]model.VM(nil), vms...)
		for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
			reversed[i], reversed[j] = reversed[j], reversed[i]
		}
		assert.Equal(t, chosen, Targets(s, reversed))
	}
	// A VM outside the group changes nothing.
	other := append(append([]model.VM(nil), vms...), model.VM{Name: "db1", Labels: map[string]string{"tier": "db"}})
	assert.Equal(t, chosen, Targets(s, other))
	// Another schedule picks its own half.
	s2 := s
	s2.ID = "other-half"
	assert.NotEqual(t, chosen, Targets(s2, vms))
	// An odd group rounds up: ceil(0.5·3) = 2.
	assert.Len(t, Targets(s, vmsNamed("a", "b", "c")), 2)
	// 0.7 of 10 is 7, not 8 by floating point.
	s.Fraction = 0.7
	assert.Len(t, Targets(s, vms), 7)
}

func TestTargetsOneVM(t *testing.T) {
	s := Schedule{ID: "s", VM: "web3", Action: ActionStop, At: "22:00"}
	assert.Equal(t, []string{"web3"}, Targets(s, vmsNamed("web1", "web3")))
	assert.Empty(t, Targets(s, vmsNamed("web1")))
}

func TestPrepareRefusesBadInput(t *testing.T) {
	ok := Schedule{ID: "s", VM: "web1", Action: ActionStop, At: "22:00", Days: "mon-fri", TZ: "Europe/Berlin"}
	tests := []struct {
		name     string
		change   func(*Schedule)
		field    string
		contains string
	}{
		{"unknown zone", func(s *Schedule) { s.TZ = "Mars/Olympus" }, "tz", `unknown time zone "Mars/Olympus"`},
		{"Local zone", func(s *Schedule) { s.TZ = "Local" }, "tz", "name a zone"},
		{"unknown day", func(s *Schedule) { s.Days = "mon-fry" }, "days", `"mon-fry" is not a day`},
		{"unknown action", func(s *Schedule) { s.Action = "reboot" }, "action", `unknown action "reboot"`},
		{"no action", func(s *Schedule) { s.Action = "" }, "action", "missing"},
		{"suspend not yet", func(s *Schedule) { s.Action = ActionSuspend }, "action", "suspend is not available yet"},
		{"resize not yet", func(s *Schedule) { s.Action = ActionResize; s.Size = "large" }, "action", "resize is not available yet"},
		{"bad time", func(s *Schedule) { s.At = "25:00" }, "at", "HH:MM"},
		{"no target", func(s *Schedule) { s.VM = "" }, "vm", "missing"},
		{"vm and labels", func(s *Schedule) { s.Labels = map[string]string{"a": "b"} }, "vm", "not both"},
		{"fraction of one vm", func(s *Schedule) { s.Fraction = 0.5 }, "fraction", "labels"},
		{"fraction over 1", func(s *Schedule) { s.VM = ""; s.Labels = map[string]string{"a": "b"}; s.Fraction = 2 }, "fraction", "at most 1"},
		{"reserved id", func(s *Schedule) { s.ID = "next" }, "id", "reserved"},
		{"bad id", func(s *Schedule) { s.ID = "Night_Stop" }, "id", "name rules"},
		{"unknown calendar", func(s *Schedule) { s.Holidays = &Holidays{Calendar: "XX"} }, "holidays.calendar", `unknown calendar "XX"`},
		{"bad holiday date", func(s *Schedule) { s.Holidays = &Holidays{Dates: []HolidayDate{{Date: "24.12.2026"}}} }, "holidays.dates[0]", "YYYY-MM-DD"},
		{"calendar file that does not parse", func(s *Schedule) { s.Holidays = &Holidays{ICS: "this is not a calendar"} }, "holidays.ics", "not an iCalendar file"},
		{"calendar without events", func(s *Schedule) {
			s.Holidays = &Holidays{ICS: "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"}
		}, "holidays.ics", "no events"},
		{"calendar with a monthly rule", func(s *Schedule) {
			s.Holidays = &Holidays{ICS: "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=MONTHLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}
		}, "holidays.ics", "only FREQ=YEARLY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.change(&s)
			_, err := Prepare(s)
			require.Error(t, err)
			var fe *model.FieldError
			require.True(t, errors.As(err, &fe), "%v", err)
			assert.Equal(t, tt.field, fe.Field)
			assert.Contains(t, err.Error(), tt.contains)
			assert.ErrorIs(t, err, model.ErrInvalid)
		})
	}
}

func TestPrepareCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "daily"}, {"Mon-Fri", "mon-fri"}, {"weekend", "sat,sun"}, {"sun,sat", "sat,sun"},
		{"weekdays,weekend", "daily"}, {"mon,wed-fri", "mon,wed-fri"}, {"fri-mon", "mon,fri-sun"}, {"Tuesday", "tue"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := Prepare(Schedule{VM: "a", Action: "STOP", At: "7:05", Days: tt.in})
			require.NoError(t, err)
			assert.Equal(t, tt.want, s.Days)
			assert.Equal(t, ActionStop, s.Action)
			assert.Equal(t, DefaultZone, s.TZ)
		})
	}
}
