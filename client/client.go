// Package client talks to a wisp host agent (`wisp agent`) over its unix
// socket: the Go side of the API that agent/openapi.json describes, for
// `wisp vm ...` and for programs that embed wisp.
//
// Errors the agent answers with are *Error values that match
// agent/model's sentinels, so callers write
// errors.Is(err, model.ErrNotFound) whether they call the agent in
// process or through this client.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
)

// DefaultSocket is where `wisp agent` listens unless told otherwise.
const DefaultSocket = "/run/wisp/agent.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "WISP_SOCKET"

// ErrNoAgent is a socket nobody answers on.
var ErrNoAgent = errors.New("no agent")

// SocketFromEnv resolves the socket to use: flag when given, else
// $WISP_SOCKET, else DefaultSocket.
func SocketFromEnv(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return DefaultSocket
}

// baseURL is what requests are addressed to; the transport dials the
// socket whatever the host says.
const baseURL = "http://wisp"

// Client is a connection to one agent. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// New returns a client for the agent listening on socket. Nothing is
// dialed until the first call.
func New(socket string) *Client {
	c := &Client{socket: socket}
	c.http = &http.Client{
		Transport: &http.Transport{
			DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
			MaxIdleConns:       4,
			IdleConnTimeout:    30 * time.Second,
			DisableCompression: true,
		},
		// The API never redirects; one that did would be a surprise
		// worth seeing rather than following.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// Socket is the agent socket this client talks to.
func (c *Client) Socket() string { return c.socket }

// dial connects to the socket, saying in one line what to do when no
// agent is there.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err == nil {
		return conn, nil
	}
	return nil, &dialError{c.dialMessage(err)}
}

// dialError marks a failure to reach the socket, which already says
// everything and needs no request line in front of it.
type dialError struct{ err error }

func (d *dialError) Error() string { return d.err.Error() }
func (d *dialError) Unwrap() error { return d.err }

func (c *Client) dialMessage(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return &NoAgentError{Socket: c.socket, Err: err}
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("agent socket %s: permission denied: run as root or as a member of the socket's group (%s): %w", c.socket, agent.DefaultGroup, os.ErrPermission)
	}
	return fmt.Errorf("agent socket %s: %w", c.socket, err)
}

// NoAgentError is a socket that is not there or that nobody answers on;
// it matches ErrNoAgent and says how to fix it.
type NoAgentError struct {
	Socket string
	Err    error // what dialing said
}

func (e *NoAgentError) Error() string {
	return fmt.Sprintf("no agent at %s: start one with `wisp agent` (or give --socket / $%s)", e.Socket, SocketEnv)
}

// Is makes errors.Is(err, ErrNoAgent) true.
func (e *NoAgentError) Is(target error) bool { return target == ErrNoAgent }

func (e *NoAgentError) Unwrap() error { return e.Err }

// Error is a refusal from the agent: its HTTP status and error body.
type Error struct {
	Status  int
	Code    string
	Message string
	// Field names the request field at fault (Code "invalid").
	Field string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("agent: %d %s", e.Status, e.Code)
	}
	return e.Message
}

// Is matches agent/model's sentinels the way the agent's own errors do.
func (e *Error) Is(target error) bool {
	switch target {
	case model.ErrNotFound:
		return e.Code == agent.CodeNotFound
	case model.ErrExists:
		return e.Code == agent.CodeExists
	case model.ErrConflict:
		return e.Code == agent.CodeConflict
	case model.ErrInvalid:
		return e.Code == agent.CodeInvalid || e.Code == agent.CodeBadRequest
	}
	return false
}

// request sends one API request with body (nil, or a value to send as
// JSON) and returns the response when its status is one of ok; any other
// status is read into an *Error.
func (c *Client) request(ctx context.Context, method, path string, query url.Values, body any, ok ...int) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("agent request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// transportError drops net/http's "Get "http://wisp/...":" prefix, which
// names a host that does not exist, from a failure to reach the agent.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var de *dialError
	if errors.As(err, &de) {
		return de.err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("agent at %s: %w", c.socket, ue.Err)
	}
	return err
}

// readError turns a refusal into an *Error.
func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body agent.ErrorBody
	if err := json.Unmarshal(b, &body); err != nil || body.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: fmt.Sprintf("agent answered %s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	return &Error{Status: resp.StatusCode, Code: body.Code, Message: body.Message, Field: body.Field}
}

// call sends a request and decodes the JSON answer into out (when not nil).
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body, out any, ok ...int) error {
	resp, err := c.request(ctx, method, path, query, body, ok...)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent answer to %s %s: %w", method, path, err)
	}
	return nil
}

func vmPath(name string, rest ...string) string {
	p := "/v1/vms/" + url.PathEscape(name)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// List returns every VM, sorted by name.
func (c *Client) List(ctx context.Context) ([]agent.VMInfo, error) {
	var vms []agent.VMInfo
	err := c.call(ctx, http.MethodGet, "/v1/vms", nil, nil, &vms, http.StatusOK)
	return vms, err
}

// Get returns one VM.
func (c *Client) Get(ctx context.Context, name string) (agent.VMInfo, error) {
	var vm agent.VMInfo
	err := c.call(ctx, http.MethodGet, vmPath(name), nil, nil, &vm, http.StatusOK)
	return vm, err
}

// Create records a new VM; with req.Start it also starts it and returns
// once it runs.
func (c *Client) Create(ctx context.Context, req agent.CreateRequest) (agent.VMInfo, error) {
	var vm agent.VMInfo
	err := c.call(ctx, http.MethodPost, "/v1/vms", nil, req, &vm, http.StatusCreated)
	return vm, err
}

// Delete removes a stopped VM; force stops a running one first.
func (c *Client) Delete(ctx context.Context, name string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.call(ctx, http.MethodDelete, vmPath(name), q, nil, nil, http.StatusNoContent)
}

// Do applies op (start, stop, pause, resume, restart) to the VM. It
// returns once the VM got where op sends it, or at once with
// opts.NoWait.
func (c *Client) Do(ctx context.Context, name string, op model.Op, opts agent.OpOptions) (agent.VMInfo, error) {
	var q url.Values
	if opts.NoWait {
		q = url.Values{"wait": {"false"}}
	}
	var body *agent.OpRequest
	if opts.Force || opts.Timeout != 0 {
		body = &agent.OpRequest{Force: opts.Force, TimeoutSeconds: opts.Timeout.Seconds()}
	}
	var vm agent.VMInfo
	var err error
	if body == nil {
		err = c.call(ctx, http.MethodPost, vmPath(name, string(op)), q, nil, &vm, http.StatusOK, http.StatusAccepted)
	} else {
		err = c.call(ctx, http.MethodPost, vmPath(name, string(op)), q, body, &vm, http.StatusOK, http.StatusAccepted)
	}
	return vm, err
}

// Start starts a stopped or crashed VM.
func (c *Client) Start(ctx context.Context, name string, opts agent.OpOptions) (agent.VMInfo, error) {
	return c.Do(ctx, name, model.OpStart, opts)
}

// Stop stops a VM: the power button, forced after opts.Timeout, or at
// once with opts.Force.
func (c *Client) Stop(ctx context.Context, name string, opts agent.OpOptions) (agent.VMInfo, error) {
	return c.Do(ctx, name, model.OpStop, opts)
}

// Pause pauses a running VM.
func (c *Client) Pause(ctx context.Context, name string, opts agent.OpOptions) (agent.VMInfo, error) {
	return c.Do(ctx, name, model.OpPause, opts)
}

// Resume resumes a paused VM.
func (c *Client) Resume(ctx context.Context, name string, opts agent.OpOptions) (agent.VMInfo, error) {
	return c.Do(ctx, name, model.OpResume, opts)
}

// Restart stops a running VM and starts it again.
func (c *Client) Restart(ctx context.Context, name string, opts agent.OpOptions) (agent.VMInfo, error) {
	return c.Do(ctx, name, model.OpRestart, opts)
}

// Host reports the host's capacity and what its VMs hold.
func (c *Client) Host(ctx context.Context) (agent.HostInfo, error) {
	var h agent.HostInfo
	err := c.call(ctx, http.MethodGet, "/v1/host", nil, nil, &h, http.StatusOK)
	return h, err
}

func eventValues(q store.EventQuery, follow bool) url.Values {
	v := url.Values{}
	if q.VM != "" {
		v.Set("vm", q.VM)
	}
	if q.AfterSeq > 0 {
		v.Set("after", strconv.FormatUint(q.AfterSeq, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if follow {
		v.Set("follow", "true")
	}
	return v
}

// Events returns the events matching q, oldest first.
func (c *Client) Events(ctx context.Context, q store.EventQuery) ([]model.Event, error) {
	var evs []model.Event
	err := c.call(ctx, http.MethodGet, "/v1/events", eventValues(q, false), nil, &evs, http.StatusOK)
	return evs, err
}

// FollowEvents calls fn with each event matching q, first the history,
// then new ones as they happen, until ctx ends (its error is returned),
// fn fails (its error is returned), or q.Limit events were seen (nil).
func (c *Client) FollowEvents(ctx context.Context, q store.EventQuery, fn func(model.Event) error) error {
	resp, err := c.request(ctx, http.MethodGet, "/v1/events", eventValues(q, true), nil, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), agent.MaxBodyBytes)
	seen := 0
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var ev model.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("agent event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
		seen++
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent event stream: %w", err)
	}
	if q.Limit > 0 && seen >= q.Limit {
		return nil
	}
	return fmt.Errorf("agent event stream ended (is the agent stopping?): %w", io.ErrUnexpectedEOF)
}

// Logs copies the VM's console log to w: its last tail bytes when tail >
// 0 (tail < 0 means all), and with follow what it prints next, until ctx
// ends (nil) or the VM is deleted.
func (c *Client) Logs(ctx context.Context, name string, follow bool, tail int, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	if tail >= 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	resp, err := c.request(ctx, http.MethodGet, vmPath(name, "logs"), q, nil, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil // the caller stopped following
	}
	if err != nil {
		return fmt.Errorf("vm %s console log: %w", name, err)
	}
	return nil
}

// Console attaches to the VM's serial console: the returned connection
// carries its bytes both ways (write asks to be the viewer that types).
// ctx bounds the attaching only; close the connection to detach.
func (c *Client) Console(ctx context.Context, name string, write bool) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	// The handshake is bounded by ctx; the stream after it is not.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	q := url.Values{}
	if write {
		q.Set("write", "true")
	}
	req, err := http.NewRequest(http.MethodGet, baseURL+vmPath(name, "console")+"?"+q.Encode(), nil)
	if err != nil {
		stop()
		conn.Close()
		return nil, fmt.Errorf("console request: %w", err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", agent.ConsoleProtocol)
	br := bufio.NewReader(conn)
	resp, err := handshake(conn, br, req)
	if !stop() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, readError(resp)
	}
	// The reader may already hold the first console bytes, sent right
	// after the 101.
	return &bufferedConn{Conn: conn, r: br}, nil
}

func handshake(conn net.Conn, br *bufio.Reader, req *http.Request) (*http.Response, error) {
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("console: read the agent's answer: %w", err)
	}
	return resp, nil
}

// bufferedConn reads through the reader that parsed the HTTP answer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
