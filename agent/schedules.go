package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/policy"
)

// Store buckets of the schedules.
const (
	// scheduleBucket: id → policy.Schedule.
	scheduleBucket = "schedules"
	// scheduleRunBucket: id → scheduleRun, kept apart so that writing a
	// run never rewrites what the administrator asked for.
	scheduleRunBucket = "schedule_runs"
	// lateAfter is how old an occurrence may be when applied and still be
	// on time; anything older was missed (the agent was down) and its
	// events say it was caught up.
	lateAfter = time.Minute
	// MaxNextCount bounds GET /v1/schedules/next?count=N.
	MaxNextCount = 100
)

// scheduleRun is what the runner remembers of a schedule.
type scheduleRun struct {
	// Last is the agent time up to which occurrences were applied.
	Last time.Time `json:"last"`
}

// ScheduleOccurrence is one coming occurrence of a schedule, as
// GET /v1/schedules/next shows it.
type ScheduleOccurrence struct {
	Schedule string        `json:"schedule"`
	Time     time.Time     `json:"time"` // in the schedule's zone
	Action   policy.Action `json:"action"`
	// VMs the occurrence would act on, as the VMs are now.
	VMs []string `json:"vms"`
	// Holiday names the holiday that changes what happens that day.
	Holiday string `json:"holiday,omitempty"`
	// Skipped: the holiday keeps the schedule from firing.
	Skipped bool `json:"skipped,omitempty"`
}

// Schedules returns every schedule, sorted by id.
func (a *Agent) Schedules(context.Context) ([]policy.Schedule, error) {
	out := []policy.Schedule{}
	err := a.store.List(scheduleBucket, func(key string, raw []byte) error {
		var s policy.Schedule
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("schedule %s: decode: %w", key, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// Schedule returns one schedule; model.ErrNotFound when there is none.
func (a *Agent) Schedule(_ context.Context, id string) (policy.Schedule, error) {
	if err := model.ValidName(id); err != nil {
		return policy.Schedule{}, &model.FieldError{Field: "id", Msg: err.Error()}
	}
	var s policy.Schedule
	err := a.store.Get(scheduleBucket, id, &s)
	return s, err
}

// AddSchedule checks and stores a new schedule. Bad input is a
// *model.FieldError and stores nothing; a taken id is model.ErrExists.
func (a *Agent) AddSchedule(ctx context.Context, s policy.Schedule) (policy.Schedule, error) {
	s, err := policy.Prepare(s)
	if err != nil {
		return policy.Schedule{}, err
	}
	if s.ID == "" {
		s.ID = fmt.Sprintf("%s-%s-%s", s.Action, strings.ReplaceAll(strings.TrimSpace(s.At), ":", ""), randomSuffix())
	}
	if _, err := a.Schedule(ctx, s.ID); err == nil {
		return policy.Schedule{}, fmt.Errorf("schedule %s %w", s.ID, model.ErrExists)
	} else if !errors.Is(err, model.ErrNotFound) {
		return policy.Schedule{}, err
	}
	// The schedule's occurrences count from its creation: one whose time
	// passed earlier today is not due.
	s.CreatedAt = a.now().UTC()
	if err := a.store.Put(scheduleBucket, s.ID, s); err != nil {
		return policy.Schedule{}, err
	}
	return s, nil
}

// DeleteSchedule removes a schedule and what the runner kept of it.
func (a *Agent) DeleteSchedule(ctx context.Context, id string) error {
	if _, err := a.Schedule(ctx, id); err != nil {
		return err
	}
	if err := a.store.Delete(scheduleBucket, id); err != nil {
		return err
	}
	if err := a.store.Delete(scheduleRunBucket, id); err != nil && !errors.Is(err, model.ErrNotFound) {
		return err
	}
	return nil
}

// NextOccurrences returns the next count occurrences of every schedule
// (with the holiday skips in between), oldest first, with the VMs each
// would touch as the VMs are now.
func (a *Agent) NextOccurrences(ctx context.Context, count int) ([]ScheduleOccurrence, error) {
	scheds, err := a.Schedules(ctx)
	if err != nil {
		return nil, err
	}
	vms, err := a.list()
	if err != nil {
		return nil, err
	}
	now := a.now()
	out := []ScheduleOccurrence{}
	for _, s := range scheds {
		plan, err := policy.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("schedule %s: %w", s.ID, err)
		}
		targets := policy.Targets(s, vms)
		if targets == nil {
			targets = []string{}
		}
		for _, o := range plan.Next(now, count) {
			out = append(out, ScheduleOccurrence{Schedule: s.ID, Time: o.Time, Action: s.Action, VMs: targets, Holiday: o.Holiday, Skipped: o.Skipped})
		}
	}
	slices.SortStableFunc(out, func(x, y ScheduleOccurrence) int {
		if c := x.Time.Compare(y.Time); c != 0 {
			return c
		}
		return cmp.Compare(x.Schedule, y.Schedule)
	})
	return out, nil
}

// dueAction is a schedule whose latest occurrence in (last run, now] is to
// be applied.
type dueAction struct {
	plan   *policy.Plan
	occ    policy.Occurrence
	missed int // older occurrences in the same span, not applied
}

// runSchedules applies the schedules that came due since the last round:
// for each, the occurrences in (last run, now] are due and only the latest
// is applied (older ones would be undone by it); one that is late was
// missed while the agent was down, and its events say it was caught up.
// Each VM gets one schedule event per occurrence, applied or skipped, so a
// VM already where the schedule wants it, or one that cannot go there, is
// said once and not every round.
func (a *Agent) runSchedules(ctx context.Context) {
	scheds, err := a.Schedules(ctx)
	if err != nil {
		a.log.Error("schedules: " + err.Error())
		return
	}
	if len(scheds) == 0 {
		return
	}
	now := a.now()
	var due []dueAction
	for _, s := range scheds {
		plan, err := policy.Compile(s)
		if err != nil {
			a.log.Error(fmt.Sprintf("schedule %s: %v", s.ID, err))
			continue
		}
		last := s.CreatedAt
		var run scheduleRun
		if err := a.store.Get(scheduleRunBucket, s.ID, &run); err == nil {
			last = run.Last
		} else if !errors.Is(err, model.ErrNotFound) {
			a.log.Error(fmt.Sprintf("schedule %s: %v", s.ID, err))
			continue
		}
		occs := plan.Due(last, now)
		if len(occs) == 0 {
			continue
		}
		due = append(due, dueAction{plan: plan, occ: occs[len(occs)-1], missed: len(occs) - 1})
	}
	if len(due) == 0 {
		return
	}
	vms, err := a.list()
	if err != nil {
		a.log.Error("schedules: " + err.Error())
		return
	}
	// Several schedules due in one round (after a restart, say) are
	// applied in the order of their times, and on a VM two of them touch
	// only the later one acts: it is what the VM should be doing now.
	slices.SortStableFunc(due, func(x, y dueAction) int { return x.occ.Time.Compare(y.occ.Time) })
	targets := make([][]string, len(due))
	owner := map[string]int{}
	for i, d := range due {
		targets[i] = policy.Targets(d.plan.Schedule(), vms)
		for _, vm := range targets[i] {
			owner[vm] = i
		}
	}
	for i, d := range due {
		if ctxDone(ctx) {
			return
		}
		s := d.plan.Schedule()
		reason := scheduleReason(d, now)
		var evs []model.Event
		if len(targets[i]) == 0 {
			evs = append(evs, model.Event{Kind: model.EventSchedule, Reason: reason + ": skipped: no VM matches"})
		}
		for _, name := range targets[i] {
			if j := owner[name]; j != i {
				later := due[j]
				evs = append(evs, model.Event{Kind: model.EventSchedule, VM: name,
					Reason: fmt.Sprintf("%s: skipped: schedule %s at %s comes later", reason, later.plan.Schedule().ID, later.occ.Time.Format(time.RFC3339))})
				continue
			}
			evs = append(evs, a.applyScheduled(ctx, name, s.Action.Op(), reason))
		}
		for k := range evs {
			evs[k].Time = now.UTC()
		}
		if err := a.store.AppendEvents(evs...); err != nil {
			a.log.Error(fmt.Sprintf("schedule %s: %v", s.ID, err))
		}
		for _, ev := range evs {
			a.notify(ev.VM)
		}
		// The occurrence is done whatever each VM made of it: a skip is
		// said once, not retried every round.
		if err := a.store.Put(scheduleRunBucket, s.ID, scheduleRun{Last: now.UTC()}); err != nil {
			a.log.Error(fmt.Sprintf("schedule %s: %v", s.ID, err))
		}
	}
}

// scheduleReason is what events say of an occurrence: "schedule
// night-stop: stop at 22:00 Europe/Berlin", with the holiday that made it
// fire, and "caught up: missed at T" when it is late.
func scheduleReason(d dueAction, now time.Time) string {
	s := d.plan.Schedule()
	reason := fmt.Sprintf("schedule %s: %s", s.ID, d.plan.Describe())
	if d.occ.Holiday != "" {
		reason += " (" + d.occ.Holiday + ")"
	}
	if d.missed > 0 || now.Sub(d.occ.Time) > lateAfter {
		reason += " (caught up: missed at " + d.occ.Time.Format(time.RFC3339)
		if d.missed > 0 {
			reason += fmt.Sprintf("; %d earlier occurrence(s) not applied, this one supersedes them", d.missed)
		}
		reason += ")"
	}
	return reason
}

// applyScheduled asks for op on one VM for a schedule and returns the
// schedule event that says what came of it.
func (a *Agent) applyScheduled(ctx context.Context, name string, op model.Op, reason string) model.Event {
	ev := model.Event{Kind: model.EventSchedule, VM: name, Reason: reason}
	skip := func(why string) model.Event {
		ev.Reason = reason + ": skipped: " + why
		return ev
	}
	vm, err := a.store.GetVM(name)
	if err != nil {
		return skip(err.Error())
	}
	want, _ := desiredFor(op)
	if already(vm, want) {
		return skip(fmt.Sprintf("vm %s is already %s", name, want))
	}
	if op == model.OpStart {
		// A start needs the capacity decision (and leases, preemption)
		// that only Do makes.
		got, err := a.Do(ctx, name, op, OpOptions{NoWait: true, Reason: reason})
		if err != nil {
			return skip(conflictMessage(err))
		}
		ev.From, ev.To = string(vm.Desired), string(got.Desired)
		return ev
	}
	// Stop, pause and resume need no capacity decision: they write the
	// desired state as Do would, with the schedule as the reason.
	got, err := a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		d, err := vm.Apply(op)
		if op == model.OpStop && vm.Held && vm.Runtime == nil {
			d, err = model.DesiredStopped, nil // it no longer waits for room
		}
		if err != nil {
			return nil, err
		}
		vm.Stop = &model.StopRequest{TimeoutSeconds: DefaultStopTimeout.Seconds()}
		if d == model.DesiredStopped {
			vm.Held = false
		}
		return vm.SetDesired(d, reason), nil
	})
	if err != nil {
		return skip(conflictMessage(err))
	}
	a.wake()
	ev.From, ev.To = string(vm.Desired), string(got.Desired)
	return ev
}

// desiredFor is the desired state a scheduled operation asks for.
func desiredFor(op model.Op) (model.Desired, bool) {
	switch op {
	case model.OpStart, model.OpResume:
		return model.DesiredRunning, true
	case model.OpStop:
		return model.DesiredStopped, true
	case model.OpPause:
		return model.DesiredPaused, true
	}
	return "", false
}

// already reports whether vm is wanted where a schedule would send it and
// on its way or there; a VM wanted running that is stopped or crashed is
// not (a start brings it back).
func already(vm model.VM, want model.Desired) bool {
	if vm.Desired != want {
		return false
	}
	if want == model.DesiredRunning && vm.Runtime == nil && !vm.Held &&
		(vm.Observed == model.ObservedStopped || vm.Observed == model.ObservedCrashed) {
		return false
	}
	return true
}

// randomSuffix makes generated schedule ids unique.
func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
