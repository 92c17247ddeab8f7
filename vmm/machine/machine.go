// Package machine is wisp's library entry point: it turns a vmm.Config into
// a VM on the right backend and gives a program what it needs to manage it.
//
//	m, err := machine.New(ctx, cfg, machine.Options{})
//	if err != nil { ... }
//	defer m.Close()
//	if err := m.Start(ctx); err != nil { ... }
//	st, err := m.Wait()
//
// New validates the config, picks the backend (wisp's KVM VMM when the
// accelerator probe says KVM can run the guest, QEMU's TCG otherwise, with a
// one-line reason), opens the VM's devices and builds the backend. The
// Machine owns all of it: the devices are released once, when the VM has
// ended or is closed, whichever backend ran it.
//
// It lives apart from package vmm because the backends import vmm for its
// Config; assembling them there would be an import cycle.
package machine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/internal/stale"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/plane"
)

// Options tune a Machine; the zero value works.
type Options struct {
	// ID names the VM in logs and events. Empty: a random one.
	ID string
	// Console is the guest's serial console. Zero: output discarded, no
	// input.
	Console vmm.Console
	// Logger receives the VMM's diagnostics, each with the VM's id. Nil:
	// discarded.
	Logger *slog.Logger
	// OnEvent is called for every state change, in order, from the
	// goroutine that made it. It must not block or call back into the
	// Machine.
	OnEvent func(Event)
	// Prober decides whether KVM can run guests. Nil: the process-wide
	// one, so the probe guest runs at most once per process and device.
	Prober *Prober
	// Start is when the VMM began, for boot-marker times. Zero: New's
	// start.
	Start time.Time
	// OnBootMarker is called for each byte the guest writes to the boot
	// marker port 0x440.
	OnBootMarker func(code byte, since time.Duration)
}

// Event is one state change of a Machine.
type Event struct {
	ID       string
	From, To vmm.State
	Reason   string
	Time     time.Time
}

// Info is a snapshot of what a Machine is and does.
type Info struct {
	ID    string
	State vmm.State
	// Accel is the backend that runs the guest: kvm or tcg.
	Accel vmm.Accel
	// AccelReason says why TCG was chosen when KVM was not asked against;
	// empty when KVM runs the guest or TCG was asked for.
	AccelReason string
	StartedAt   time.Time // zero until running
	Config      vmm.Config
	// Exit is how the guest ended, once it has.
	Exit *vmm.ExitStatus
	// NetRxBytes and NetTxBytes are what the VM's NICs received and sent.
	NetRxBytes, NetTxBytes uint64
}

// Errors; test with errors.Is.
var (
	// ErrClosed: the Machine was closed.
	ErrClosed = errors.New("machine closed")
)

// Machine is one VM: its devices, its backend and its lifecycle.
type Machine struct {
	id      string
	cfg     vmm.Config
	log     *slog.Logger
	onEvent func(Event)

	devs        *plane.Plane
	backend     vmm.Backend
	accel       vmm.Accel
	accelReason string
	ownStateDir string // removed by Close when New made it

	// ops serialises the operations that talk to the backend (Start,
	// Pause, Resume, Stop) so that their state checks and backend calls
	// are one step; mu guards the fields below and is never held across a
	// backend call.
	ops sync.Mutex

	mu        sync.Mutex
	state     vmm.State
	startedAt time.Time
	exit      *vmm.ExitStatus
	waitErr   error
	closed    bool

	// life is the VM's lifetime: cancelled by Close (and by a caller's
	// context only while Start runs).
	life       context.Context
	endLife    context.CancelCauseFunc
	done       chan struct{} // closed once the VM has ended and devices are released
	releaseErr error
	release    sync.Once
}

// New builds a VM for cfg: validated, backend chosen, devices open, nothing
// running yet. ctx bounds only this setup (the probe, opening devices).
func New(ctx context.Context, cfg vmm.Config, opts Options) (_ *Machine, err error) {
	if opts.ID == "" {
		opts.ID = newID()
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("vm", opts.ID)
	cfg = cfg.WithDefaults()
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	m := newMachine(cfg, opts, log)
	defer func() {
		if err != nil {
			m.endLife(err)
			_ = m.releaseAll()
		}
	}()
	if removed, err := stale.SweepTemp(); len(removed) > 0 || err != nil { // what killed VMMs left
		log.Info("swept what killed VMMs left behind", "removed", removed, "err", err)
	}
	if m.cfg.StateDir == "" {
		dir, err := stale.MkdirTemp("", stale.PrefixVM+opts.ID+"-")
		if err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		m.cfg.StateDir, m.ownStateDir = dir, dir
	}
	m.accel, m.accelReason = chooseAccel(ctx, m.cfg, opts.Prober)
	if m.accelReason != "" {
		log.Info("using QEMU TCG: "+m.accelReason, "accel", m.accel)
	}
	devs, err := plane.Open(ctx, m.cfg, func(dev string, err error) { log.Warn(dev+": "+err.Error(), "device", dev) })
	if err != nil {
		return nil, err
	}
	m.devs = devs
	m.backend, err = newBackend(m.cfg, m.accel, opts, devs, log)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// newMachine is a Machine without devices or backend yet.
func newMachine(cfg vmm.Config, opts Options, log *slog.Logger) *Machine {
	m := &Machine{id: opts.ID, cfg: cfg, log: log, onEvent: opts.OnEvent, state: vmm.StateCreated, done: make(chan struct{})}
	m.life, m.endLife = context.WithCancelCause(context.Background())
	return m
}

// checkConfig validates cfg against the host and its boot files.
func checkConfig(cfg vmm.Config) error {
	hostMem, err := vmm.HostMemory()
	if err != nil {
		return err
	}
	if err := cfg.Validate(hostMem); err != nil {
		return err
	}
	return cfg.CheckBoot()
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b[:])
}

// ID names the VM.
func (m *Machine) ID() string { return m.id }

// Config is the validated config the VM runs with.
func (m *Machine) Config() vmm.Config { return m.cfg }

// State is the current lifecycle state.
func (m *Machine) State() vmm.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Info is a snapshot of the Machine.
func (m *Machine) Info() Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := Info{ID: m.id, State: m.state, Accel: m.accel, AccelReason: m.accelReason, StartedAt: m.startedAt, Config: m.cfg, Exit: m.exit}
	if m.devs != nil {
		in.NetRxBytes, in.NetTxBytes = m.devs.NetBytes()
	}
	return in
}

// Done is closed once the VM has ended and its devices are released.
func (m *Machine) Done() <-chan struct{} { return m.done }

// move changes the state if the table allows it and reports the event.
func (m *Machine) move(to vmm.State, reason string) error {
	m.mu.Lock()
	from := m.state
	if !vmm.CanTransition(from, to) {
		m.mu.Unlock()
		return &vmm.TransitionError{From: from, To: to}
	}
	m.state = to
	if to == vmm.StateRunning && m.startedAt.IsZero() {
		m.startedAt = time.Now()
	}
	m.mu.Unlock()
	m.emit(from, to, reason)
	return nil
}

func (m *Machine) emit(from, to vmm.State, reason string) {
	m.log.Debug("state", "from", from, "to", to, "reason", reason)
	if m.onEvent != nil {
		m.onEvent(Event{ID: m.id, From: from, To: to, Reason: reason, Time: time.Now()})
	}
}

// Start boots the guest and returns once it runs. ctx bounds the start
// only: cancelling it later does not stop the VM (Stop and Close do).
func (m *Machine) Start(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if m.isClosed() {
		return ErrClosed
	}
	if err := m.move(vmm.StateStarting, "start"); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// The backend's context is the VM's lifetime; the caller's context
	// may cut the start short, and only the start.
	abort := context.AfterFunc(ctx, func() { m.endLife(fmt.Errorf("start cancelled: %w", context.Cause(ctx))) })
	err := m.backend.Start(m.life)
	cancelled := !abort()
	if err == nil && cancelled {
		err = fmt.Errorf("start cancelled: %w", context.Cause(ctx))
		_ = m.backend.Stop(context.Background(), vmm.StopForce)
	}
	if err != nil {
		m.finish(nil, err, "start failed")
		return fmt.Errorf("start vm %s: %w", m.id, err)
	}
	if err := m.move(vmm.StateRunning, "guest started"); err != nil {
		return err
	}
	go m.watch()
	return nil
}

// watch waits for the backend to end and records how.
func (m *Machine) watch() {
	st, err := m.backend.Wait()
	m.finish(&st, err, "")
}

// finish records the end of the VM (st nil: it never ran, for reason),
// releases the devices and closes done. It runs once.
func (m *Machine) finish(st *vmm.ExitStatus, err error, reason string) {
	m.mu.Lock()
	from := m.state
	to := vmm.StateStopped
	if err != nil {
		to = vmm.StateFailed
		reason += ": " + err.Error()
	}
	if st != nil {
		copied := *st
		m.exit = &copied
		reason = st.Reason.String()
		if st.Detail != "" {
			reason += ": " + st.Detail
		}
		if st.Reason == vmm.ExitBackendFailure {
			to = vmm.StateFailed
		}
	}
	m.state = to
	m.waitErr = err
	m.mu.Unlock()
	m.endLife(errors.New("vm ended"))
	m.releaseErr = m.releaseAll()
	if m.releaseErr != nil {
		m.log.Warn("releasing devices: " + m.releaseErr.Error())
	}
	m.emit(from, to, reason)
	close(m.done)
}

// releaseAll closes the devices and removes the state directory New made.
func (m *Machine) releaseAll() error {
	var err error
	m.release.Do(func() {
		if m.devs != nil {
			err = m.devs.Close()
		}
		if m.ownStateDir != "" {
			err = errors.Join(err, os.RemoveAll(m.ownStateDir))
		}
	})
	return err
}

// Wait blocks until the VM has ended and returns how. A VM that never
// started returns ErrClosed once closed.
func (m *Machine) Wait() (vmm.ExitStatus, error) {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exit == nil {
		if m.waitErr != nil {
			return vmm.ExitStatus{}, m.waitErr
		}
		return vmm.ExitStatus{}, ErrClosed
	}
	return *m.exit, m.waitErr
}

// Pause freezes the guest's vCPUs. The state moves only once the backend
// has paused, so a VM that ends meanwhile stays ended.
func (m *Machine) Pause() error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if err := m.check(vmm.StatePaused); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if err := m.backend.Pause(); err != nil {
		return fmt.Errorf("pause vm %s: %w", m.id, err)
	}
	if err := m.move(vmm.StatePaused, "paused by the host"); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// Resume lets a paused guest run again.
func (m *Machine) Resume() error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if s := m.State(); s != vmm.StatePaused {
		return fmt.Errorf("resume: %w", &vmm.TransitionError{From: s, To: vmm.StateRunning})
	}
	if err := m.backend.Resume(); err != nil {
		return fmt.Errorf("resume vm %s: %w", m.id, err)
	}
	if err := m.move(vmm.StateRunning, "resumed by the host"); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// check reports whether the table allows moving to `to` now.
func (m *Machine) check(to vmm.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !vmm.CanTransition(m.state, to) {
		return &vmm.TransitionError{From: m.state, To: to}
	}
	return nil
}

// Stop ends the guest and returns once it has ended. With a timeout > 0
// it presses the ACPI power button and waits that long for the guest to
// power off before forcing it; with 0 it forces at once. A paused guest
// is resumed first so that it can hear the button. ctx bounds the whole
// wait: when it ends, the guest is forced off.
func (m *Machine) Stop(ctx context.Context, timeout time.Duration) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if err := m.check(vmm.StateStopping); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if timeout > 0 && m.State() == vmm.StatePaused {
		if err := m.backend.Resume(); err != nil {
			m.log.Warn("resume before a graceful stop: "+err.Error(), "op", "stop")
			timeout = 0
		} else {
			_ = m.move(vmm.StateRunning, "resumed to hear the power button")
		}
	}
	how, reason := vmm.StopForce, "forced stop"
	if timeout > 0 {
		how, reason = vmm.StopGraceful, fmt.Sprintf("graceful stop (power button, %v before forcing)", timeout)
	}
	if err := m.move(vmm.StateStopping, reason); err != nil {
		// The guest ended between the check and now: it is stopped.
		<-m.done
		return nil
	}
	stopCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := m.backend.Stop(stopCtx, how); err != nil {
		select {
		case <-m.done: // it ended anyway
		default:
			return fmt.Errorf("stop vm %s: %w", m.id, err)
		}
	}
	<-m.done
	return nil
}

func (m *Machine) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// Close forces a running guest off, releases its devices and removes what
// the VM kept on disk. It is safe to call more than once.
func (m *Machine) Close() error {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	state := m.state
	m.mu.Unlock()
	if already {
		<-m.done
		return nil
	}
	switch state {
	case vmm.StateCreated:
		m.endLife(ErrClosed)
		m.finish(nil, nil, "closed before it started")
		return m.releaseErr
	case vmm.StateStopped, vmm.StateFailed:
	default:
		m.endLife(ErrClosed) // the backends stop a VM whose context ends
		_ = m.backend.Stop(context.Background(), vmm.StopForce)
	}
	<-m.done
	return m.releaseErr
}
