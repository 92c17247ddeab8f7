package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

// fakeVM is a Controller with a state and the state rules of a real VM.
type fakeVM struct {
	mu    sync.Mutex
	state vmm.State
	fail  error // returned by every operation when set
	stops []StopOptions
}

var fakeStart = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func (f *fakeVM) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := Status{
		ID:            "vm-1",
		Name:          "web",
		State:         f.state.String(),
		Backend:       "tcg",
		BackendReason: "no /dev/kvm",
		PID:           4242,
		StartedAt:     fakeStart,
		UptimeSeconds: 12.5,
		Config:        json.RawMessage(`{"cpus":2}`),
	}
	if f.state == vmm.StateStopped {
		st.Exit = &Exit{Reason: "stopped", Detail: "stopped from the host", Code: 143}
	}
	return st
}

func (f *fakeVM) move(to vmm.State, from ...vmm.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	for _, s := range from {
		if f.state == s {
			f.state = to
			return nil
		}
	}
	return &vmm.TransitionError{From: f.state, To: to}
}

func (f *fakeVM) Pause() error  { return f.move(vmm.StatePaused, vmm.StateRunning) }
func (f *fakeVM) Resume() error { return f.move(vmm.StateRunning, vmm.StatePaused) }

func (f *fakeVM) Stop(_ context.Context, opts StopOptions) error {
	if err := f.move(vmm.StateStopped, vmm.StateRunning, vmm.StatePaused); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = append(f.stops, opts)
	return nil
}

func (f *fakeVM) lastStop() StopOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.stops) == 0 {
		return StopOptions{}
	}
	return f.stops[len(f.stops)-1]
}

// serve starts a server for ctl on a fresh socket and returns its path.
func serve(t *testing.T, ctl Controller, hub *console.Hub) (string, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	require.NoError(t, err)
	srv := NewServer(ctl, hub, nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, http.ErrServerClosed)
	})
	return path, srv
}

// rawHTTP is a plain HTTP client on the socket, for requests the Client
// would never send.
func rawHTTP(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func request(t *testing.T, path, method, route, body string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, baseURL+route, strings.NewReader(body))
	require.NoError(t, err)
	if body == "" {
		req.Body = nil
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := rawHTTP(path).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, b}
}

// decodeError reads an error response's body strictly.
func decodeError(t *testing.T, r response) Error {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var e Error
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&e), "body %q", r.body)
	require.NotEmpty(t, e.Message)
	return e
}

// readN reads exactly n bytes from r.
func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	_, err := io.ReadFull(r, buf)
	require.NoError(t, err)
	return string(buf)
}

var errBackend = errors.New("backend exploded")
