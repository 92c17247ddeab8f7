package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/vmm/api"
)

// statusTimeout bounds one question to a VMM's control socket; a healthy
// VMM answers in microseconds.
const statusTimeout = 3 * time.Second

// startGrace is how long a new VMM process may take to answer on its
// socket before the agent calls it hung (the default guest's first start
// may fetch a kernel).
const startGrace = 10 * time.Minute

// Crash restarts of an autostart VM: at most crashRestarts within
// crashWindow, then the agent gives up and leaves it crashed.
// preemptStopTimeout is how long a preempted guest has to power off.
const (
	crashRestarts      = 3
	crashWindow        = 5 * time.Minute
	preemptStopTimeout = 10 * time.Second
	// startPoll is how often a starting VMM is asked whether its guest
	// runs yet.
	startPoll = 25 * time.Millisecond
)

// worker serialises everything done to one VM.
type worker struct {
	mu      sync.Mutex
	crashes []time.Time // recent crash restarts
}

func (a *Agent) workerFor(name string) *worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.workers[name]
	if !ok {
		w = &worker{}
		a.workers[name] = w
	}
	return w
}

func (a *Agent) dropWorker(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.workers, name)
}

// Run adopts the VMM processes that run, starts the autostart VMs after a
// host boot, serves the API on the socket and reconciles until ctx ends.
// VMs keep running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := a.listen()
	if err != nil {
		return err
	}
	srv := newHTTPServer(a)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() {
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		_ = os.Remove(a.cfg.Socket)
	}()
	if err := a.autostart(); err != nil {
		return err
	}
	a.log.Info("agent ready", "socket", a.cfg.Socket, "state", a.cfg.StateDir)
	tick := time.NewTicker(a.cfg.Interval)
	defer tick.Stop()
	var loops sync.WaitGroup
	defer loops.Wait()
	for {
		a.runPolicies(ctx)
		a.reconcileAll(ctx, &loops)
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			return fmt.Errorf("api server: %w", err)
		case <-a.kick:
		case <-tick.C:
		}
	}
}

// autostart marks the autostart VMs desired running the first time an
// agent runs after the host booted: RunDir is on a tmpfs, so a marker there
// tells a host boot from an agent restart (after which VMs a user stopped
// stay stopped).
func (a *Agent) autostart() error {
	marker := filepath.Join(a.cfg.RunDir, "booted")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	vms, err := a.list()
	if err != nil {
		return err
	}
	for _, vm := range vms {
		if !vm.Autostart || vm.Desired == model.DesiredRunning {
			continue
		}
		if _, err := a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
			return vm.SetDesired(model.DesiredRunning, "autostart after host boot"), nil
		}); err != nil {
			return err
		}
	}
	return os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
}

// reconcileAll gives every VM whose worker is free one reconcile pass.
func (a *Agent) reconcileAll(ctx context.Context, loops *sync.WaitGroup) {
	vms, err := a.list()
	if err != nil {
		a.log.Error("list vms: " + err.Error())
		return
	}
	for _, vm := range vms {
		w := a.workerFor(vm.Name)
		if !w.mu.TryLock() {
			continue // busy with a stop or a start; it looks again when done
		}
		loops.Add(1)
		go func(name string) {
			defer loops.Done()
			defer w.mu.Unlock()
			if err := a.reconcile(ctx, name, w); err != nil && !errors.Is(err, model.ErrNotFound) {
				a.log.Warn("reconcile: "+err.Error(), "vm", name)
			}
		}(vm.Name)
	}
}

// reconcile observes one VM and takes one step toward its desired state.
func (a *Agent) reconcile(ctx context.Context, name string, w *worker) error {
	vm, err := a.observe(ctx, name, w)
	if err != nil {
		return err
	}
	defer a.notify(name)
	switch vm.Desired {
	case model.DesiredRunning:
		switch {
		case vm.Held && vm.Runtime != nil && vm.Observed != model.ObservedStopping:
			return a.stop(ctx, vm)
		case vm.Held:
			return nil // waits for releaseHeld
		case vm.Runtime == nil:
			return a.start(vm)
		case vm.RestartPending && (vm.Observed == model.ObservedRunning || vm.Observed == model.ObservedPaused):
			return a.stop(ctx, vm)
		case vm.Observed == model.ObservedPaused:
			return a.control(ctx, vm, func(c *api.Client) error { return c.Resume(ctx) })
		}
	case model.DesiredPaused:
		switch {
		case vm.Runtime == nil:
			_, err := a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
				return vm.SetDesired(model.DesiredStopped, "a stopped vm cannot be paused"), nil
			})
			return err
		case vm.Observed == model.ObservedRunning:
			return a.control(ctx, vm, func(c *api.Client) error { return c.Pause(ctx) })
		}
	case model.DesiredStopped:
		if vm.Runtime != nil && vm.Observed != model.ObservedStopping {
			return a.stop(ctx, vm)
		}
	}
	return nil
}

// observe brings name's observed state up to date from its VMM process and
// records any change, with what follows from it for the desired state.
func (a *Agent) observe(ctx context.Context, name string, w *worker) (model.VM, error) {
	vm, err := a.store.GetVM(name)
	if err != nil {
		return vm, err
	}
	obs, reason, rt, ended := a.look(ctx, vm)
	if !ended && obs == vm.Observed && reason == vm.Reason && reflect.DeepEqual(rt, vm.Runtime) {
		return vm, nil // nothing new: no write (an idle host costs no I/O)
	}
	return a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		var evs []model.Event
		if rt != nil && vm.Runtime != nil && rt.NetMetered > vm.Runtime.NetMetered {
			evs = append(evs, model.Event{VM: vm.Name, Kind: model.EventTraffic, Reason: "NIC counters",
				TrafficBytes: rt.NetMetered - vm.Runtime.NetMetered, CPUs: vm.Spec.CPUs, MemoryBytes: vm.Spec.MemoryBytes})
		}
		vm.Runtime = rt
		evs = append(evs, vm.SetObserved(obs, reason)...)
		if !ended {
			return evs, nil
		}
		// The VMM process is gone: say what the desired state is now.
		switch {
		case vm.RestartPending:
			vm.RestartPending = false
			evs = append(evs, vm.SetDesired(model.DesiredRunning, "restart")...)
		case vm.Desired == model.DesiredStopped:
		case vm.Held:
			vm.Reason = "held back for capacity: " + vm.Reason // wanted again once it fits
		case obs == model.ObservedCrashed && vm.Autostart && w.allowRestart(time.Now()):
			evs = append(evs, model.Event{VM: vm.Name, Kind: model.EventDesired, From: string(vm.Desired), To: string(model.DesiredRunning), Reason: "autostart: starting again after a crash", CPUs: vm.Spec.CPUs, MemoryBytes: vm.Spec.MemoryBytes})
			vm.Desired = model.DesiredRunning
		default:
			// Like a real server: off until someone starts it again.
			evs = append(evs, vm.SetDesired(model.DesiredStopped, reason)...)
		}
		return evs, nil
	})
}

// allowRestart says whether a crashed autostart VM may start again now.
func (w *worker) allowRestart(now time.Time) bool {
	recent := w.crashes[:0]
	for _, t := range w.crashes {
		if now.Sub(t) < crashWindow {
			recent = append(recent, t)
		}
	}
	w.crashes = recent
	if len(recent) >= crashRestarts {
		return false
	}
	w.crashes = append(w.crashes, now)
	return true
}

// look finds out what vm's VMM process is doing. ended is true when the
// process was there at the last look and is gone now.
func (a *Agent) look(ctx context.Context, vm model.VM) (obs model.Observed, reason string, rt *model.Runtime, ended bool) {
	rt = vm.Runtime
	if rt == nil {
		return vm.Observed, vm.Reason, nil, false
	}
	if alive(rt) {
		a.watch(rt)
		sctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		st, err := api.Dial(rt.Socket).Status(sctx)
		if err != nil {
			if vm.Observed == model.ObservedStarting && time.Since(rt.StartedAt) < startGrace {
				return model.ObservedStarting, "vmm starting", rt, false
			}
			return vm.Observed, "control socket not answering: " + err.Error(), rt, false
		}
		next := *rt
		next.Backend = st.Backend
		meterTraffic(&next, st.NetRxBytes+st.NetTxBytes, a.now(), a.cfg.TrafficInterval)
		switch st.State {
		case "created", "starting":
			return model.ObservedStarting, "guest starting", &next, false
		case "running":
			return model.ObservedRunning, runningReason(st), &next, false
		case "paused":
			return model.ObservedPaused, "paused", &next, false
		default: // stopping, stopped, failed: the process is on its way out
			return model.ObservedStopping, "vm " + st.State, &next, false
		}
	}
	// The process is gone: its exit record says how the VM ended.
	p := a.forget(rt.PID)
	rec, err := readExit(rt.Dir)
	_ = os.RemoveAll(rt.Dir)
	switch {
	case err != nil:
		return model.ObservedCrashed, fmt.Sprintf("VMM process %d ended; %v", rt.PID, err), nil, true
	case rec == nil:
		return model.ObservedCrashed, fmt.Sprintf("VMM process %d died without reporting how its vm ended%s", rt.PID, diedHow(p)), nil, true
	}
	why := rec.Reason
	if rec.Detail != "" {
		why += ": " + rec.Detail
	}
	switch rec.Reason {
	case "poweroff":
		return model.ObservedStopped, "guest powered off", nil, true
	case "stopped":
		return model.ObservedStopped, orElse(rec.Detail, why), nil, true
	}
	return model.ObservedCrashed, why, nil, true
}

func runningReason(st api.Status) string {
	if st.BackendReason != "" {
		return "running on " + st.Backend + ": " + st.BackendReason
	}
	return "running on " + st.Backend
}

// start spawns vm's VMM process, if the host has room for it.
func (a *Agent) start(vm model.VM) error {
	a.capMu.Lock()
	defer a.capMu.Unlock()
	vms, err := a.list()
	if err != nil {
		return err
	}
	victims, ok := model.PlanPreemption(a.cfg.Host, vms, vm)
	switch {
	case !ok && vm.Class == model.ClassBestEffort:
		return a.hold(vm.Name, "waiting for capacity: "+a.fitsError(vms, vm).Error())
	case !ok:
		err := a.fitsError(vms, vm)
		_, uerr := a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
			return vm.SetDesired(model.DesiredStopped, err.Error()), nil
		})
		return errors.Join(err, uerr)
	case len(victims) > 0:
		// Room is made first; this VM starts in a later round, once the
		// held VMs' processes are gone.
		for _, v := range victims {
			why := fmt.Sprintf("preempted by vm %s (%s, priority %d)", vm.Name, vm.Class, vm.Priority)
			if err := a.hold(v.Name, why); err != nil {
				return err
			}
			a.log.Info("preempting", "vm", v.Name, "for", vm.Name)
		}
		return nil
	}
	if err := a.fitsError(vms, vm); err != nil {
		return nil // held VMs are still stopping; a later round starts it
	}
	rt, err := a.spawn(vm)
	if err != nil {
		_, uerr := a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
			evs := vm.SetObserved(model.ObservedCrashed, err.Error())
			return append(evs, vm.SetDesired(model.DesiredStopped, err.Error())...), nil
		})
		return errors.Join(err, uerr)
	}
	_, err = a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
		vm.Runtime = rt
		return vm.SetObserved(model.ObservedStarting, "vmm process started"), nil
	})
	if err != nil {
		return err
	}
	a.log.Info("vm starting", "vm", vm.Name, "pid", rt.PID)
	go a.watchStart(rt)
	return nil
}

// watchStart asks a new VMM often until its guest runs (or the process is
// gone), then wakes the loop, so a start is seen at once rather than at
// the next round.
func (a *Agent) watchStart(rt *model.Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), startGrace)
	defer cancel()
	c := api.Dial(rt.Socket)
	tick := time.NewTicker(startPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !alive(rt) {
			a.wake()
			return
		}
		st, err := c.Status(ctx)
		if err == nil && st.State != "created" && st.State != "starting" {
			a.wake()
			return
		}
	}
}

// hold marks name held back for capacity and records why.
func (a *Agent) hold(name, why string) error {
	_, err := a.store.UpdateVM(name, func(vm *model.VM) ([]model.Event, error) {
		if vm.Held {
			return nil, nil
		}
		vm.Held = true
		vm.Reason = why
		// A preempted VM is stopped quickly: it is wanted back, and what
		// it held is wanted now.
		vm.Stop = &model.StopRequest{TimeoutSeconds: preemptStopTimeout.Seconds()}
		return []model.Event{{VM: vm.Name, Kind: model.EventPreempted, From: string(vm.Observed), Reason: why, CPUs: vm.Spec.CPUs, MemoryBytes: vm.Spec.MemoryBytes}}, nil
	})
	return err
}

// releaseHeld brings held VMs back, highest rank first, while they fit.
func (a *Agent) releaseHeld() {
	a.capMu.Lock()
	defer a.capMu.Unlock()
	vms, err := a.list()
	if err != nil {
		a.log.Error("list vms: " + err.Error())
		return
	}
	for _, v := range model.HeldInOrder(vms) {
		if v.Runtime != nil {
			continue // still stopping
		}
		if model.Fits(a.cfg.Host, model.Needs(vms, v.Name), v.Spec) != nil {
			continue // a smaller one further down may fit
		}
		_, err := a.store.UpdateVM(v.Name, func(vm *model.VM) ([]model.Event, error) {
			vm.Held = false
			return []model.Event{{VM: vm.Name, Kind: model.EventPreempted, From: "held", To: string(model.DesiredRunning), Reason: "capacity returned", CPUs: vm.Spec.CPUs, MemoryBytes: vm.Spec.MemoryBytes}}, nil
		})
		if err != nil {
			a.log.Warn("release held vm: "+err.Error(), "vm", v.Name)
			continue
		}
		for i := range vms {
			if vms[i].Name == v.Name {
				vms[i].Held = false // it counts from now on
			}
		}
	}
}

// stop asks vm's VMM to stop the way the last request said and waits for
// it, then for the process to go.
func (a *Agent) stop(ctx context.Context, vm model.VM) error {
	req := model.StopRequest{TimeoutSeconds: DefaultStopTimeout.Seconds()}
	if vm.Stop != nil {
		req = *vm.Stop
	}
	if _, err := a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
		how := "graceful stop"
		if req.Force {
			how = "forced stop"
		}
		return vm.SetObserved(model.ObservedStopping, how), nil
	}); err != nil {
		return err
	}
	a.notify(vm.Name)
	timeout := time.Duration(req.TimeoutSeconds * float64(time.Second))
	// The VMM forces the guest off after timeout; the margin covers that.
	sctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	err := a.control(sctx, vm, func(c *api.Client) error {
		_, err := c.Stop(sctx, api.StopOptions{Force: req.Force, Timeout: timeout})
		return err
	})
	a.waitExit(sctx, vm.Runtime)
	return err
}

// meterTraffic records in rt the NIC counters' total when a traffic event
// is due (every `every`): the difference from what was metered before is
// the event.
func meterTraffic(rt *model.Runtime, total uint64, now time.Time, every time.Duration) {
	if total <= rt.NetMetered || now.Sub(rt.NetMeteredAt) < every {
		return
	}
	rt.NetMetered, rt.NetMeteredAt = total, now
}

// waitExit waits until rt's process is gone or ctx ends.
func (a *Agent) waitExit(ctx context.Context, rt *model.Runtime) {
	a.mu.Lock()
	p := a.procs[rt.PID]
	a.mu.Unlock()
	if p == nil {
		return
	}
	select {
	case <-p.done:
	case <-ctx.Done():
	}
}

// control runs fn against vm's control socket. A VMM that is gone is not an
// error here: the next look records it.
func (a *Agent) control(ctx context.Context, vm model.VM, fn func(*api.Client) error) error {
	err := fn(api.Dial(vm.Runtime.Socket))
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func orElse(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
