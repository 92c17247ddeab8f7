package vmm

import (
	"errors"
	"fmt"
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

// TransitionError is a refused state change; it matches ErrBadTransition.
type TransitionError struct{ From, To State }

func (e *TransitionError) Error() string {
	return fmt.Sprintf("vm is %s, cannot go to %s", e.From, e.To)
}

// Is makes errors.Is(err, ErrBadTransition) hold.
func (e *TransitionError) Is(target error) bool { return target == ErrBadTransition }

// CanTransition reports whether from → to is legal.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
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
