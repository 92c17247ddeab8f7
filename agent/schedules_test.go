package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/policy"
	"github.com/wisp-vmm/wisp/agent/store"
)

func berlinTime(t *testing.T, y int, m time.Month, d, hh, mm int) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	return time.Date(y, m, d, hh, mm, 0, 0, loc)
}

// newClockedAgent is an agent on stateDir (its reconcile loop does not
// run) whose clock the test sets.
func newClockedAgent(t *testing.T, stateDir string, clock *fakeClock) *Agent {
	t.Helper()
	run, err := os.MkdirTemp("", "ws")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(run) })
	a, err := New(Config{StateDir: stateDir, RunDir: run, Wisp: "/bin/false", Now: clock.Now,
		Host: model.Capacity{CPUs: 64, MemoryBytes: 64 << 30}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	return a
}

// running makes a VM look running (no VMM exists: only states matter).
func running(t *testing.T, a *Agent, name string) {
	t.Helper()
	_, err := a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		evs := vm.SetDesired(model.DesiredRunning, "test")
		return append(evs, vm.SetObserved(model.ObservedRunning, "stands for a running VMM")...), nil
	})
	require.NoError(t, err)
}

func scheduleEvents(t *testing.T, a *Agent) []model.Event {
	t.Helper()
	evs, err := a.store.Events(store.EventQuery{})
	require.NoError(t, err)
	var out []model.Event
	for _, ev := range evs {
		if ev.Kind == model.EventSchedule {
			out = append(out, ev)
		}
	}
	return out
}

func desiredOf(t *testing.T, a *Agent, name string) model.Desired {
	t.Helper()
	vm, err := a.store.GetVM(name)
	require.NoError(t, err)
	return vm.Desired
}

// TestScheduleCaughtUpOnceAfterRestart: a stop missed twice while the
// agent was down is applied once by the next agent on the same store,
// said so, and not again; an occurrence whose VM is already stopped is
// one skip, not one per round.
func TestScheduleCaughtUpOnceAfterRestart(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	clock := &fakeClock{now: berlinTime(t, 2026, 3, 2, 18, 0)} // Monday
	a := newClockedAgent(t, state, clock)
	_, err := a.Create(ctx, CreateRequest{Name: "web1", Spec: smallSpec()})
	require.NoError(t, err)
	running(t, a, "web1")
	_, err = a.AddSchedule(ctx, policy.Schedule{ID: "night-stop", VM: "web1", Action: policy.ActionStop, At: "22:00", Days: "mon-fri", TZ: "Europe/Berlin"})
	require.NoError(t, err)
	a.runSchedules(ctx)
	assert.Empty(t, scheduleEvents(t, a), "nothing due before 22:00")
	require.NoError(t, a.Close())

	// Down over Monday's and Tuesday's 22:00.
	clock.Set(berlinTime(t, 2026, 3, 4, 7, 0))
	b := newClockedAgent(t, state, clock)
	t.Cleanup(func() { b.Close() })
	b.runSchedules(ctx)
	assert.Equal(t, model.DesiredStopped, desiredOf(t, b, "web1"))
	evs := scheduleEvents(t, b)
	require.Len(t, evs, 1)
	assert.Equal(t, "web1", evs[0].VM)
	assert.Equal(t, "schedule night-stop: stop at 22:00 Europe/Berlin (caught up: missed at 2026-03-03T22:00:00+01:00; 1 earlier occurrence(s) not applied, this one supersedes them)", evs[0].Reason)
	assert.Equal(t, "running", evs[0].From)
	assert.Equal(t, "stopped", evs[0].To)
	all, err := b.store.Events(store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	last := all[len(all)-1]
	assert.Equal(t, model.EventDesired, all[len(all)-2].Kind)
	assert.True(t, strings.HasPrefix(all[len(all)-2].Reason, "schedule night-stop: stop at 22:00 Europe/Berlin"), all[len(all)-2].Reason)
	assert.Equal(t, model.EventSchedule, last.Kind)

	// Later rounds the same morning: nothing more.
	b.runSchedules(ctx)
	clock.Set(berlinTime(t, 2026, 3, 4, 7, 1))
	b.runSchedules(ctx)
	assert.Len(t, scheduleEvents(t, b), 1)

	// Wednesday 22:00 on time; the VM is already wanted stopped: one
	// skip, whatever the number of rounds after it.
	for _, m := range []int{0, 0, 1, 2} {
		clock.Set(berlinTime(t, 2026, 3, 4, 22, m))
		b.runSchedules(ctx)
	}
	evs = scheduleEvents(t, b)
	require.Len(t, evs, 2)
	assert.Equal(t, "schedule night-stop: stop at 22:00 Europe/Berlin: skipped: vm web1 is already stopped", evs[1].Reason)
}

// TestScheduleOpNotAllowedIsOneSkip: a pause of a stopped VM is refused
// by the operation table; the schedule says so once per occurrence.
func TestScheduleOpNotAllowedIsOneSkip(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 6, 1, 11, 0, 0, 0, time.UTC)}
	a := newClockedAgent(t, t.TempDir(), clock)
	t.Cleanup(func() { a.Close() })
	_, err := a.Create(ctx, CreateRequest{Name: "web1", Spec: smallSpec()})
	require.NoError(t, err)
	_, err = a.AddSchedule(ctx, policy.Schedule{ID: "noon-pause", VM: "web1", Action: policy.ActionPause, At: "12:00"})
	require.NoError(t, err)
	for _, m := range []int{0, 1, 2} {
		clock.Set(time.Date(2026, 6, 1, 12, m, 0, 0, time.UTC))
		a.runSchedules(ctx)
	}
	evs := scheduleEvents(t, a)
	require.Len(t, evs, 1)
	assert.Equal(t, "schedule noon-pause: pause at 12:00 UTC: skipped: cannot pause: vm web1 is stopped", evs[0].Reason)
	assert.Equal(t, model.DesiredStopped, desiredOf(t, a, "web1"))
}

// TestScheduleHalfOfGroupEveryNight: "half the web servers" stops the
// same three of six every night, also once an unrelated VM was added.
func TestScheduleHalfOfGroupEveryNight(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	a := newClockedAgent(t, t.TempDir(), clock)
	t.Cleanup(func() { a.Close() })
	web := []string{"web1", "web2", "web3", "web4", "web5", "web6"}
	for _, n := range web {
		_, err := a.Create(ctx, CreateRequest{Name: n, Spec: smallSpec(), Labels: map[string]string{"tier": "web"}})
		require.NoError(t, err)
	}
	_, err := a.Create(ctx, CreateRequest{Name: "db1", Spec: smallSpec(), Labels: map[string]string{"tier": "db"}})
	require.NoError(t, err)
	_, err = a.AddSchedule(ctx, policy.Schedule{ID: "half-night", Labels: map[string]string{"tier": "web"}, Fraction: 0.5, Action: policy.ActionStop, At: "22:00"})
	require.NoError(t, err)

	stoppedTonight := func(day int) []string {
		for _, n := range append(web, "db1") {
			running(t, a, n)
		}
		clock.Set(time.Date(2026, 6, day, 22, 0, 0, 0, time.UTC))
		a.runSchedules(ctx)
		var out []string
		for _, n := range append(web, "db1") {
			if desiredOf(t, a, n) == model.DesiredStopped {
				out = append(out, n)
			}
		}
		return out
	}
	first := stoppedTonight(1)
	require.Len(t, first, 3)
	assert.Equal(t, first, stoppedTonight(2))
	_, err = a.Create(ctx, CreateRequest{Name: "cache1", Spec: smallSpec(), Labels: map[string]string{"tier": "cache"}})
	require.NoError(t, err)
	assert.Equal(t, first, stoppedTonight(3))

	// next lists the same VMs.
	next, err := a.NextOccurrences(ctx, 1)
	require.NoError(t, err)
	require.Len(t, next, 1)
	assert.Equal(t, first, next[0].VMs)
}

// TestScheduleLaterActionWins: after a restart a start (07:00) and a stop
// (20:00) of the same VM are both due; the later one acts, the earlier is
// said to be superseded.
func TestScheduleLaterActionWins(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 6, 1, 6, 0, 0, 0, time.UTC)}
	a := newClockedAgent(t, t.TempDir(), clock)
	t.Cleanup(func() { a.Close() })
	_, err := a.Create(ctx, CreateRequest{Name: "web1", Spec: smallSpec()})
	require.NoError(t, err)
	running(t, a, "web1")
	for _, s := range []policy.Schedule{
		{ID: "day-start", VM: "web1", Action: policy.ActionStart, At: "07:00"},
		{ID: "night-stop", VM: "web1", Action: policy.ActionStop, At: "20:00"},
	} {
		_, err := a.AddSchedule(ctx, s)
		require.NoError(t, err)
	}
	clock.Set(time.Date(2026, 6, 1, 21, 0, 0, 0, time.UTC))
	a.runSchedules(ctx)
	assert.Equal(t, model.DesiredStopped, desiredOf(t, a, "web1"))
	evs := scheduleEvents(t, a)
	require.Len(t, evs, 2)
	assert.Contains(t, evs[0].Reason, "schedule day-start: start at 07:00 UTC (caught up: missed at 2026-06-01T07:00:00Z): skipped: schedule night-stop at 2026-06-01T20:00:00Z comes later")
	assert.Equal(t, "schedule night-stop: stop at 20:00 UTC (caught up: missed at 2026-06-01T20:00:00Z)", evs[1].Reason)
}

// newScheduleHarness is newAPIHarness with the agent's clock set by the
// test.
func newScheduleHarness(t *testing.T, clock *fakeClock) *apiHarness {
	t.Helper()
	runDir, err := os.MkdirTemp("", "wa")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(runDir) })
	a, err := New(Config{
		StateDir: t.TempDir(), RunDir: runDir, Socket: filepath.Join(runDir, "api", "agent.sock"),
		Group: "no-such-group-wisp-test", Wisp: "/bin/false", Now: clock.Now,
		Host:   model.Capacity{CPUs: 4, MemoryBytes: 4 * testGiB},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	ln, err := a.listen()
	require.NoError(t, err)
	srv := newHTTPServer(a)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown(context.Background()))
		require.ErrorIs(t, <-served, http.ErrServerClosed)
		require.NoError(t, a.Close())
	})
	return &apiHarness{a: a, socket: a.cfg.Socket, http: &http.Client{Transport: newContractCheck(t, unixTransport(a.cfg.Socket))}}
}

func TestSchedulesOverHTTP(t *testing.T) {
	clock := &fakeClock{now: berlinTime(t, 2026, 4, 2, 12, 0)} // Thursday before Karfreitag
	h := newScheduleHarness(t, clock)
	h.create(t, "web1", smallSpec())

	var created policy.Schedule
	hdr := h.mustJSON(t, http.MethodPost, "/v1/schedules", policy.Schedule{ID: "night-stop", VM: "web1", Action: "stop", At: "22:00", Days: "Mon-Fri",
		TZ: "Europe/Berlin", Holidays: &policy.Holidays{Calendar: "de", Dates: []policy.HolidayDate{{Date: "2026-12-24", Name: "Heiligabend"}}}}, http.StatusCreated, &created)
	assert.Equal(t, "/v1/schedules/night-stop", hdr.Get("Location"))
	assert.Equal(t, "mon-fri", created.Days)
	assert.Equal(t, "DE", created.Holidays.Calendar)
	assert.Equal(t, clock.Now().UTC(), created.CreatedAt)

	var generated policy.Schedule
	h.mustJSON(t, http.MethodPost, "/v1/schedules", policy.Schedule{Labels: map[string]string{"tier": "web"}, Fraction: 0.5, Action: "start", At: "07:00"}, http.StatusCreated, &generated)
	assert.Regexp(t, `^start-0700-[0-9a-f]{6}$`, generated.ID)

	var list []policy.Schedule
	h.mustJSON(t, http.MethodGet, "/v1/schedules", nil, http.StatusOK, &list)
	require.Len(t, list, 2)
	var got policy.Schedule
	h.mustJSON(t, http.MethodGet, "/v1/schedules/night-stop", nil, http.StatusOK, &got)
	assert.Equal(t, created, got)

	var next []ScheduleOccurrence
	h.mustJSON(t, http.MethodGet, "/v1/schedules/next?count=2", nil, http.StatusOK, &next)
	var lines []string
	for _, o := range next {
		line := o.Schedule + " " + string(o.Action) + " " + o.Time.Format("Mon 01-02 15:04 -0700") + " [" + strings.Join(o.VMs, ",") + "]"
		if o.Holiday != "" {
			line += " " + o.Holiday
		}
		if o.Skipped {
			line += " skipped"
		}
		lines = append(lines, line)
	}
	assert.Equal(t, []string{
		"night-stop stop Thu 04-02 22:00 +0200 [web1]",
		generated.ID + " start Fri 04-03 07:00 +0000 []",
		"night-stop stop Fri 04-03 22:00 +0200 [web1] Karfreitag skipped",
		generated.ID + " start Sat 04-04 07:00 +0000 []",
		"night-stop stop Mon 04-06 22:00 +0200 [web1] Ostermontag skipped",
		"night-stop stop Tue 04-07 22:00 +0200 [web1]",
	}, lines)

	h.mustJSON(t, http.MethodDelete, "/v1/schedules/"+generated.ID, nil, http.StatusNoContent, nil)
	h.mustJSON(t, http.MethodGet, "/v1/schedules", nil, http.StatusOK, &list)
	require.Len(t, list, 1)
}

func TestScheduleBadInputOverHTTP(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	h := newScheduleHarness(t, clock)
	h.mustJSON(t, http.MethodPost, "/v1/schedules", policy.Schedule{ID: "keep", VM: "web1", Action: "stop", At: "22:00"}, http.StatusCreated, nil)

	base := `"vm":"web1","at":"22:00"`
	tests := []struct {
		name, method, path, body string
		breaks                   bool
		status                   int
		code, field, contains    string
	}{
		{name: "unknown zone", body: `{` + base + `,"action":"stop","tz":"Europe/Berlinn"}`, status: 400, code: "invalid", field: "tz", contains: `tz: unknown time zone "Europe/Berlinn"`},
		{name: "unknown day", body: `{` + base + `,"action":"stop","days":"mon-fry"}`, status: 400, code: "invalid", field: "days", contains: `"mon-fry" is not a day`},
		{name: "unknown action", body: `{` + base + `,"action":"reboot"}`, breaks: true, status: 400, code: "invalid", field: "action", contains: `unknown action "reboot"`},
		{name: "suspend is not available yet", body: `{` + base + `,"action":"suspend"}`, status: 400, code: "invalid", field: "action", contains: "suspend is not available yet"},
		{name: "calendar file that does not parse", body: `{` + base + `,"action":"stop","holidays":{"ics":"not a calendar"}}`, status: 400, code: "invalid", field: "holidays.ics", contains: "not an iCalendar file"},
		{name: "unknown calendar", body: `{` + base + `,"action":"stop","holidays":{"calendar":"XX"}}`, status: 400, code: "invalid", field: "holidays.calendar", contains: `unknown calendar "XX"`},
		{name: "bad time", body: `{"vm":"web1","at":"10pm","action":"stop"}`, status: 400, code: "invalid", field: "at", contains: "HH:MM"},
		{name: "fraction over one", body: `{"labels":{"tier":"web"},"fraction":2,"at":"22:00","action":"stop"}`, breaks: true, status: 400, code: "invalid", field: "fraction"},
		{name: "reserved id", body: `{"id":"next",` + base + `,"action":"stop"}`, status: 400, code: "invalid", field: "id", contains: "reserved"},
		{name: "created_at is the agent's", body: `{` + base + `,"action":"stop","created_at":"2026-01-01T00:00:00Z"}`, status: 400, code: "invalid", field: "created_at"},
		{name: "unknown field", body: `{` + base + `,"action":"stop","when":"now"}`, breaks: true, status: 400, code: "invalid", field: "when"},
		{name: "taken id", body: `{"id":"keep",` + base + `,"action":"stop"}`, status: 409, code: "exists", contains: "schedule keep already exists"},
		{name: "unknown schedule", method: "GET", path: "/v1/schedules/nope", status: 404, code: "not_found"},
		{name: "delete unknown schedule", method: "DELETE", path: "/v1/schedules/nope", status: 404, code: "not_found"},
		{name: "bad id in path", method: "GET", path: "/v1/schedules/Nope_1", status: 400, code: "invalid", field: "id"},
		{name: "count zero", method: "GET", path: "/v1/schedules/next?count=0", breaks: true, status: 400, code: "invalid", field: "count"},
		{name: "count not a number", method: "GET", path: "/v1/schedules/next?count=many", breaks: true, status: 400, code: "invalid", field: "count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := tt.method, tt.path
			if method == "" {
				method, path = http.MethodPost, "/v1/schedules"
			}
			ctx := context.Background()
			if tt.breaks {
				ctx = breaksContract(ctx)
			}
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			status, _, b := h.call(t, ctx, method, path, body)
			require.Equal(t, tt.status, status, "%s", b)
			var e ErrorBody
			require.NoError(t, json.Unmarshal(b, &e), "%s", b)
			assert.Equal(t, tt.code, e.Code, "%s", b)
			assert.Equal(t, tt.field, e.Field, "%s", b)
			assert.Contains(t, e.Message, tt.contains)
		})
	}
	// Nothing refused was stored.
	var list []policy.Schedule
	h.mustJSON(t, http.MethodGet, "/v1/schedules", nil, http.StatusOK, &list)
	require.Len(t, list, 1)
	assert.Equal(t, "keep", list[0].ID)
}
