package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

func TestServerRoutes(t *testing.T) {
	tests := []struct {
		name      string
		state     vmm.State
		fail      error
		method    string
		route     string
		body      string
		header    http.Header
		status    int
		code      Code   // for errors
		wantState string // for 200s
		wantStop  StopOptions
		allow     string
	}{
		{name: "status", state: vmm.StateRunning, method: "GET", route: "/v1/status", status: 200, wantState: "running"},
		{name: "pause", state: vmm.StateRunning, method: "POST", route: "/v1/pause", status: 200, wantState: "paused"},
		{name: "resume", state: vmm.StatePaused, method: "POST", route: "/v1/resume", status: 200, wantState: "running"},
		{name: "stop with defaults", state: vmm.StateRunning, method: "POST", route: "/v1/stop", status: 200, wantState: "stopped",
			wantStop: StopOptions{Timeout: DefaultStopTimeout}},
		{name: "stop forced", state: vmm.StatePaused, method: "POST", route: "/v1/stop", body: `{"force":true}`, status: 200, wantState: "stopped",
			wantStop: StopOptions{Force: true, Timeout: DefaultStopTimeout}},
		{name: "stop with a timeout", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"force":false,"timeout_seconds":1.5}`, status: 200, wantState: "stopped",
			wantStop: StopOptions{Timeout: 1500 * time.Millisecond}},
		{name: "stop with the longest timeout", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"timeout_seconds":3600}`, status: 200, wantState: "stopped",
			wantStop: StopOptions{Timeout: time.Hour}},

		{name: "pause while paused", state: vmm.StatePaused, method: "POST", route: "/v1/pause", status: 409, code: CodeConflict},
		{name: "resume while running", state: vmm.StateRunning, method: "POST", route: "/v1/resume", status: 409, code: CodeConflict},
		{name: "stop a stopped vm", state: vmm.StateStopped, method: "POST", route: "/v1/stop", status: 409, code: CodeConflict},
		{name: "controller failure", state: vmm.StateRunning, fail: errBackend, method: "POST", route: "/v1/pause", status: 500, code: CodeInternal},

		{name: "malformed json", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"force":`, status: 400, code: CodeBadRequest},
		{name: "unknown field", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"forse":true}`, status: 400, code: CodeBadRequest},
		{name: "wrong type", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"force":"yes"}`, status: 400, code: CodeBadRequest},
		{name: "negative timeout", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"timeout_seconds":-1}`, status: 400, code: CodeBadRequest},
		{name: "timeout over an hour", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{"timeout_seconds":3601}`, status: 400, code: CodeBadRequest},
		{name: "two objects", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `{} {}`, status: 400, code: CodeBadRequest},
		{name: "not an object", state: vmm.StateRunning, method: "POST", route: "/v1/stop", body: `[]`, status: 400, code: CodeBadRequest},
		{name: "body over the limit", state: vmm.StateRunning, method: "POST", route: "/v1/stop",
			body: `{"force":true,"pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, status: 413, code: CodeTooLarge},
		{name: "ignored body over the limit", state: vmm.StateRunning, method: "POST", route: "/v1/pause",
			body: strings.Repeat("x", MaxBodyBytes+1), status: 413, code: CodeTooLarge},

		{name: "unknown route", state: vmm.StateRunning, method: "GET", route: "/v1/nope", status: 404, code: CodeNotFound},
		{name: "unversioned route", state: vmm.StateRunning, method: "GET", route: "/status", status: 404, code: CodeNotFound},
		{name: "root", state: vmm.StateRunning, method: "GET", route: "/", status: 404, code: CodeNotFound},
		{name: "delete status", state: vmm.StateRunning, method: "DELETE", route: "/v1/status", status: 405, code: CodeMethodNotAllowed, allow: "GET"},
		{name: "get pause", state: vmm.StateRunning, method: "GET", route: "/v1/pause", status: 405, code: CodeMethodNotAllowed, allow: "POST"},
		{name: "post console", state: vmm.StateRunning, method: "POST", route: "/v1/console", status: 405, code: CodeMethodNotAllowed, allow: "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &fakeVM{state: tt.state, fail: tt.fail}
			path, _ := serve(t, vm, nil)

			r := request(t, path, tt.method, tt.route, tt.body, tt.header)
			require.Equal(t, tt.status, r.status, "body %s", r.body)
			if tt.code != "" {
				e := decodeError(t, r)
				assert.Equal(t, tt.code, e.Code)
				assert.Equal(t, tt.allow, r.header.Get("Allow"))
			} else {
				var st Status
				require.NoError(t, json.Unmarshal(r.body, &st))
				assert.Equal(t, tt.wantState, st.State)
				assert.Equal(t, tt.wantState, vm.Status().State, "the controller did it")
				assert.Equal(t, tt.wantStop, vm.lastStop())
			}

			// The server stays up after whatever came before.
			after := request(t, path, "GET", "/v1/status", "", nil)
			assert.Equal(t, http.StatusOK, after.status)
		})
	}
}

func TestStatusJSON(t *testing.T) {
	vm := &fakeVM{state: vmm.StateRunning}
	path, _ := serve(t, vm, nil)
	r := request(t, path, "GET", "/v1/status", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	assert.JSONEq(t, `{
		"id": "vm-1", "name": "web", "state": "running", "backend": "tcg",
		"backend_reason": "no /dev/kvm", "pid": 4242,
		"started_at": "2025-03-01T12:00:00Z", "uptime_seconds": 12.5,
		"config": {"cpus": 2}, "net_rx_bytes": 0, "net_tx_bytes": 0
	}`, string(r.body))

	vm.mu.Lock()
	vm.state = vmm.StateStopped
	vm.mu.Unlock()
	r = request(t, path, "GET", "/v1/status", "", nil)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(r.body, &fields))
	assert.JSONEq(t, `{"reason":"stopped","detail":"stopped from the host","code":143}`, string(fields["exit"]))

	empty, err := json.Marshal(Status{})
	require.NoError(t, err)
	assert.NotContains(t, string(empty), "started_at", "not started yet")
	assert.NotContains(t, string(empty), "exit", "not ended yet")
}

func TestConsoleRouteRefusals(t *testing.T) {
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {ConsoleProtocol}}
	tests := []struct {
		name   string
		noHub  bool
		route  string
		header http.Header
		status int
		code   Code
	}{
		{name: "no upgrade headers", route: "/v1/console", status: 400, code: CodeBadRequest},
		{name: "another protocol", route: "/v1/console", header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, status: 400, code: CodeBadRequest},
		{name: "write is not a boolean", route: "/v1/console?write=maybe", header: upgrade, status: 400, code: CodeBadRequest},
		{name: "no console", noHub: true, route: "/v1/console", header: upgrade, status: 404, code: CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newHub(t)
			if tt.noHub {
				hub = nil
			}
			path, _ := serve(t, &fakeVM{state: vmm.StateRunning}, hub)
			r := request(t, path, "GET", tt.route, "", tt.header)
			require.Equal(t, tt.status, r.status, "body %s", r.body)
			assert.Equal(t, tt.code, decodeError(t, r).Code)
			assert.Equal(t, http.StatusOK, request(t, path, "GET", "/v1/status", "", nil).status)
		})
	}
}
