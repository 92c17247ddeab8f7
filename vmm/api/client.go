package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client talks to one VM's control socket.
type Client struct {
	path string
	http *http.Client
}

// baseURL is what requests are addressed to; the transport ignores the
// host and dials the socket.
const baseURL = "http://wisp"

// Dial returns a client for the socket at path. It connects lazily, once
// per request: clients are made per call and never closed, so nothing is
// left open between requests.
func Dial(path string) *Client {
	c := &Client{path: path}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.dial(ctx)
		},
		DisableKeepAlives: true,
	}}
	return c
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", c.path)
}

// Status returns the VM's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Pause pauses the guest. A VM that is not running gives an error matching
// vmm.ErrBadTransition.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/pause", nil, nil)
}

// Resume resumes a paused guest.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/resume", nil, nil)
}

// Stop stops the VM and returns its status once it has ended. ctx should
// outlast opts.Timeout: the server answers only when the stop is done.
func (c *Client) Stop(ctx context.Context, opts StopOptions) (Status, error) {
	req := stopRequest{Force: opts.Force, TimeoutSeconds: opts.Timeout.Seconds()}
	var st Status
	err := c.do(ctx, http.MethodPost, "/v1/stop", req, &st)
	return st, err
}

// do sends a request with body (JSON, nil for none) and decodes a 200's
// body into out (nil: discarded).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("vm control socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// readError turns an error response into *Error.
func readError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	e := &Error{}
	if json.Unmarshal(body, e) != nil || e.Code == "" {
		e = &Error{Code: codeFor(resp.StatusCode), Message: strings.TrimSpace(string(body))}
		if e.Message == "" {
			e.Message = resp.Status
		}
	}
	e.Status = resp.StatusCode
	return e
}

// Console attaches to the VM's console and returns the raw stream: reads
// get the kept history and then live output; with write, what is written
// goes to the guest (without, it is dropped). ctx bounds connecting and
// the upgrade only; close the connection to detach. A second writer gets an
// error matching console.ErrConsoleBusy.
func (c *Client) Console(ctx context.Context, write bool) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("vm control socket %s: %w", c.path, err)
	}
	// Cancelling ctx during the handshake unblocks it through a deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	upgraded, err := upgrade(conn, write)
	if !stop() {
		err = ctx.Err()
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("attach console on %s: %w", c.path, err)
	}
	return upgraded, nil
}

func upgrade(conn net.Conn, write bool) (net.Conn, error) {
	url := baseURL + consolePath
	if write {
		url += "?write=1"
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleProtocol)
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	if !headerHasToken(resp.Header, "Upgrade", ConsoleProtocol) {
		return nil, fmt.Errorf("server switched to %q, not %s", resp.Header.Get("Upgrade"), ConsoleProtocol)
	}
	// Console output that came in with the 101 sits in br; it is read
	// first, then the connection directly.
	buffered, _ := br.Peek(br.Buffered())
	return &upgradedConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), conn)}, nil
}

// upgradedConn is a console connection whose first bytes were read ahead
// with the upgrade response.
type upgradedConn struct {
	net.Conn
	r io.Reader
}

func (c *upgradedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
