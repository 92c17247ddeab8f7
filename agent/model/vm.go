package model

import (
	"errors"
	"time"
)

// Scheduling classes (VM.Class). Only recorded for now; preemption will
// read them.
const (
	ClassReserved   = "reserved" // the default
	ClassBestEffort = "best-effort"
)

// VM is the agent's record of one VM.
type VM struct {
	Name      string            `json:"name"`
	Spec      Spec              `json:"spec"`
	Desired   Desired           `json:"desired"`
	Observed  Observed          `json:"observed"`
	Reason    string            `json:"reason,omitempty"` // why Observed is what it is (last exit, crash reason)
	Autostart bool              `json:"autostart"`
	Priority  int               `json:"priority"` // later: preemption
	Class     string            `json:"class"`    // ClassReserved (default) or ClassBestEffort
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	Runtime   *Runtime          `json:"runtime,omitempty"` // set while a VMM process exists
	// Stop is how the last operation asked a stop to be done (graceful
	// with a timeout, or forced).
	Stop *StopRequest `json:"stop,omitempty"`
	// RestartPending: a restart asked for; the agent stops the VM, clears
	// it, and starts the VM again.
	RestartPending bool `json:"restart_pending,omitempty"`
	// Held: wanted running but held back for capacity, preempted by a VM
	// that comes first or waiting for room (a best-effort VM). The agent
	// stops a held VM that runs and starts it again, in priority order,
	// once it fits.
	Held bool `json:"held,omitempty"`
	// LeaseFrom and LeaseUntil bound when the VM may run: the agent
	// starts it at LeaseFrom, stops it at LeaseUntil, and refuses a start
	// outside the window.
	LeaseFrom  *time.Time `json:"lease_from,omitempty"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
	// LeaseStarted: the lease's start was applied (once, so a user's stop
	// within the window holds).
	LeaseStarted bool `json:"lease_started,omitempty"`
}

// InLease reports whether t falls in v's lease window (always, without
// one).
func (v VM) InLease(t time.Time) bool {
	if v.LeaseFrom != nil && t.Before(*v.LeaseFrom) {
		return false
	}
	return v.LeaseUntil == nil || t.Before(*v.LeaseUntil)
}

// StopRequest is how to stop a VM.
type StopRequest struct {
	Force          bool    `json:"force,omitempty"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}

// Apply is the package's Apply for v's observed state, with v's name in a
// refusal ("cannot pause: vm web1 is stopped"). It changes nothing.
func (v VM) Apply(op Op) (Desired, error) {
	d, err := Apply(op, v.Observed)
	var te *TransitionError
	if errors.As(err, &te) {
		te.VM = v.Name
	}
	return d, err
}

// SetObserved records that v is now observed in state to, for reason. It
// returns the "observed" event for the ledger, or nothing when the state
// did not change (the reason is updated either way).
func (v *VM) SetObserved(to Observed, reason string) []Event {
	from := v.Observed
	v.Observed, v.Reason = to, reason
	if from == to {
		return nil
	}
	return []Event{v.event(EventObserved, string(from), string(to), reason)}
}

// SetDesired records that v is now wanted in state to, for reason (who
// asked: a user operation, a schedule). It returns the "desired" event, or
// nothing when the desired state did not change.
func (v *VM) SetDesired(to Desired, reason string) []Event {
	from := v.Desired
	v.Desired = to
	if from == to {
		return nil
	}
	return []Event{v.event(EventDesired, string(from), string(to), reason)}
}

// event is an event about v with v's current size; the store assigns Seq
// and the time.
func (v *VM) event(kind, from, to, reason string) Event {
	return Event{
		VM: v.Name, Kind: kind, From: from, To: to, Reason: reason,
		CPUs: v.Spec.CPUs, MemoryBytes: v.Spec.MemoryBytes,
	}
}

// Runtime is the VMM process of a VM, recorded so an agent restarted later
// can find it again.
type Runtime struct {
	PID int `json:"pid"`
	// StartTicks is field 22 of /proc/PID/stat (start time in clock
	// ticks since boot): with PID it tells the VMM apart from a later
	// process that reused the pid.
	StartTicks uint64    `json:"start_ticks"`
	Socket     string    `json:"socket"`
	Dir        string    `json:"dir"` // the VM's runtime directory
	Backend    string    `json:"backend,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	// NetMetered is the VMM's NIC byte count (received + sent) as of the
	// last traffic event, at NetMeteredAt.
	NetMetered   uint64    `json:"net_metered,omitempty"`
	NetMeteredAt time.Time `json:"net_metered_at,omitzero"`
}

// Event kinds.
const (
	EventCreated   = "created"
	EventDeleted   = "deleted"
	EventDesired   = "desired"
	EventObserved  = "observed"
	EventResized   = "resized"
	EventSchedule  = "schedule"  // later
	EventPreempted = "preempted" // later
	// EventTraffic: the VM moved TrafficBytes over its NICs (received
	// plus sent) since the last such event; cost prices it.
	EventTraffic = "traffic"
)

// Event is one entry of the ledger. Cost is computed from events, so every
// change of Observed and of size is one, and each carries the VM's size at
// that moment.
type Event struct {
	Seq         uint64    `json:"seq"` // assigned by the store, increasing across all VMs
	Time        time.Time `json:"time"`
	VM          string    `json:"vm"`
	Kind        string    `json:"kind"`
	From        string    `json:"from,omitempty"`
	To          string    `json:"to,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	CPUs        int       `json:"cpus,omitempty"` // the VM's size when it happened
	MemoryBytes uint64    `json:"memory_bytes,omitempty"`
	// TrafficBytes is what a "traffic" event adds to the VM's traffic.
	TrafficBytes uint64 `json:"traffic_bytes,omitempty"`
}
