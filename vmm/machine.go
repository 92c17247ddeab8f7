package vmm

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// State is where a Machine is in its life. Values are stable.
type State int

// Machine states.
const (
	StateCreated  State = 0
	StateStarting State = 1
	StateRunning  State = 2
	StatePaused   State = 3
	StateStopping State = 4
	StateStopped  State = 5
	StateFailed   State = 6
)

var stateNames = [...]string{"created", "starting", "running", "paused", "stopping", "stopped", "failed"}

func (s State) String() string {
	if int(s) >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// transitions lists every legal state change; anything else is a bug or a
// request that makes no sense now (pause a stopped VM) and is refused.
var transitions = map[State][]State{
	StateCreated:  {StateStarting},
	StateStarting: {StateRunning, StateFailed, StateStopped},
	StateRunning:  {StatePaused, StateStopping, StateStopped, StateFailed},
	StatePaused:   {StateRunning, StateStopping, StateStopped, StateFailed},
	StateStopping: {StateStopped, StateFailed},
}

// ErrBadTransition is returned when an operation does not fit the state.
var ErrBadTransition = errors.New("operation not allowed in this state")

// CanTransition reports whether from → to is legal.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// BackendFactory builds a backend for a validated Config.
type BackendFactory func(cfg Config, console Console) (Backend, error)

// Machine is one VM's lifecycle on top of a Backend.
type Machine struct {
	cfg     Config
	backend Backend

	mu    sync.Mutex
	state State
}

// NewMachine wraps a backend built for cfg.
func NewMachine(cfg Config, backend Backend) *Machine {
	return &Machine{cfg: cfg, backend: backend, state: StateCreated}
}

// State is the current lifecycle state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

func (m *Machine) move(to State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !CanTransition(m.state, to) {
		return fmt.Errorf("%s → %s: %w", m.state, to, ErrBadTransition)
	}
	m.state = to
	return nil
}

// Run starts the VM and waits until it ends or ctx is cancelled; on
// cancellation it stops the guest by force and reports ExitStopped.
func (m *Machine) Run(ctx context.Context) (ExitStatus, error) {
	if err := m.move(StateStarting); err != nil {
		return ExitStatus{}, err
	}
	if err := m.backend.Start(ctx); err != nil {
		_ = m.move(StateFailed)
		return ExitStatus{}, err
	}
	if err := m.move(StateRunning); err != nil {
		return ExitStatus{}, err
	}
	type result struct {
		st  ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := m.backend.Wait()
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		m.finish(r.err)
		return r.st, r.err
	case <-ctx.Done():
		_ = m.move(StateStopping)
		stopErr := m.backend.Stop(context.WithoutCancel(ctx), StopForce)
		r := <-done
		m.finish(errors.Join(r.err, stopErr))
		st := r.st
		st.Reason = ExitStopped
		if st.Detail == "" {
			st.Detail = context.Cause(ctx).Error()
		}
		return st, errors.Join(r.err, stopErr)
	}
}

func (m *Machine) finish(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.state = StateFailed
		return
	}
	m.state = StateStopped
}

// Pause freezes the guest's vCPUs.
func (m *Machine) Pause() error {
	if err := m.move(StatePaused); err != nil {
		return err
	}
	if err := m.backend.Pause(); err != nil {
		m.mu.Lock()
		m.state = StateRunning
		m.mu.Unlock()
		return err
	}
	return nil
}

// Resume lets a paused guest run again.
func (m *Machine) Resume() error {
	if m.State() != StatePaused {
		return fmt.Errorf("resume from %s: %w", m.State(), ErrBadTransition)
	}
	if err := m.backend.Resume(); err != nil {
		return err
	}
	return m.move(StateRunning)
}

// ExitCode maps how a guest ended to wisp's process exit code.
func ExitCode(st ExitStatus) int {
	switch st.Reason {
	case ExitPoweroff:
		return CodePoweroff
	case ExitReset:
		return CodeReset
	case ExitPanic:
		return CodePanic
	case ExitEmulationFailure:
		return CodeEmulationFailure
	case ExitBackendFailure:
		return CodeBackendFailure
	}
	return CodeError
}
