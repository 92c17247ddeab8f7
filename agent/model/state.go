package model

import "fmt"

// Desired is what the administrator (or a schedule) wants.
type Desired string

// Desired states.
const (
	DesiredRunning Desired = "running"
	DesiredPaused  Desired = "paused"
	DesiredStopped Desired = "stopped"
)

// Observed is what the agent last saw.
type Observed string

// Observed states.
const (
	// ObservedStopped: no VMM process (never started, or ended cleanly).
	ObservedStopped Observed = "stopped"
	// ObservedStarting: the VMM process is spawned, its socket not
	// answering yet.
	ObservedStarting Observed = "starting"
	ObservedRunning  Observed = "running"
	ObservedPaused   Observed = "paused"
	ObservedStopping Observed = "stopping"
	// ObservedCrashed: the VMM process died without a clean end, or the
	// guest failed.
	ObservedCrashed Observed = "crashed"
	// ObservedSuspended: state saved to disk. Reserved for suspend; no
	// operation is allowed from it yet.
	ObservedSuspended Observed = "suspended"
)

// ObservedStates lists every Observed state, for tables and validation.
func ObservedStates() []Observed {
	return []Observed{
		ObservedStopped, ObservedStarting, ObservedRunning, ObservedPaused,
		ObservedStopping, ObservedCrashed, ObservedSuspended,
	}
}

// Op is a user operation.
type Op string

// Operations.
const (
	OpStart   Op = "start"
	OpStop    Op = "stop"
	OpPause   Op = "pause"
	OpResume  Op = "resume"
	OpRestart Op = "restart" // the daemon stops, then starts
	OpDelete  Op = "delete"  // a forced delete of a live VM is the daemon's business
	OpResize  Op = "resize"  // not supported yet
	OpSuspend Op = "suspend" // not supported yet
)

// Ops lists every Op, for tables and validation.
func Ops() []Op {
	return []Op{OpStart, OpStop, OpPause, OpResume, OpRestart, OpDelete, OpResize, OpSuspend}
}

// transition is one row of the operation table.
type transition struct {
	from []Observed
	to   Desired
}

// transitions is read only: the one table of which operation is allowed in which
// observed state and what desired state it sets. Stop from stopping is
// refused rather than treated as done, so a client that asked twice learns
// the first stop is still under way.
var transitions = map[Op]transition{
	OpStart:   {from: []Observed{ObservedStopped, ObservedCrashed}, to: DesiredRunning},
	OpStop:    {from: []Observed{ObservedStarting, ObservedRunning, ObservedPaused}, to: DesiredStopped},
	OpPause:   {from: []Observed{ObservedRunning}, to: DesiredPaused},
	OpResume:  {from: []Observed{ObservedPaused}, to: DesiredRunning},
	OpRestart: {from: []Observed{ObservedRunning, ObservedPaused}, to: DesiredRunning},
	OpDelete:  {from: []Observed{ObservedStopped, ObservedCrashed}, to: DesiredStopped},
}

// Apply says what desired state op sets when the VM is observed in
// observed. A refusal is a *TransitionError (matching ErrConflict); an
// operation that does not exist or is not supported yet is a *FieldError
// for "op" (matching ErrInvalid). VM.Apply does the same and names the VM
// in the error.
func Apply(op Op, observed Observed) (Desired, error) {
	t, ok := transitions[op]
	if !ok {
		if op == OpResize || op == OpSuspend {
			return "", &FieldError{Field: "op", Msg: fmt.Sprintf("%s is not supported yet", op)}
		}
		return "", &FieldError{Field: "op", Msg: fmt.Sprintf("unknown operation %q", op)}
	}
	for _, s := range t.from {
		if s == observed {
			return t.to, nil
		}
	}
	return "", &TransitionError{Op: op, State: observed}
}

// TransitionError is an operation refused in the VM's current state, e.g.
// "cannot pause: vm web1 is stopped". It matches ErrConflict.
type TransitionError struct {
	Op    Op
	VM    string // empty when the caller did not say
	State Observed
}

func (e *TransitionError) Error() string {
	if e.VM == "" {
		return fmt.Sprintf("cannot %s: vm is %s", e.Op, e.State)
	}
	return fmt.Sprintf("cannot %s: vm %s is %s", e.Op, e.VM, e.State)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *TransitionError) Is(target error) bool { return target == ErrConflict }
