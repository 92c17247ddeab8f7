package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/vmm/api"
	"github.com/wisp-vmm/wisp/vmm/console"
)

const (
	testGiB = uint64(1) << 30
	// testGroup is the socket's group in these tests; TestSocketAccess
	// creates it when the host has none.
	testGroup = "wisp"
	// dialEnv makes the test binary, re-run as another user, dial the
	// socket it names and print what happened.
	dialEnv = "WISP_TEST_DIAL_SOCKET"
)

// apiHarness is a real Agent serving its API on a real unix socket, and an
// HTTP client whose every request and response is checked against
// openapi.json.
type apiHarness struct {
	a      *Agent
	socket string
	http   *http.Client
}

// newAPIHarness starts an agent's API (not its reconcile loop: nothing
// here spawns a VMM) on a socket in a fresh short directory.
func newAPIHarness(t *testing.T, group string) *apiHarness {
	t.Helper()
	runDir, err := os.MkdirTemp("", "wa") // unix socket paths are short
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(runDir) })
	a, err := New(Config{
		StateDir: t.TempDir(),
		RunDir:   runDir,
		Socket:   filepath.Join(runDir, "api", "agent.sock"),
		Group:    group,
		Wisp:     "/bin/false",
		Host:     model.Capacity{CPUs: 4, MemoryBytes: 4 * testGiB},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	ln, err := a.listen()
	require.NoError(t, err)
	srv := newHTTPServer(a)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown(context.Background()))
		require.ErrorIs(t, <-served, http.ErrServerClosed)
		require.NoError(t, a.Close())
	})
	return &apiHarness{a: a, socket: a.cfg.Socket, http: &http.Client{Transport: newContractCheck(t, unixTransport(a.cfg.Socket))}}
}

func unixTransport(socket string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
}

// call sends one request and returns the status, headers and body.
func (h *apiHarness) call(t *testing.T, ctx context.Context, method, path string, body []byte, header ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://wisp"+path, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func (h *apiHarness) mustJSON(t *testing.T, method, path string, body any, wantStatus int, out any) http.Header {
	t.Helper()
	var raw []byte
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(t, err)
	}
	status, hdr, b := h.call(t, context.Background(), method, path, raw)
	require.Equal(t, wantStatus, status, "%s %s: %s", method, path, b)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out), "%s", b)
	}
	return hdr
}

func smallSpec() model.Spec { return model.Spec{CPUs: 1, MemoryBytes: 64 << 20} }

func (h *apiHarness) create(t *testing.T, name string, spec model.Spec) VMInfo {
	t.Helper()
	var vm VMInfo
	h.mustJSON(t, http.MethodPost, "/v1/vms", CreateRequest{Name: name, Spec: spec}, http.StatusCreated, &vm)
	return vm
}

// --- the contract check ---

type ctxKey int

const (
	// requestBreaksContract marks a request a test sends on purpose
	// although openapi.json says it is wrong: the check then insists the
	// document refuses it too, so server and document agree on bad input.
	requestBreaksContract ctxKey = iota
	// requestOffContract marks a request for a route the document does
	// not have (a 404 or 405 test): only the error body is checked.
	requestOffContract
)

func breaksContract(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestBreaksContract, true)
}

func offContract(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestOffContract, true)
}

// contractCheck is a RoundTripper that validates each request and
// response against openapi.json with kin-openapi.
type contractCheck struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router
	next   http.RoundTripper
}

func loadDocument(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPIDocument())
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()))
	return doc
}

func newContractCheck(t *testing.T, next http.RoundTripper) *contractCheck {
	doc := loadDocument(t)
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return &contractCheck{t: t, doc: doc, router: router, next: next}
}

func (c *contractCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	ctx := req.Context()
	what := req.Method + " " + req.URL.RequestURI()
	if ctx.Value(requestOffContract) != nil {
		_, _, err := c.router.FindRoute(req)
		assert.Error(c.t, err, "%s: a route the document has", what)
		resp, err := c.next.RoundTrip(req)
		if err == nil {
			c.checkErrorBody(resp, what)
		}
		return resp, err
	}
	route, params, err := c.router.FindRoute(req)
	if !assert.NoError(c.t, err, "%s: no such route in openapi.json", what) {
		return c.next.RoundTrip(req)
	}
	reqIn := &openapi3filter.RequestValidationInput{
		Request: req.Clone(ctx), PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	reqIn.Request.Body = io.NopCloser(bytes.NewReader(body))
	verr := openapi3filter.ValidateRequest(ctx, reqIn)
	if ctx.Value(requestBreaksContract) != nil {
		assert.Error(c.t, verr, "%s %s: the document accepts a request the test sends as bad input", what, body)
	} else {
		assert.NoError(c.t, verr, "%s %.200s: request breaks openapi.json", what, body)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respIn := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqIn, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode == http.StatusSwitchingProtocols || (ct != "" && !strings.HasPrefix(ct, "application/json")) {
		// Streams (console, logs, NDJSON events) are checked for their
		// status, headers and media type; reading them would block.
		respIn.Options.ExcludeResponseBody = true
		if resp.StatusCode != http.StatusSwitchingProtocols {
			r := route.Operation.Responses.Status(resp.StatusCode)
			if assert.NotNil(c.t, r, "%s: status %d not documented", what, resp.StatusCode) {
				assert.NotNil(c.t, r.Value.Content.Get(ct), "%s: %d with %s not documented", what, resp.StatusCode, ct)
			}
		}
		assert.NoError(c.t, openapi3filter.ValidateResponse(ctx, respIn), "%s: response breaks openapi.json", what)
		return resp, nil
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	respIn.SetBodyBytes(rb)
	assert.NoError(c.t, openapi3filter.ValidateResponse(ctx, respIn), "%s → %d %s: response breaks openapi.json", what, resp.StatusCode, rb)
	return resp, nil
}

func (c *contractCheck) checkErrorBody(resp *http.Response, what string) {
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	if !assert.NoError(c.t, err) {
		return
	}
	var v any
	if assert.NoError(c.t, json.Unmarshal(rb, &v), "%s: %s", what, rb) {
		assert.NoError(c.t, c.doc.Components.Schemas["Error"].Value.VisitJSON(v), "%s: error body %s", what, rb)
	}
}

// --- tests ---

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadDocument(t)
	assert.Equal(t, "3.0.3", doc.OpenAPI)
	// Every route the handler serves is in the document.
	for _, p := range []string{"/v1/vms", "/v1/vms/{name}", "/v1/vms/{name}/start", "/v1/vms/{name}/stop", "/v1/vms/{name}/pause",
		"/v1/vms/{name}/resume", "/v1/vms/{name}/restart", "/v1/vms/{name}/console", "/v1/vms/{name}/logs",
		"/v1/vms/{name}/events", "/v1/events", "/v1/host", "/openapi.json"} {
		assert.NotNil(t, doc.Paths.Value(p), p)
	}
}

func TestVMLifecycleOverHTTP(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")

	var vms []VMInfo
	h.mustJSON(t, http.MethodGet, "/v1/vms", nil, http.StatusOK, &vms)
	assert.Empty(t, vms)

	var created VMInfo
	hdr := h.mustJSON(t, http.MethodPost, "/v1/vms", CreateRequest{Name: "web1", Spec: smallSpec(), Labels: map[string]string{"team": "a"}}, http.StatusCreated, &created)
	assert.Equal(t, "/v1/vms/web1", hdr.Get("Location"))
	assert.Equal(t, "web1", created.Name)
	assert.Equal(t, model.ObservedStopped, created.Observed)
	assert.Equal(t, model.DesiredStopped, created.Desired)
	assert.Equal(t, model.ClassReserved, created.Class)
	h.create(t, "db1", smallSpec())

	h.mustJSON(t, http.MethodGet, "/v1/vms", nil, http.StatusOK, &vms)
	require.Len(t, vms, 2)
	assert.Equal(t, []string{"db1", "web1"}, []string{vms[0].Name, vms[1].Name})

	var got VMInfo
	h.mustJSON(t, http.MethodGet, "/v1/vms/web1", nil, http.StatusOK, &got)
	assert.Equal(t, map[string]string{"team": "a"}, got.Labels)
	assert.Equal(t, smallSpec(), got.Spec)

	// wait=false records the desired state and answers at once; no
	// reconcile loop runs here, so the VM stays observed stopped.
	var accepted VMInfo
	h.mustJSON(t, http.MethodPost, "/v1/vms/db1/start?wait=false", nil, http.StatusAccepted, &accepted)
	assert.Equal(t, model.DesiredRunning, accepted.Desired)

	var host HostInfo
	h.mustJSON(t, http.MethodGet, "/v1/host", nil, http.StatusOK, &host)
	assert.Equal(t, HostInfo{CPUs: 4, MemoryBytes: 4 * testGiB, CPUOvercommit: h.a.cfg.Host.CPUOvercommit, UsedCPUs: 1, UsedMemoryBytes: 64 << 20, VMs: 2,
		AgentPID: os.Getpid(), StoreSchemaVersion: host.StoreSchemaVersion}, host)

	h.mustJSON(t, http.MethodDelete, "/v1/vms/web1", nil, http.StatusNoContent, nil)
	status, _, body := h.call(t, context.Background(), http.MethodGet, "/v1/vms/web1", nil)
	assert.Equal(t, http.StatusNotFound, status, "%s", body)

	var evs []model.Event
	h.mustJSON(t, http.MethodGet, "/v1/vms/web1/events", nil, http.StatusOK, &evs)
	require.Len(t, evs, 2)
	assert.Equal(t, model.EventCreated, evs[0].Kind)
	assert.Equal(t, model.EventDeleted, evs[1].Kind)
	assert.Equal(t, "web1", evs[1].VM)

	var all []model.Event
	h.mustJSON(t, http.MethodGet, "/v1/events?after="+strconv.FormatUint(evs[0].Seq, 10)+"&limit=2", nil, http.StatusOK, &all)
	require.Len(t, all, 2)
	assert.Greater(t, all[0].Seq, evs[0].Seq)

	var none []model.Event
	h.mustJSON(t, http.MethodGet, "/v1/events?vm=never-was", nil, http.StatusOK, &none)
	assert.NotNil(t, none, "an empty history is [], not null")
	assert.Empty(t, none)

	var doc map[string]any
	h.mustJSON(t, http.MethodGet, "/openapi.json", nil, http.StatusOK, &doc)
	assert.Equal(t, "3.0.3", doc["openapi"])
}

func TestBadInputOverHTTP(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	h.create(t, "taken", smallSpec())
	h.create(t, "stopped1", smallSpec())
	h.create(t, "huge", model.Spec{CPUs: 1, MemoryBytes: 8 * testGiB})
	h.create(t, "running1", smallSpec())
	_, err := h.a.Store().UpdateVM("running1", func(vm *model.VM) ([]model.Event, error) {
		return vm.SetObserved(model.ObservedRunning, "stands for a running VMM"), nil
	})
	require.NoError(t, err)

	spec := `"spec":{"cpus":1,"memory_bytes":67108864}`
	big := `{"name":"big","spec":{"cpus":1,"memory_bytes":67108864,"cmdline":"` + strings.Repeat("a", MaxBodyBytes) + `"}}`
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header []string
		// breaks: the document refuses the request too; off: the route
		// is not in the document.
		breaks, off bool
		status      int
		code        string
		field       string
		message     string
		contains    string
	}{
		{name: "unknown vm", method: "GET", path: "/v1/vms/nope", status: 404, code: "not_found", message: "vm nope not found"},
		{name: "unknown vm op", method: "POST", path: "/v1/vms/nope/start", status: 404, code: "not_found"},
		{name: "unknown vm delete", method: "DELETE", path: "/v1/vms/nope", status: 404, code: "not_found"},
		// An escaped '/' reaches the handler as one segment, and
		// ValidName refuses it: 400, naming the field.
		{name: "name with slash", method: "GET", path: "/v1/vms/a%2Fb", status: 400, code: "invalid", field: "name"},
		{name: "name with escaped dots", method: "GET", path: "/v1/vms/%2E%2E", status: 400, code: "invalid", field: "name"},
		// A literal ".." is not a clean path: no route takes it (the mux
		// would redirect, the API refuses), so 404 before any name is
		// looked at.
		{name: "name dot dot", method: "GET", path: "/v1/vms/..", status: 404, code: "not_found"},
		{name: "dot dot inside", method: "GET", path: "/v1/vms/x/../taken", off: true, status: 404, code: "not_found"},
		{name: "literal slash in name", method: "GET", path: "/v1/vms/a/b", off: true, status: 404, code: "not_found"},
		{name: "bad name in create", method: "POST", path: "/v1/vms", body: `{"name":"Web_1",` + spec + `}`, breaks: true, status: 400, code: "invalid", field: "name"},
		{name: "second create", method: "POST", path: "/v1/vms", body: `{"name":"taken",` + spec + `}`, status: 409, code: "exists", contains: "vm taken already exists"},
		{name: "malformed json", method: "POST", path: "/v1/vms", body: `{"name":`, breaks: true, status: 400, code: "bad_request"},
		{name: "not an object", method: "POST", path: "/v1/vms", body: `[1,2]`, breaks: true, status: 400, code: "invalid", field: "body"},
		{name: "empty body", method: "POST", path: "/v1/vms", body: ``, breaks: true, status: 400, code: "bad_request"},
		{name: "trailing data", method: "POST", path: "/v1/vms", body: `{"name":"t2",` + spec + `} {}`, status: 400, code: "bad_request"},
		{name: "body over 1 MiB", method: "POST", path: "/v1/vms", body: big, status: 413, code: "too_large"},
		{name: "unknown field", method: "POST", path: "/v1/vms", body: `{"name":"u1",` + spec + `,"colour":"red"}`, breaks: true, status: 400, code: "invalid", field: "colour"},
		{name: "unknown spec field", method: "POST", path: "/v1/vms", body: `{"name":"u2","spec":{"cpus":1,"memory_bytes":67108864,"gpus":2}}`, breaks: true, status: 400, code: "invalid", field: "gpus"},
		{name: "wrong type", method: "POST", path: "/v1/vms", body: `{"name":"u3","spec":{"cpus":"two","memory_bytes":67108864}}`, breaks: true, status: 400, code: "invalid", field: "spec.cpus"},
		{name: "spec refused", method: "POST", path: "/v1/vms", body: `{"name":"u4","spec":{"cpus":0,"memory_bytes":67108864}}`, breaks: true, status: 400, code: "invalid", field: "cpus"},
		{name: "relative path", method: "POST", path: "/v1/vms", body: `{"name":"u5","spec":{"cpus":1,"memory_bytes":67108864,"kernel":"vmlinuz"}}`, status: 400, code: "invalid", field: "kernel"},
		{name: "pause a stopped vm", method: "POST", path: "/v1/vms/stopped1/pause", status: 409, code: "conflict", message: "cannot pause: vm stopped1 is stopped"},
		{name: "resume a stopped vm", method: "POST", path: "/v1/vms/stopped1/resume?wait=false", status: 409, code: "conflict", message: "cannot resume: vm stopped1 is stopped"},
		{name: "start a vm the host cannot hold", method: "POST", path: "/v1/vms/huge/start", status: 409, code: "conflict", message: "cannot start vm huge: not enough memory: vm needs 8.0 GiB, 3.9 GiB free of 4.0 GiB"},
		{name: "delete a running vm", method: "DELETE", path: "/v1/vms/running1", status: 409, code: "conflict", message: "cannot delete: vm running1 is running"},
		{name: "negative timeout", method: "POST", path: "/v1/vms/running1/stop", body: `{"timeout_seconds":-1}`, breaks: true, status: 400, code: "invalid", field: "timeout_seconds"},
		{name: "timeout of years", method: "POST", path: "/v1/vms/running1/stop", body: `{"timeout_seconds":1e12}`, breaks: true, status: 400, code: "invalid", field: "timeout_seconds"},
		{name: "unknown op field", method: "POST", path: "/v1/vms/running1/stop", body: `{"forse":true}`, breaks: true, status: 400, code: "invalid", field: "forse"},
		{name: "bad wait", method: "POST", path: "/v1/vms/running1/pause?wait=maybe", breaks: true, status: 400, code: "invalid", field: "wait"},
		{name: "bad force", method: "DELETE", path: "/v1/vms/running1?force=please", breaks: true, status: 400, code: "invalid", field: "force"},
		{name: "bad after", method: "GET", path: "/v1/events?after=-3", breaks: true, status: 400, code: "invalid", field: "after"},
		{name: "bad limit", method: "GET", path: "/v1/vms/taken/events?limit=many", breaks: true, status: 400, code: "invalid", field: "limit"},
		{name: "bad event vm", method: "GET", path: "/v1/events?vm=A/B", status: 400, code: "invalid", field: "name"},
		{name: "bad tail", method: "GET", path: "/v1/vms/taken/logs?tail=x", breaks: true, status: 400, code: "invalid", field: "tail"},
		{name: "logs of unknown vm", method: "GET", path: "/v1/vms/nope/logs", status: 404, code: "not_found"},
		{name: "unknown op", method: "POST", path: "/v1/vms/taken/reboot", off: true, status: 404, code: "not_found"},
		{name: "unknown route", method: "GET", path: "/v2/vms", off: true, status: 404, code: "not_found"},
		{name: "wrong method", method: "PUT", path: "/v1/vms", off: true, status: 405, code: "method_not_allowed"},
		{name: "wrong method on op", method: "GET", path: "/v1/vms/taken/start", off: true, status: 405, code: "method_not_allowed"},
		{name: "console without upgrade", method: "GET", path: "/v1/vms/taken/console", breaks: true, status: 426, code: "upgrade_required"},
		{name: "console of a stopped vm", method: "GET", path: "/v1/vms/taken/console", header: []string{"Connection", "Upgrade", "Upgrade", ConsoleProtocol}, status: 409, code: "conflict", message: "vm taken is stopped: it has a console while it runs (start it first)"},
		{name: "console of unknown vm", method: "GET", path: "/v1/vms/nope/console?write=true", header: []string{"Connection", "Upgrade", "Upgrade", ConsoleProtocol}, status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.breaks {
				ctx = breaksContract(ctx)
			}
			if tt.off {
				ctx = offContract(ctx)
			}
			var body []byte
			if tt.body != "" || tt.method == "POST" && tt.code == "bad_request" {
				body = []byte(tt.body)
			}
			status, hdr, b := h.call(t, ctx, tt.method, tt.path, body, tt.header...)
			require.Equal(t, tt.status, status, "%s", b)
			assert.Equal(t, "application/json", hdr.Get("Content-Type"))
			var e ErrorBody
			require.NoError(t, json.Unmarshal(b, &e), "%s", b)
			assert.Equal(t, tt.code, e.Code, "%s", b)
			assert.Equal(t, tt.field, e.Field, "%s", b)
			if tt.message != "" {
				assert.Equal(t, tt.message, e.Message)
			}
			assert.Contains(t, e.Message, tt.contains)
			assert.NotEmpty(t, e.Message)
			if status == http.StatusMethodNotAllowed {
				assert.NotEmpty(t, hdr.Get("Allow"))
			}
			// The server is still there and still right.
			var vm VMInfo
			h.mustJSON(t, http.MethodGet, "/v1/vms/taken", nil, http.StatusOK, &vm)
			assert.Equal(t, "taken", vm.Name)
		})
	}
	// None of the refused creates left a VM behind.
	var vms []VMInfo
	h.mustJSON(t, http.MethodGet, "/v1/vms", nil, http.StatusOK, &vms)
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	assert.Equal(t, []string{"huge", "running1", "stopped1", "taken"}, names)
}

func TestDeleteRunningWithForceWithoutLoop(t *testing.T) {
	// A forced delete of a running VM asks for a forced stop and waits
	// for the reconcile loop, which these tests do not run: the request
	// must then end with the client, and the VM stay.
	h := newAPIHarness(t, "no-such-group-wisp-test")
	h.create(t, "busy", smallSpec())
	_, err := h.a.Store().UpdateVM("busy", func(vm *model.VM) ([]model.Event, error) {
		return vm.SetObserved(model.ObservedRunning, "stands for a running VMM"), nil
	})
	require.NoError(t, err)
	var vm VMInfo
	h.mustJSON(t, http.MethodPost, "/v1/vms/busy/stop?wait=false", OpRequest{Force: true, TimeoutSeconds: 5}, http.StatusAccepted, &vm)
	assert.Equal(t, model.DesiredStopped, vm.Desired)
	require.NotNil(t, vm.Stop)
	assert.Equal(t, model.StopRequest{Force: true, TimeoutSeconds: 5}, *vm.Stop)
}

func TestEventsFollow(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	h.create(t, "first", smallSpec())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wisp/v1/events?follow=true&limit=3", nil)
	require.NoError(t, err)
	resp, err := h.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))

	doc := loadDocument(t)
	lines := bufio.NewScanner(resp.Body)
	next := func() model.Event {
		t.Helper()
		require.True(t, lines.Scan(), "stream ended early: %v", lines.Err())
		var v any
		require.NoError(t, json.Unmarshal(lines.Bytes(), &v))
		require.NoError(t, doc.Components.Schemas["Event"].Value.VisitJSON(v), "%s", lines.Bytes())
		var ev model.Event
		require.NoError(t, json.Unmarshal(lines.Bytes(), &ev))
		return ev
	}
	ev := next() // the history
	assert.Equal(t, "first", ev.VM)
	assert.Equal(t, model.EventCreated, ev.Kind)

	// Events that happen after the stream started arrive on it.
	h.create(t, "second", smallSpec())
	ev = next()
	assert.Equal(t, "second", ev.VM)
	assert.Equal(t, model.EventCreated, ev.Kind)
	h.mustJSON(t, http.MethodDelete, "/v1/vms/first", nil, http.StatusNoContent, nil)
	ev = next()
	assert.Equal(t, "first", ev.VM)
	assert.Equal(t, model.EventDeleted, ev.Kind)
	// limit=3 ends the stream.
	assert.False(t, lines.Scan())
	assert.NoError(t, lines.Err())
}

func TestLogs(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	h.create(t, "web1", smallSpec())

	// A VM that never ran has an empty log.
	status, hdr, body := h.call(t, context.Background(), http.MethodGet, "/v1/vms/web1/logs", nil)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, "text/plain; charset=utf-8", hdr.Get("Content-Type"))
	assert.Empty(t, body)

	path, err := h.a.ConsoleLog("web1")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, []byte("boot line 1\nlogin: "), 0o600))

	tests := []struct {
		query string
		want  string
	}{
		{"", "boot line 1\nlogin: "},
		{"?tail=7", "login: "},
		{"?tail=0", ""},
		{"?tail=1000", "boot line 1\nlogin: "},
	}
	for _, tt := range tests {
		status, _, body := h.call(t, context.Background(), http.MethodGet, "/v1/vms/web1/logs"+tt.query, nil)
		require.Equal(t, http.StatusOK, status, tt.query)
		assert.Equal(t, tt.want, string(body), tt.query)
	}

	// Following: what is appended later comes down the same response.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wisp/v1/vms/web1/logs?follow=true&tail=7", nil)
	require.NoError(t, err)
	resp, err := h.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	readUntil(t, resp.Body, "login: ")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("root\n# ")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	readUntil(t, resp.Body, "root\n# ")

	// Deleting the VM ends the stream.
	h.mustJSON(t, http.MethodDelete, "/v1/vms/web1", nil, http.StatusNoContent, nil)
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Empty(t, rest)
}

// readUntil reads r until it has produced exactly want, failing on
// anything else or an early end.
func readUntil(t *testing.T, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, 0, len(want))
	buf := make([]byte, len(want))
	for len(got) < len(want) {
		n, err := r.Read(buf[:len(want)-len(got)])
		got = append(got, buf[:n]...)
		require.NoError(t, err, "read so far: %q", got)
	}
	assert.Equal(t, want, string(got))
}

// runningVMM is a VMM's control socket with a real console hub behind it,
// standing for a VMM process: the agent reaches it as it would a real one.
type runningVMM struct{}

func (runningVMM) Status() api.Status                          { return api.Status{State: "running", Backend: "tcg"} }
func (runningVMM) Pause() error                                { return nil }
func (runningVMM) Resume() error                               { return nil }
func (runningVMM) Stop(context.Context, api.StopOptions) error { return nil }

func TestConsoleOverHTTP(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	h.create(t, "web1", smallSpec())

	hub := console.NewHub(4096)
	sock := filepath.Join(filepath.Dir(h.socket), "vmm.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	vmmSrv := api.NewServer(runningVMM{}, hub, nil)
	go vmmSrv.Serve(ln)
	defer vmmSrv.Close()
	_, err = h.a.Store().UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) {
		vm.Runtime = &model.Runtime{PID: os.Getpid(), Socket: sock, Dir: t.TempDir()}
		return vm.SetObserved(model.ObservedRunning, "stands for a running VMM"), nil
	})
	require.NoError(t, err)
	_, err = hub.Write([]byte("login: "))
	require.NoError(t, err)

	req, err := http.NewRequest(http.MethodGet, "http://wisp/v1/vms/web1/console?write=true", nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleProtocol)
	resp, err := h.http.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, ConsoleProtocol, resp.Header.Get("Upgrade"))
	stream, ok := resp.Body.(io.ReadWriteCloser)
	require.True(t, ok, "a 101 answer's body is the connection")

	readUntil(t, stream, "login: ") // the hub's history, through the agent
	_, err = stream.Write([]byte("root\n"))
	require.NoError(t, err)
	typed := make([]byte, len("root\n"))
	_, err = io.ReadFull(hub.Input(), typed)
	require.NoError(t, err)
	assert.Equal(t, "root\n", string(typed))
	_, err = hub.Write([]byte("# "))
	require.NoError(t, err)
	readUntil(t, stream, "# ")

	// A second writer is refused while the first types.
	status, _, body := h.call(t, context.Background(), http.MethodGet, "/v1/vms/web1/console?write=true", nil,
		"Connection", "Upgrade", "Upgrade", ConsoleProtocol)
	assert.Equal(t, http.StatusConflict, status, "%s", body)

	// The VM's console ending ends the client's stream.
	require.NoError(t, hub.Close())
	rest, err := io.ReadAll(stream)
	assert.NoError(t, err)
	assert.Empty(t, rest)
	require.NoError(t, stream.Close())
}

func TestPanicInHandlerIsA500(t *testing.T) {
	var logged bytes.Buffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("bug") })
	mux.HandleFunc("GET /fine", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, "fine") })
	m := &middleware{log: slog.New(slog.NewTextHandler(&logged, nil)), mux: mux}

	dir, err := os.MkdirTemp("", "wp")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	srv := &http.Server{Handler: m}
	go srv.Serve(ln)
	defer srv.Close()
	c := &http.Client{Transport: unixTransport(filepath.Join(dir, "s"))}

	for _, tt := range []struct {
		path   string
		status int
		want   string
	}{
		{"/boom", 500, `{"code":"internal","message":"internal error; the agent's log has the details"}`},
		{"/fine", 200, `"fine"`},
		{"/boom", 500, `{"code":"internal","message":"internal error; the agent's log has the details"}`},
	} {
		resp, err := c.Get("http://wisp" + tt.path)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, tt.status, resp.StatusCode)
		assert.JSONEq(t, tt.want, string(b))
	}
	assert.Contains(t, logged.String(), "panic serving GET /boom: bug")
}

func TestStoreFailureIsA500(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")
	// Reopening would need the file lock; a closed store fails every
	// read, which is a bug-class error for the API.
	require.NoError(t, h.a.store.Close())
	status, _, body := h.call(t, context.Background(), http.MethodGet, "/v1/vms", nil)
	assert.Equal(t, http.StatusInternalServerError, status)
	var e ErrorBody
	require.NoError(t, json.Unmarshal(body, &e))
	assert.Equal(t, "internal", e.Code)
	// The harness's cleanup closes the agent again; make that a no-op.
	st, err := store.Open(h.a.store.Path())
	require.NoError(t, err)
	h.a.store = st
}

// --- the socket ---

func TestListenRefusesWhatIsThere(t *testing.T) {
	h := newAPIHarness(t, "no-such-group-wisp-test")

	// A live socket: another agent answers.
	_, err := h.a.listen()
	require.ErrorIs(t, err, ErrSocketInUse)
	assert.Contains(t, err.Error(), "another agent listens on "+h.socket)

	other, err := New(Config{StateDir: t.TempDir(), RunDir: filepath.Dir(filepath.Dir(h.socket)), Wisp: "/bin/false", Group: "no-such-group-wisp-test",
		Host: model.Capacity{CPUs: 1, MemoryBytes: testGiB}})
	require.NoError(t, err)
	defer other.Close()

	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string
	}{
		{"nothing there", func(*testing.T, string) {}, ""},
		{"a stale socket", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			require.NoError(t, err)
			ln.SetUnlinkOnClose(false)
			require.NoError(t, ln.Close())
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			require.Equal(t, os.ModeSocket, fi.Mode().Type())
		}, ""},
		{"a regular file", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o644))
		}, "exists and is not a socket"},
		{"a directory", func(t *testing.T, path string) {
			require.NoError(t, os.Mkdir(path, 0o755))
		}, "exists and is not a socket"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other.cfg.Socket = filepath.Join(filepath.Dir(h.socket), fmt.Sprintf("o%d.sock", i))
			tt.prepare(t, other.cfg.Socket)
			ln, err := other.listen()
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.NoFileExists(t, filepath.Join(other.cfg.Socket, "s"))
				return
			}
			require.NoError(t, err)
			defer ln.Close()
			fi, err := os.Lstat(other.cfg.Socket)
			require.NoError(t, err)
			assert.Equal(t, os.ModeSocket, fi.Mode().Type())
			// No group by that name here: the socket is the owner's alone.
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			conn, err := net.Dial("unix", other.cfg.Socket)
			require.NoError(t, err)
			conn.Close()
		})
	}
	// The regular file was not touched.
	b, err := os.ReadFile(filepath.Join(filepath.Dir(h.socket), "o2.sock"))
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
	// No temporary socket directory is left behind.
	entries, err := os.ReadDir(filepath.Dir(h.socket))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".s"), e.Name())
	}
}

func TestSocketAccess(t *testing.T) {
	if sock := os.Getenv(dialEnv); sock != "" {
		// The child: dial as whoever we were started as, and say.
		conn, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Println("DIAL:", err)
			return
		}
		conn.Close()
		fmt.Println("DIAL: ok")
		return
	}
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: the socket's group and mode need root to set up and to check as another user")
	}
	g, err := user.LookupGroup(testGroup)
	if err != nil {
		out, err := exec.Command("groupadd", "--system", testGroup).CombinedOutput()
		require.NoError(t, err, "groupadd %s: %s", testGroup, out)
		g, err = user.LookupGroup(testGroup)
		require.NoError(t, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	require.NoError(t, err)

	h := newAPIHarness(t, testGroup)
	// The run directory is 0700 from MkdirTemp: open it, so that only
	// the socket's own mode decides who may connect.
	require.NoError(t, os.Chmod(filepath.Dir(filepath.Dir(h.socket)), 0o755))

	fi, err := os.Lstat(h.socket)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, uint32(0), st.Uid)
	assert.Equal(t, uint32(gid), st.Gid)
	di, err := os.Stat(filepath.Dir(h.socket))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), di.Mode().Perm())

	bin := childBinary(t)
	const nobody = 65534
	tests := []struct {
		name string
		gid  uint32
		want string
	}{
		{"nobody is refused", nobody, "permission denied"},
		{"a member of the group connects", uint32(gid), "DIAL: ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, "-test.run=^TestSocketAccess$")
			cmd.Env = append(os.Environ(), dialEnv+"="+h.socket)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: tt.gid}}
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), tt.want)
		})
	}
}

// childBinary copies the test binary where user nobody may run it.
func childBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "wb")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	in, err := os.Open(self)
	require.NoError(t, err)
	defer in.Close()
	bin := filepath.Join(dir, "agent.test")
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, errors.Join(err, out.Close()))
	return bin
}
