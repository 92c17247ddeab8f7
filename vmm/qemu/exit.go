package qemu

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/wisp-vmm/wisp/vmm"
)

// SHUTDOWN reasons QEMU reports (qapi ShutdownCause) that wisp tells apart.
const (
	reasonGuestShutdown = "guest-shutdown" // ACPI S5, poweroff
	reasonGuestReset    = "guest-reset"    // reset with -no-reboot
	reasonGuestPanic    = "guest-panic"    // pvpanic with -action panic=shutdown or exit-failure
	reasonHostQMPQuit   = "host-qmp-quit"
	reasonHostSignal    = "host-signal" // SIGTERM/SIGINT/SIGHUP to QEMU
)

// stopKind records that the host asked the VM to end, and how.
type stopKind int

const (
	stopNone     stopKind = iota
	stopGraceful          // Stop(StopGraceful): ACPI power button
	stopForced            // Stop(StopForce), or the escalation of a graceful stop
	stopContext           // Start's context ended
)

// exitFacts is everything the supervisor learned about how QEMU ended;
// decideExit turns it into the one ExitStatus the caller sees.
type exitFacts struct {
	stop       stopKind
	shutdown   string // reason of the last SHUTDOWN event; "" if none came
	panicked   bool   // GUEST_PANICKED came
	panicInfo  string // its "info" member, if any
	procErr    error  // from the process's Wait: nil for exit status 0
	stderrLast string // QEMU's last line on stderr/stdout
	qmpLost    error  // set when QMP broke while QEMU ran on (wisp then killed it)
}

// decideExit maps what happened to an ExitStatus. Order matters: a guest
// panic wins over everything (it is what the user must hear about), then a
// host stop request, then what the guest asked for; a QEMU that ended
// without any of these failed.
func decideExit(f exitFacts) vmm.ExitStatus {
	switch {
	case f.panicked || f.shutdown == reasonGuestPanic:
		d := "guest kernel panicked (pvpanic)"
		if f.panicInfo != "" {
			d += ": " + f.panicInfo
		}
		return vmm.ExitStatus{Reason: vmm.ExitPanic, Detail: d}
	case f.stop == stopGraceful:
		d := "stopped by the host: ACPI power button"
		if f.shutdown == reasonGuestShutdown {
			d += ", guest powered off"
		}
		return vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: d}
	case f.stop == stopForced:
		return vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: "stopped by the host: forced off"}
	case f.stop == stopContext:
		return vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: "stopped by the host: context ended"}
	case f.shutdown == reasonGuestShutdown:
		return vmm.ExitStatus{Reason: vmm.ExitPoweroff, Detail: "guest powered off"}
	case f.shutdown == reasonGuestReset:
		return vmm.ExitStatus{Reason: vmm.ExitReset, Detail: "guest reset (reboot policy: exit)"}
	case f.shutdown == reasonHostSignal:
		return vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: "qemu-system-x86_64 got a termination signal from outside wisp"}
	case f.shutdown == reasonHostQMPQuit:
		return vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: "qemu-system-x86_64 was told to quit over QMP"}
	}
	if f.qmpLost != nil {
		return vmm.ExitStatus{Reason: vmm.ExitBackendFailure,
			Detail: "lost the QMP connection to qemu-system-x86_64 (" + f.qmpLost.Error() + "); killed it"}
	}
	d := "qemu-system-x86_64 ended unexpectedly"
	if f.shutdown != "" {
		d += " (shutdown reason " + f.shutdown + ")"
	}
	if f.procErr != nil {
		d += ": " + f.procErr.Error()
	}
	if f.stderrLast != "" {
		d += ": " + f.stderrLast
	}
	return vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: d}
}

// shutdownEvent is the data of SHUTDOWN and RESET.
type shutdownEvent struct {
	Guest  bool   `json:"guest"`
	Reason string `json:"reason"`
}

// panickedEvent is the data of GUEST_PANICKED.
type panickedEvent struct {
	Action string          `json:"action"`
	Info   json.RawMessage `json:"info"`
}

// panicInfo renders GUEST_PANICKED's optional info (Hyper-V or s390
// crash data) as one short line.
func panicInfo(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return ""
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("info %s", s)
}
