package vmm

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTransitions(t *testing.T) {
	assert.True(t, CanTransition(StateRunning, StatePaused))
	assert.True(t, CanTransition(StatePaused, StateRunning))
	assert.False(t, CanTransition(StateStopped, StateRunning))
	assert.False(t, CanTransition(StateCreated, StatePaused))
	assert.Equal(t, "paused", StatePaused.String())
	assert.Equal(t, "state(42)", State(42).String())
	err := error(&TransitionError{From: StateStopped, To: StatePaused})
	assert.ErrorIs(t, err, ErrBadTransition)
	assert.Equal(t, "vm is stopped, cannot go to paused", err.Error())
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
