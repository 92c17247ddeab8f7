package vmm

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptedBackend ends the way it is told to; it lets the lifecycle logic
// be tested without a hypervisor.
type scriptedBackend struct {
	startErr error
	exit     chan ExitStatus
	stopped  bool
	paused   bool
}

func newScripted() *scriptedBackend { return &scriptedBackend{exit: make(chan ExitStatus, 1)} }

func (b *scriptedBackend) Start(context.Context) error { return b.startErr }
func (b *scriptedBackend) Pause() error                { b.paused = true; return nil }
func (b *scriptedBackend) Resume() error               { b.paused = false; return nil }
func (b *scriptedBackend) Stop(context.Context, StopMode) error {
	b.stopped = true
	b.exit <- ExitStatus{Reason: ExitStopped}
	return nil
}
func (b *scriptedBackend) Wait() (ExitStatus, error) { return <-b.exit, nil }

func TestMachineRunToPoweroff(t *testing.T) {
	b := newScripted()
	m := NewMachine(Config{}, b)
	b.exit <- ExitStatus{Reason: ExitPoweroff}
	st, err := m.Run(context.Background())
	require.NoError(t, err)
	assert.Equal(t, ExitPoweroff, st.Reason)
	assert.Equal(t, StateStopped, m.State())
	_, err = m.Run(context.Background())
	assert.ErrorIs(t, err, ErrBadTransition, "a stopped machine does not start again")
}

func TestMachineStartFailure(t *testing.T) {
	b := newScripted()
	b.startErr = errors.New("no memory")
	m := NewMachine(Config{}, b)
	_, err := m.Run(context.Background())
	require.ErrorContains(t, err, "no memory")
	assert.Equal(t, StateFailed, m.State())
}

func TestMachineCancelStops(t *testing.T) {
	b := newScripted()
	m := NewMachine(Config{}, b)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("SIGTERM"))
	st, err := m.Run(ctx)
	require.NoError(t, err)
	assert.True(t, b.stopped)
	assert.Equal(t, ExitStopped, st.Reason)
	assert.Equal(t, "SIGTERM", st.Detail)
}

func TestPauseResumeNeedRunning(t *testing.T) {
	b := newScripted()
	m := NewMachine(Config{}, b)
	assert.ErrorIs(t, m.Pause(), ErrBadTransition)
	assert.ErrorIs(t, m.Resume(), ErrBadTransition)
}

func TestTransitions(t *testing.T) {
	assert.True(t, CanTransition(StateRunning, StatePaused))
	assert.True(t, CanTransition(StatePaused, StateRunning))
	assert.False(t, CanTransition(StateStopped, StateRunning))
	assert.False(t, CanTransition(StateCreated, StatePaused))
	assert.Equal(t, "paused", StatePaused.String())
	assert.Equal(t, "state(42)", State(42).String())
}

func TestExitCode(t *testing.T) {
	tests := map[ExitReason]int{
		ExitPoweroff:         0,
		ExitReset:            CodeReset,
		ExitPanic:            CodePanic,
		ExitEmulationFailure: CodeEmulationFailure,
		ExitBackendFailure:   CodeBackendFailure,
		ExitStopped:          CodeError,
	}
	for reason, code := range tests {
		assert.Equal(t, code, ExitCode(ExitStatus{Reason: reason}), reason.String())
	}
}
