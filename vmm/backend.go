package vmm

import (
	"context"
	"io"
)

// ExitReason is why a guest stopped. Values are stable: they are printed and
// mapped to process exit codes.
type ExitReason int

// Exit reasons.
const (
	ExitPoweroff         ExitReason = 0 // ACPI S5 or equivalent
	ExitReset            ExitReason = 1 // reset request or triple fault
	ExitPanic            ExitReason = 2 // pvpanic
	ExitEmulationFailure ExitReason = 3 // KVM internal error / emulation failure
	ExitStopped          ExitReason = 4 // stopped from the host (Stop, signal)
	ExitBackendFailure   ExitReason = 5 // the backend itself failed (QEMU died, ioctl error)
)

// Process exit codes for `wisp run`; documented in README.md. Codes that a
// guest command (`wisp run -- CMD`) could return are avoided where possible.
const (
	CodePoweroff         = 0
	CodeError            = 1 // wisp could not start or run the VM
	CodeUsage            = 2 // bad flags or input
	CodeReset            = 81
	CodePanic            = 82
	CodeEmulationFailure = 83
	CodeBackendFailure   = 84
	CodeSignalBase       = 128 // + signal number when stopped by a signal
)

func (r ExitReason) String() string {
	switch r {
	case ExitPoweroff:
		return "poweroff"
	case ExitReset:
		return "reset"
	case ExitPanic:
		return "panic"
	case ExitEmulationFailure:
		return "emulation failure"
	case ExitStopped:
		return "stopped"
	case ExitBackendFailure:
		return "backend failure"
	}
	return "unknown"
}

// ExitStatus is how a guest ended.
type ExitStatus struct {
	Reason ExitReason
	// Detail is one line for the user, e.g. the RIP and instruction bytes
	// of an emulation failure.
	Detail string
}

// StopMode says how hard Stop pushes.
type StopMode int

// Stop modes.
const (
	StopGraceful StopMode = iota // ACPI power button, then wait for the context
	StopForce                    // end the guest now
)

// Console is the guest's serial console as the backend sees it: bytes the
// user types come from In, bytes the guest prints go to Out.
type Console struct {
	In  io.Reader // nil: no input
	Out io.Writer // never nil; io.Discard for none
}

// Backend runs one VM. Start returns once the guest runs; Wait blocks until
// it ends and may be called from several goroutines.
type Backend interface {
	Start(ctx context.Context) error
	Pause() error
	Resume() error
	Stop(ctx context.Context, how StopMode) error
	Wait() (ExitStatus, error)
}
