package qemu

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/wisp-vmm/wisp/vmm"
)

func TestDecideExit(t *testing.T) {
	killed := errors.New("signal: killed")
	tests := []struct {
		name   string
		facts  exitFacts
		want   vmm.ExitReason
		detail string // substring of Detail
	}{
		{"poweroff", exitFacts{shutdown: "guest-shutdown"}, vmm.ExitPoweroff, "powered off"},
		{"reset", exitFacts{shutdown: "guest-reset"}, vmm.ExitReset, "reset"},
		{"panic event", exitFacts{panicked: true, shutdown: "host-qmp-quit"}, vmm.ExitPanic, "panicked"},
		{"panic with info", exitFacts{panicked: true, panicInfo: "info {}"}, vmm.ExitPanic, "info {}"},
		{"panic shutdown reason", exitFacts{shutdown: "guest-panic"}, vmm.ExitPanic, "pvpanic"},
		{"panic wins over a stop", exitFacts{panicked: true, stop: stopForced}, vmm.ExitPanic, ""},
		{"panic then reset", exitFacts{panicked: true, shutdown: "guest-reset"}, vmm.ExitPanic, ""},
		{"graceful stop, guest complied", exitFacts{stop: stopGraceful, shutdown: "guest-shutdown"}, vmm.ExitStopped, "guest powered off"},
		{"graceful stop escalated", exitFacts{stop: stopForced, shutdown: "host-qmp-quit"}, vmm.ExitStopped, "forced"},
		{"forced by SIGKILL", exitFacts{stop: stopForced, procErr: killed}, vmm.ExitStopped, "forced"},
		{"context", exitFacts{stop: stopContext, procErr: killed}, vmm.ExitStopped, "context"},
		{"signal from outside", exitFacts{shutdown: "host-signal"}, vmm.ExitStopped, "signal"},
		{"quit from outside", exitFacts{shutdown: "host-qmp-quit"}, vmm.ExitStopped, "quit"},
		{"killed from outside", exitFacts{procErr: killed, stderrLast: ""}, vmm.ExitBackendFailure, "signal: killed"},
		{"qemu error", exitFacts{procErr: errors.New("exit status 1"), stderrLast: "qemu-system-x86_64: could not load kernel"},
			vmm.ExitBackendFailure, "could not load kernel"},
		{"clean exit without shutdown event", exitFacts{}, vmm.ExitBackendFailure, "unexpectedly"},
		{"unknown reason", exitFacts{shutdown: "snapshot-load"}, vmm.ExitBackendFailure, "snapshot-load"},
		{"lost QMP", exitFacts{qmpLost: errors.New("malformed QMP message"), procErr: killed}, vmm.ExitBackendFailure, "lost the QMP connection"},
		{"host stop wins over lost QMP", exitFacts{qmpLost: errors.New("x"), stop: stopForced}, vmm.ExitStopped, "forced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := decideExit(tt.facts)
			assert.Equal(t, tt.want, st.Reason, st.Detail)
			assert.Contains(t, st.Detail, tt.detail)
			assert.NotContains(t, st.Detail, "\n")
		})
	}
}

func TestPanicInfo(t *testing.T) {
	assert.Equal(t, "", panicInfo(nil))
	assert.Equal(t, "", panicInfo(json.RawMessage("null")))
	assert.Equal(t, `info {"type":"hyper-v"}`, panicInfo(json.RawMessage(`{"type":"hyper-v"}`)))
	long := panicInfo(json.RawMessage(`"` + strings.Repeat("a", 1000) + `"`))
	assert.Less(t, len(long), 220)
}
