package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
)

const gib = uint64(1) << 30

// testAgent is a real Agent's API on a real unix socket (its reconcile
// loop does not run: nothing here spawns a VMM), and a Client whose every
// request and response is checked against the agent's openapi.json.
type testAgent struct {
	a *agent.Agent
	c *Client
}

func newTestAgent(t *testing.T) *testAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "wc") // unix socket paths are short
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "agent.sock")
	a, err := agent.New(agent.Config{
		StateDir: t.TempDir(), RunDir: dir, Socket: socket, Wisp: "/bin/false",
		Host: model.Capacity{CPUs: 2, MemoryBytes: 2 * gib},
	})
	require.NoError(t, err)
	ln, err := net.Listen("unix", socket)
	require.NoError(t, err)
	srv := &http.Server{Handler: a.Handler()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// Close, not Shutdown: followed streams end with the connection.
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, http.ErrServerClosed)
		require.NoError(t, a.Close())
	})
	c := New(socket)
	c.http.Transport = newContractCheck(t, c.http.Transport)
	return &testAgent{a: a, c: c}
}

func smallSpec() model.Spec { return model.Spec{CPUs: 1, MemoryBytes: 64 << 20} }

// --- the contract check (as in agent's tests: test code cannot be shared
// across the two packages) ---

type ctxKey int

// breaksContract marks a request a test sends on purpose although
// openapi.json says it is wrong: the check insists the document refuses it.
const breaksContract ctxKey = iota

type contractCheck struct {
	t      *testing.T
	router routers.Router
	next   http.RoundTripper
}

func newContractCheck(t *testing.T, next http.RoundTripper) *contractCheck {
	doc, err := openapi3.NewLoader().LoadFromData(agent.OpenAPIDocument())
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()))
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return &contractCheck{t: t, router: router, next: next}
}

func (c *contractCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	ctx := req.Context()
	what := req.Method + " " + req.URL.RequestURI()
	route, params, err := c.router.FindRoute(req)
	require.NoError(c.t, err, "%s: no such route in openapi.json", what)
	in := &openapi3filter.RequestValidationInput{
		Request: req.Clone(ctx), PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	in.Request.Body = io.NopCloser(bytes.NewReader(body))
	verr := openapi3filter.ValidateRequest(ctx, in)
	if ctx.Value(breaksContract) != nil {
		assert.Error(c.t, verr, "%s %s: the document accepts a request the test sends as bad input", what, body)
	} else {
		assert.NoError(c.t, verr, "%s %s: request breaks openapi.json", what, body)
	}
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		// A stream (logs, followed events): status, headers and media
		// type only; reading it here would block.
		out.Options.ExcludeResponseBody = true
		r := route.Operation.Responses.Status(resp.StatusCode)
		if assert.NotNil(c.t, r, "%s: status %d not documented", what, resp.StatusCode) {
			assert.NotNil(c.t, r.Value.Content.Get(ct), "%s: %s not documented", what, ct)
		}
		assert.NoError(c.t, openapi3filter.ValidateResponse(ctx, out), "%s: response breaks openapi.json", what)
		return resp, nil
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	out.SetBodyBytes(rb)
	assert.NoError(c.t, openapi3filter.ValidateResponse(ctx, out), "%s → %d %s: response breaks openapi.json", what, resp.StatusCode, rb)
	return resp, nil
}

// --- tests ---

func TestSocketFromEnv(t *testing.T) {
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/tmp/a.sock", "/tmp/b.sock", "/tmp/a.sock"},
		{"then the environment", "", "/tmp/b.sock", "/tmp/b.sock"},
		{"then the default", "", "", DefaultSocket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(SocketEnv, tt.env)
			assert.Equal(t, tt.want, SocketFromEnv(tt.flag))
		})
	}
}

func TestNoAgent(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())

	for _, socket := range []string{filepath.Join(dir, "missing.sock"), stale} {
		c := New(socket)
		_, err := c.List(context.Background())
		require.ErrorIs(t, err, ErrNoAgent)
		assert.EqualError(t, err, "no agent at "+socket+": start one with `wisp agent` (or give --socket / $WISP_SOCKET)")
		_, err = c.Console(context.Background(), "web1", false)
		require.ErrorIs(t, err, ErrNoAgent)
	}
}

func TestClientLifecycle(t *testing.T) {
	ta := newTestAgent(t)
	ctx := context.Background()
	c := ta.c

	vms, err := c.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, vms)

	vm, err := c.Create(ctx, agent.CreateRequest{Name: "web1", Spec: smallSpec(), Labels: map[string]string{"team": "a"}})
	require.NoError(t, err)
	assert.Equal(t, "web1", vm.Name)
	assert.Equal(t, model.ObservedStopped, vm.Observed)
	_, err = c.Create(ctx, agent.CreateRequest{Name: "db1", Spec: smallSpec()})
	require.NoError(t, err)

	vms, err = c.List(ctx)
	require.NoError(t, err)
	require.Len(t, vms, 2)
	assert.Equal(t, "db1", vms[0].Name)

	vm, err = c.Get(ctx, "web1")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"team": "a"}, vm.Labels)

	// NoWait: the desired state is recorded and the answer comes at
	// once (no reconcile loop runs here to get the VM there).
	vm, err = c.Start(ctx, "db1", agent.OpOptions{NoWait: true})
	require.NoError(t, err)
	assert.Equal(t, model.DesiredRunning, vm.Desired)

	host, err := c.Host(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, host.CPUs)
	assert.Equal(t, 1, host.UsedCPUs)
	assert.Equal(t, 2, host.VMs)

	require.NoError(t, c.Delete(ctx, "web1", false))
	_, err = c.Get(ctx, "web1")
	require.ErrorIs(t, err, model.ErrNotFound)

	evs, err := c.Events(ctx, store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, model.EventCreated, evs[0].Kind)
	assert.Equal(t, model.EventDeleted, evs[1].Kind)

	evs, err = c.Events(ctx, store.EventQuery{AfterSeq: evs[0].Seq, Limit: 1})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Greater(t, evs[0].Seq, uint64(1))
}

func TestClientErrors(t *testing.T) {
	ta := newTestAgent(t)
	ctx := context.Background()
	c := ta.c
	_, err := c.Create(ctx, agent.CreateRequest{Name: "taken", Spec: smallSpec()})
	require.NoError(t, err)
	_, err = c.Create(ctx, agent.CreateRequest{Name: "huge", Spec: model.Spec{CPUs: 1, MemoryBytes: 4 * gib}})
	require.NoError(t, err)
	_, err = c.Create(ctx, agent.CreateRequest{Name: "running1", Spec: smallSpec()})
	require.NoError(t, err)
	_, err = ta.a.Store().UpdateVM("running1", func(vm *model.VM) ([]model.Event, error) {
		return vm.SetObserved(model.ObservedRunning, "stands for a running VMM"), nil
	})
	require.NoError(t, err)

	tests := []struct {
		name     string
		call     func(ctx context.Context) error
		breaks   bool
		sentinel error
		status   int
		code     string
		field    string
		message  string
	}{
		{name: "get unknown", call: func(ctx context.Context) error { _, err := c.Get(ctx, "nope"); return err },
			sentinel: model.ErrNotFound, status: 404, code: "not_found", message: "vm nope not found"},
		{name: "delete unknown", call: func(ctx context.Context) error { return c.Delete(ctx, "nope", true) },
			sentinel: model.ErrNotFound, status: 404, code: "not_found"},
		{name: "name with a slash", call: func(ctx context.Context) error { _, err := c.Get(ctx, "a/b"); return err },
			sentinel: model.ErrInvalid, status: 400, code: "invalid", field: "name"},
		{name: "create twice", call: func(ctx context.Context) error {
			_, err := c.Create(ctx, agent.CreateRequest{Name: "taken", Spec: smallSpec()})
			return err
		}, sentinel: model.ErrExists, status: 409, code: "exists"},
		{name: "bad name", call: func(ctx context.Context) error {
			_, err := c.Create(ctx, agent.CreateRequest{Name: "Web_1", Spec: smallSpec()})
			return err
		}, breaks: true, sentinel: model.ErrInvalid, status: 400, code: "invalid", field: "name"},
		{name: "bad spec", call: func(ctx context.Context) error {
			_, err := c.Create(ctx, agent.CreateRequest{Name: "tiny", Spec: model.Spec{CPUs: 1, MemoryBytes: 1 << 20}})
			return err
		}, breaks: true, sentinel: model.ErrInvalid, status: 400, code: "invalid", field: "memory_bytes"},
		{name: "pause a stopped vm", call: func(ctx context.Context) error { _, err := c.Pause(ctx, "taken", agent.OpOptions{}); return err },
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot pause: vm taken is stopped"},
		{name: "resume a stopped vm", call: func(ctx context.Context) error {
			_, err := c.Resume(ctx, "taken", agent.OpOptions{NoWait: true})
			return err
		},
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot resume: vm taken is stopped"},
		{name: "restart a stopped vm", call: func(ctx context.Context) error { _, err := c.Restart(ctx, "taken", agent.OpOptions{}); return err },
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot restart: vm taken is stopped"},
		{name: "stop a stopped vm", call: func(ctx context.Context) error {
			_, err := c.Stop(ctx, "taken", agent.OpOptions{Force: true})
			return err
		}, sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot stop: vm taken is stopped"},
		{name: "no room on the host", call: func(ctx context.Context) error { _, err := c.Start(ctx, "huge", agent.OpOptions{}); return err },
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot start vm huge: not enough memory: vm needs 4.0 GiB, 1.9 GiB free of 2.0 GiB"},
		{name: "delete a running vm", call: func(ctx context.Context) error { return c.Delete(ctx, "running1", false) },
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "cannot delete: vm running1 is running"},
		{name: "negative stop timeout", call: func(ctx context.Context) error {
			_, err := c.Stop(ctx, "running1", agent.OpOptions{Timeout: -1})
			return err
		}, breaks: true, sentinel: model.ErrInvalid, status: 400, code: "invalid", field: "timeout_seconds"},
		{name: "logs of unknown vm", call: func(ctx context.Context) error { return c.Logs(ctx, "nope", false, -1, io.Discard) },
			sentinel: model.ErrNotFound, status: 404, code: "not_found"},
		{name: "console of a stopped vm", call: func(ctx context.Context) error { _, err := c.Console(ctx, "taken", true); return err },
			sentinel: model.ErrConflict, status: 409, code: "conflict", message: "vm taken is stopped: it has a console while it runs (start it first)"},
		{name: "console of unknown vm", call: func(ctx context.Context) error { _, err := c.Console(ctx, "nope", false); return err },
			sentinel: model.ErrNotFound, status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.breaks {
				ctx = context.WithValue(ctx, breaksContract, true)
			}
			err := tt.call(ctx)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.sentinel)
			for _, other := range []error{model.ErrNotFound, model.ErrExists, model.ErrConflict, model.ErrInvalid} {
				if other != tt.sentinel {
					assert.NotErrorIs(t, err, other)
				}
			}
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tt.status, e.Status)
			assert.Equal(t, tt.code, e.Code)
			assert.Equal(t, tt.field, e.Field)
			if tt.message != "" {
				assert.Equal(t, tt.message, e.Message)
				assert.EqualError(t, err, tt.message)
			}
			// The agent is still there.
			_, err = c.Host(context.Background())
			require.NoError(t, err)
		})
	}
}

func TestFollowEvents(t *testing.T) {
	ta := newTestAgent(t)
	ctx := context.Background()
	_, err := ta.c.Create(ctx, agent.CreateRequest{Name: "first", Spec: smallSpec()})
	require.NoError(t, err)

	// With a limit the stream ends by itself: one event of history, two
	// that happen while it is followed.
	var got []string
	err = ta.c.FollowEvents(ctx, store.EventQuery{Limit: 3}, func(ev model.Event) error {
		got = append(got, ev.VM+" "+ev.Kind)
		switch len(got) {
		case 1:
			_, err := ta.c.Create(ctx, agent.CreateRequest{Name: "second", Spec: smallSpec()})
			return err
		case 2:
			return ta.c.Delete(ctx, "first", false)
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"first created", "second created", "first deleted"}, got)

	// fn's error ends the stream and comes back as is.
	stop := errors.New("seen enough")
	err = ta.c.FollowEvents(ctx, store.EventQuery{VM: "second"}, func(model.Event) error { return stop })
	assert.ErrorIs(t, err, stop)

	// The caller's context ends an open stream.
	cctx, cancel := context.WithCancel(ctx)
	err = ta.c.FollowEvents(cctx, store.EventQuery{VM: "second"}, func(model.Event) error {
		cancel()
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestLogs(t *testing.T) {
	ta := newTestAgent(t)
	ctx := context.Background()
	_, err := ta.c.Create(ctx, agent.CreateRequest{Name: "web1", Spec: smallSpec()})
	require.NoError(t, err)
	path, err := ta.a.ConsoleLog("web1")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, []byte("booting\nlogin: "), 0o600))

	for _, tt := range []struct {
		tail int
		want string
	}{{-1, "booting\nlogin: "}, {7, "login: "}, {0, ""}} {
		var buf bytes.Buffer
		require.NoError(t, ta.c.Logs(ctx, "web1", false, tt.tail, &buf))
		assert.Equal(t, tt.want, buf.String(), "tail %d", tt.tail)
	}

	// Following: appended output arrives; cancelling ends it with nil.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ta.c.Logs(cctx, "web1", true, 7, pw) }()
	br := bufio.NewReader(pr)
	want := "login: "
	got := make([]byte, len(want))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, want, string(got))
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("root\n")
	require.NoError(t, errors.Join(err, f.Close()))
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "root\n", line)
	cancel()
	pr.Close() // in case the copy is blocked writing
	assert.NoError(t, <-done)
}

// TestConsoleKeepsBufferedBytes checks the client's side of the upgrade:
// console bytes that arrive in the same read as the 101 answer must not be
// lost. A hand-written server sends both in one write, which the agent
// cannot be made to do on purpose.
func TestConsoleKeepsBufferedBytes(t *testing.T) {
	dir, err := os.MkdirTemp("", "wu")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", socket)
	require.NoError(t, err)
	defer ln.Close()
	gotReq := make(chan *http.Request, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		gotReq <- req
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: wisp-console\r\n\r\nlogin: ")
		// Then echo what the client types.
		_, _ = io.Copy(conn, br)
	}()

	conn, err := New(socket).Console(context.Background(), "web1", true)
	require.NoError(t, err)
	defer conn.Close()
	req := <-gotReq
	assert.Equal(t, "/v1/vms/web1/console", req.URL.Path)
	assert.Equal(t, "true", req.URL.Query().Get("write"))
	assert.Equal(t, "Upgrade", req.Header.Get("Connection"))
	assert.Equal(t, agent.ConsoleProtocol, req.Header.Get("Upgrade"))

	got := make([]byte, len("login: "))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	assert.Equal(t, "login: ", string(got))
	_, err = conn.Write([]byte("root\n"))
	require.NoError(t, err)
	got = make([]byte, len("root\n"))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	assert.Equal(t, "root\n", string(got))
}

func TestErrorFromNonJSONAnswer(t *testing.T) {
	resp := &http.Response{StatusCode: 502, Status: "502 Bad Gateway", Body: io.NopCloser(strings.NewReader("upstream gone\n"))}
	err := readError(resp)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 502, e.Status)
	assert.Equal(t, "http_502", e.Code)
	assert.EqualError(t, err, "agent answered 502 Bad Gateway: upstream gone")
	for _, s := range []error{model.ErrNotFound, model.ErrExists, model.ErrConflict, model.ErrInvalid} {
		assert.NotErrorIs(t, err, s)
	}
}
