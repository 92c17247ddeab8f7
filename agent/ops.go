package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/vmm/api"
)

// List returns every VM, sorted by name.
func (a *Agent) List(context.Context) ([]VMInfo, error) {
	vms, err := a.list()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]VMInfo, 0, len(vms))
	for _, vm := range vms {
		out = append(out, info(vm, now))
	}
	return out, nil
}

// Get returns one VM; model.ErrNotFound when there is none by that name.
func (a *Agent) Get(_ context.Context, name string) (VMInfo, error) {
	if err := model.ValidName(name); err != nil {
		return VMInfo{}, err
	}
	vm, err := a.store.GetVM(name)
	if err != nil {
		return VMInfo{}, err
	}
	return info(vm, time.Now()), nil
}

// Create records a new VM, stopped unless the request asks to start it.
func (a *Agent) Create(ctx context.Context, req CreateRequest) (VMInfo, error) {
	if err := model.ValidName(req.Name); err != nil {
		return VMInfo{}, err
	}
	if err := req.Spec.Validate(); err != nil {
		return VMInfo{}, err
	}
	class := req.Class
	switch class {
	case "":
		class = model.ClassReserved
	case model.ClassReserved, model.ClassBestEffort:
	default:
		return VMInfo{}, &model.FieldError{Field: "class", Msg: fmt.Sprintf("%q: use %s or %s", class, model.ClassReserved, model.ClassBestEffort)}
	}
	if req.LeaseFrom != nil && req.LeaseUntil != nil && !req.LeaseUntil.After(*req.LeaseFrom) {
		return VMInfo{}, &model.FieldError{Field: "lease_until", Msg: "must be after lease_from"}
	}
	vm := model.VM{
		Name: req.Name, Spec: req.Spec, Desired: model.DesiredStopped, Observed: model.ObservedStopped,
		Autostart: req.Autostart, Labels: req.Labels, Priority: req.Priority, Class: class,
		CreatedAt: a.now().UTC(), LeaseFrom: req.LeaseFrom, LeaseUntil: req.LeaseUntil,
	}
	if err := a.store.CreateVM(vm, model.Event{Kind: model.EventCreated, To: string(model.ObservedStopped), Reason: "created"}); err != nil {
		return VMInfo{}, err
	}
	a.notify(req.Name)
	if req.Start {
		return a.Do(ctx, req.Name, model.OpStart, OpOptions{})
	}
	return info(vm, time.Now()), nil
}

// Delete removes a stopped VM and its files; with force a running one is
// forced off first. Its history stays in the ledger.
func (a *Agent) Delete(ctx context.Context, name string, force bool) error {
	if err := model.ValidName(name); err != nil {
		return err
	}
	vm, err := a.store.GetVM(name)
	if err != nil {
		return err
	}
	if _, err := vm.Apply(model.OpDelete); err != nil {
		if !force {
			return err
		}
		if _, err := a.Do(ctx, name, model.OpStop, OpOptions{Force: true}); err != nil && !errors.Is(err, model.ErrConflict) {
			return err
		}
	}
	// The worker must not act on a VM that is going away.
	w := a.workerFor(name)
	w.mu.Lock()
	defer w.mu.Unlock()
	vm, err = a.store.GetVM(name)
	if err != nil {
		return err
	}
	if vm.Runtime != nil || (vm.Observed != model.ObservedStopped && vm.Observed != model.ObservedCrashed) {
		return &model.TransitionError{Op: model.OpDelete, VM: name, State: vm.Observed}
	}
	if err := a.store.DeleteVM(name, model.Event{Kind: model.EventDeleted, From: string(vm.Observed), Reason: "deleted"}); err != nil {
		return err
	}
	a.dropWorker(name)
	_ = os.RemoveAll(a.vmStateDir(name))
	a.notify(name)
	return nil
}

// Do applies a user operation: it records the desired state the operation
// asks for (refusing one that does not fit the VM's state) and, unless
// opts.NoWait, waits until the VM got there or cannot.
func (a *Agent) Do(ctx context.Context, name string, op model.Op, opts OpOptions) (VMInfo, error) {
	if err := model.ValidName(name); err != nil {
		return VMInfo{}, err
	}
	if opts.Timeout < 0 {
		return VMInfo{}, &model.FieldError{Field: "timeout_seconds", Msg: "must not be negative"}
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultStopTimeout
	}
	switch op {
	case model.OpStart, model.OpStop, model.OpPause, model.OpResume, model.OpRestart:
	default:
		return VMInfo{}, &model.FieldError{Field: "op", Msg: fmt.Sprintf("%q is not an operation here", op)}
	}
	// Capacity decisions are made one at a time, outside the store's
	// write transaction (a read inside it could deadlock bbolt).
	a.capMu.Lock()
	hold, err := a.admit(name, op)
	if err != nil {
		a.capMu.Unlock()
		return VMInfo{}, err
	}
	var want model.Desired
	vm, err := a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		d, err := vm.Apply(op)
		if op == model.OpStop && vm.Held && vm.Runtime == nil {
			d, err = model.DesiredStopped, nil // it no longer waits for room
		}
		if err != nil {
			return nil, err
		}
		want = d
		vm.Stop = &model.StopRequest{Force: opts.Force, TimeoutSeconds: opts.Timeout.Seconds()}
		if op == model.OpRestart {
			vm.RestartPending = true
		}
		switch {
		case op == model.OpStart:
			vm.Held = hold
		case d == model.DesiredStopped:
			vm.Held = false
		}
		reason := opts.Reason
		if reason == "" {
			reason = "user: " + string(op)
		}
		if hold {
			reason += " (waiting for capacity)"
		}
		return vm.SetDesired(d, reason), nil
	})
	a.capMu.Unlock()
	if err != nil {
		return VMInfo{}, err
	}
	a.wake()
	if opts.NoWait {
		return info(vm, time.Now()), nil
	}
	return a.waitFor(ctx, name, op, want)
}

// admit decides whether op may start name now: a VM that fits, or fits
// once lower-ranked best-effort VMs are held back, is admitted; a
// best-effort VM that cannot fit is admitted held (it runs when room
// frees); a reserved one is refused, naming what is short. Call it with
// capMu held.
func (a *Agent) admit(name string, op model.Op) (hold bool, err error) {
	if op != model.OpStart {
		return false, nil
	}
	vms, err := a.list()
	if err != nil {
		return false, err
	}
	i := slices.IndexFunc(vms, func(v model.VM) bool { return v.Name == name })
	if i < 0 {
		return false, fmt.Errorf("vm %s: %w", name, model.ErrNotFound)
	}
	vm := vms[i]
	if now := a.now(); !vm.InLease(now) {
		return false, conflictf("vm %s may run only within its lease (%s): it is %s", name, leaseText(vm), now.UTC().Format(time.RFC3339))
	}
	if _, ok := model.PlanPreemption(a.cfg.Host, vms, vm); ok {
		return false, nil
	}
	if vm.Class == model.ClassBestEffort {
		return true, nil
	}
	return false, a.fitsError(vms, vm)
}

// fitsError says why vm does not fit next to the others, or nil.
func (a *Agent) fitsError(vms []model.VM, vm model.VM) error {
	if err := model.Fits(a.cfg.Host, model.Needs(vms, vm.Name), vm.Spec); err != nil {
		return fmt.Errorf("cannot start vm %s: %w", vm.Name, err)
	}
	return nil
}

// waitFor waits until name's observed state answers op: the desired state
// reached, or a state from which it will not be (crashed, stopped when it
// should run).
func (a *Agent) waitFor(ctx context.Context, name string, op model.Op, want model.Desired) (VMInfo, error) {
	for {
		ch := a.waiter(name)
		vm, err := a.store.GetVM(name)
		if err != nil {
			return VMInfo{}, err
		}
		if done, err := reached(vm, op, want); done {
			return info(vm, time.Now()), err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return info(vm, time.Now()), fmt.Errorf("vm %s: %s not finished: %w", name, op, ctx.Err())
		}
	}
}

// reached says whether vm is where op wanted it, or never will be.
func reached(vm model.VM, op model.Op, want model.Desired) (bool, error) {
	if vm.RestartPending {
		return false, nil
	}
	if vm.Held && vm.Runtime == nil && want == model.DesiredRunning {
		return true, nil // queued for capacity: its events say when it starts
	}
	if vm.Desired != want {
		// Someone asked for something else meanwhile; this wait is over.
		return true, nil
	}
	switch want {
	case model.DesiredRunning:
		switch vm.Observed {
		case model.ObservedRunning:
			return true, nil
		case model.ObservedCrashed, model.ObservedStopped:
			if vm.Runtime == nil && vm.Observed == model.ObservedCrashed {
				return true, fmt.Errorf("vm %s: %s failed: %s: %w", vm.Name, op, vm.Reason, model.ErrConflict)
			}
		}
	case model.DesiredPaused:
		return vm.Observed == model.ObservedPaused, nil
	case model.DesiredStopped:
		return vm.Runtime == nil && (vm.Observed == model.ObservedStopped || vm.Observed == model.ObservedCrashed), nil
	}
	return false, nil
}

// Events returns the ledger's events matching q.
func (a *Agent) Events(_ context.Context, q store.EventQuery) ([]model.Event, error) {
	if q.VM != "" {
		if err := model.ValidName(q.VM); err != nil {
			return nil, err
		}
	}
	return a.store.Events(q)
}

// Follow returns a channel that gets a value whenever new events may be in
// the store, until ctx ends.
func (a *Agent) Follow(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	a.mu.Lock()
	a.follow[ch] = struct{}{}
	a.mu.Unlock()
	context.AfterFunc(ctx, func() {
		a.mu.Lock()
		delete(a.follow, ch)
		a.mu.Unlock()
	})
	return ch
}

// Host reports the host's capacity and what VMs hold.
func (a *Agent) Host(context.Context) (HostInfo, error) {
	vms, err := a.list()
	if err != nil {
		return HostInfo{}, err
	}
	used := model.Needs(vms, "")
	h := HostInfo{
		CPUs: a.cfg.Host.CPUs, MemoryBytes: a.cfg.Host.MemoryBytes, CPUOvercommit: a.cfg.Host.CPUOvercommit,
		UsedCPUs: used.CPUs, UsedMemoryBytes: used.MemoryBytes, VMs: len(vms), AgentPID: os.Getpid(),
		StoreSchemaVersion: store.SchemaVersion,
	}
	for _, vm := range vms {
		if vm.Observed == model.ObservedRunning || vm.Observed == model.ObservedPaused {
			h.Running++
		}
	}
	return h, nil
}

// Console attaches to a running VM's serial console through its VMM's
// control socket; write asks to be the one viewer that types.
func (a *Agent) Console(ctx context.Context, name string, write bool) (net.Conn, error) {
	vm, err := a.store.GetVM(name)
	if err != nil {
		return nil, err
	}
	if vm.Runtime == nil || vm.Runtime.Socket == "" {
		return nil, conflictf("vm %s is %s: it has a console while it runs (start it first)", name, vm.Observed)
	}
	conn, err := api.Dial(vm.Runtime.Socket).Console(ctx, write)
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) {
		return nil, conflictf("vm %s: its VMM does not answer yet (%v)", name, err)
	}
	return conn, err
}

// ConsoleLog is the file that keeps everything name's console printed.
func (a *Agent) ConsoleLog(name string) (string, error) {
	if _, err := a.store.GetVM(name); err != nil {
		return "", err
	}
	return filepath.Join(a.vmStateDir(name), "console.log"), nil
}

func (a *Agent) vmStateDir(name string) string {
	return filepath.Join(a.cfg.StateDir, "vms", name)
}

// waiter returns a channel closed at name's next change.
func (a *Agent) waiter(name string) <-chan struct{} {
	ch := make(chan struct{})
	a.mu.Lock()
	a.waiters[name] = append(a.waiters[name], ch)
	a.mu.Unlock()
	return ch
}

// notify wakes whoever waits on name or follows events.
func (a *Agent) notify(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ch := range a.waiters[name] {
		close(ch)
	}
	delete(a.waiters, name)
	for ch := range a.follow {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// conflictError is a request that does not fit the VM's state, in words of
// its own; it matches model.ErrConflict.
type conflictError struct{ msg string }

func (e *conflictError) Error() string        { return e.msg }
func (e *conflictError) Is(target error) bool { return target == model.ErrConflict }

func conflictf(format string, args ...any) error {
	return &conflictError{msg: fmt.Sprintf(format, args...)}
}

func leaseText(vm model.VM) string {
	from, until := "any time", "no end"
	if vm.LeaseFrom != nil {
		from = vm.LeaseFrom.UTC().Format(time.RFC3339)
	}
	if vm.LeaseUntil != nil {
		until = vm.LeaseUntil.UTC().Format(time.RFC3339)
	}
	return "from " + from + " until " + until
}
