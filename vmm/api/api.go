// Package api is a VM's control socket: the small HTTP/JSON API a VMM
// process (`wisp run --api-sock PATH`) serves on a unix socket, and the
// client the host agent and users talk to it with.
//
// Routes, all under /v1:
//
//	GET  /v1/status                 the VM's Status
//	POST /v1/pause                  pause the guest; 200 with the Status
//	POST /v1/resume                 resume it; 200 with the Status
//	POST /v1/stop                   {"force":bool,"timeout_seconds":n}; 200 with the Status once stopped
//	GET  /v1/console[?write=1]      upgrade to the raw console stream (Upgrade: wisp-console)
//
// Failures are JSON {"code":"...","message":"..."} with the codes listed
// under Code; the client turns them back into *Error.
package api

import (
	"context"
	"encoding/json"
	"time"
)

// Controller is the VM the server controls.
type Controller interface {
	Status() Status
	Pause() error
	Resume() error
	// Stop ends the VM and returns once it has ended. An error that
	// matches vmm.ErrBadTransition means the VM's state does not allow it.
	Stop(ctx context.Context, opts StopOptions) error
}

// StopOptions say how Stop ends the VM.
type StopOptions struct {
	// Force ends the guest at once. Otherwise Stop presses the ACPI power
	// button, waits up to Timeout for the guest to power off, then forces.
	Force bool
	// Timeout is how long a graceful stop waits; zero means
	// DefaultStopTimeout.
	Timeout time.Duration
}

// Stop timeouts.
const (
	DefaultStopTimeout = 30 * time.Second
	MaxStopTimeout     = time.Hour
)

// MaxBodyBytes bounds a request body; a larger one is refused with 413.
const MaxBodyBytes = 64 << 10

// Status is what a VM is and does, as GET /v1/status reports it.
type Status struct {
	ID   string `json:"id"`
	Name string `json:"name"` // may be empty
	// State is the vmm.State name: created, starting, running, paused,
	// stopping, stopped or failed.
	State string `json:"state"`
	// Backend runs the guest: kvm or tcg.
	Backend string `json:"backend"`
	// BackendReason says why TCG was chosen; empty otherwise.
	BackendReason string    `json:"backend_reason"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// Config is the VM's configuration as the VMM chooses to show it.
	Config json.RawMessage `json:"config"`
	// Exit is how the guest ended, once it has.
	Exit *Exit `json:"exit,omitempty"`
	// NetRxBytes and NetTxBytes are what the VM's NICs received and sent
	// since the VMM started.
	NetRxBytes uint64 `json:"net_rx_bytes"`
	NetTxBytes uint64 `json:"net_tx_bytes"`
}

// Exit is how a guest ended.
type Exit struct {
	Reason string `json:"reason"` // a vmm.ExitReason name: poweroff, reset, panic, ...
	Detail string `json:"detail"`
	Code   int    `json:"code"` // the VMM process's exit code for it
}

// Console upgrade protocol: GET /v1/console with these headers is answered
// with 101 Switching Protocols, after which the connection carries the raw
// console bytes both ways.
const (
	ConsoleProtocol = "wisp-console"
	consolePath     = "/v1/console"
)

// stopRequest is POST /v1/stop's body.
type stopRequest struct {
	Force          bool    `json:"force"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}
