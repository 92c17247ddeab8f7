package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peer plays QEMU's side of a QMP connection, line by line, as a test
// scripts it.
type peer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func newPair(t *testing.T) (*peer, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return &peer{t: t, conn: a, r: bufio.NewReader(a)}, b
}

func (p *peer) send(line string) {
	_, err := io.WriteString(p.conn, line+"\r\n")
	if err != nil {
		p.t.Errorf("peer send: %v", err)
	}
}

type sentCommand struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func (p *peer) recv() sentCommand {
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		p.t.Errorf("peer recv: %v", err)
		return sentCommand{}
	}
	var c sentCommand
	if err := json.Unmarshal(line, &c); err != nil {
		p.t.Errorf("peer recv %q: %v", line, err)
	}
	return c
}

// negotiate runs the peer's half of Handshake.
func (p *peer) negotiate() {
	p.send(strings.TrimSpace(greeting72))
	c := p.recv()
	if c.Execute != "qmp_capabilities" {
		p.t.Errorf("first command %q, want qmp_capabilities", c.Execute)
	}
	p.send(`{"return": {}, "id": ` + string(c.ID) + `}`)
}

func connect(t *testing.T) (*peer, *Client) {
	p, conn := newPair(t)
	go p.negotiate()
	c, err := Handshake(context.Background(), conn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return p, c
}

func TestHandshake(t *testing.T) {
	_, c := connect(t)
	assert.Equal(t, 7, c.Greeting().Version.Major)
	assert.Equal(t, 2, c.Greeting().Version.Minor)
	assert.Nil(t, c.Err())
}

func TestExecuteDeliversEventsAndResult(t *testing.T) {
	p, c := connect(t)
	go func() {
		cmd := p.recv()
		if cmd.Execute != "query-status" {
			t.Errorf("got %q", cmd.Execute)
		}
		// An event may arrive between a command and its reply.
		p.send(`{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "STOP"}`)
		p.send(`{"return": {"status": "paused", "singlestep": false, "running": false}, "id": ` + string(cmd.ID) + `}`)
	}()
	st, err := c.QueryStatus(context.Background())
	require.NoError(t, err)
	assert.Equal(t, Status{Running: false, Status: "paused"}, st)
	ev := <-c.Events()
	assert.Equal(t, "STOP", ev.Name)
}

func TestExecuteMatchesRepliesByID(t *testing.T) {
	p, c := connect(t)
	const n = 4
	go func() {
		var cmds []sentCommand
		for range n {
			cmds = append(cmds, p.recv())
		}
		// Answer in reverse order; each reply carries its command's name.
		for i := n - 1; i >= 0; i-- {
			p.send(`{"return": {"name": "` + cmds[i].Execute + `"}, "id": ` + string(cmds[i].ID) + `}`)
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "cmd-" + string(rune('a'+i))
			var got struct {
				Name string `json:"name"`
			}
			err := c.Execute(context.Background(), name, nil, &got)
			assert.NoError(t, err)
			assert.Equal(t, name, got.Name)
		}()
	}
	wg.Wait()
}

func TestExecuteReturnsQMPError(t *testing.T) {
	p, c := connect(t)
	go func() {
		cmd := p.recv()
		p.send(`{"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}, "id": ` + string(cmd.ID) + `}`)
	}()
	err := c.Execute(context.Background(), "bogus", nil, nil)
	var qe *Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "CommandNotFound", qe.Class)
}

func TestPeerCloseEndsEverything(t *testing.T) {
	p, c := connect(t)
	go func() {
		p.recv()
		_ = p.conn.Close()
	}()
	err := c.Execute(context.Background(), "query-status", nil, nil)
	require.ErrorIs(t, err, ErrClosed)
	<-c.Done()
	assert.ErrorIs(t, c.Err(), io.EOF)
	_, open := <-c.Events()
	assert.False(t, open, "events channel must be closed")
	// Later commands fail at once.
	require.ErrorIs(t, c.Execute(context.Background(), "cont", nil, nil), ErrClosed)
}

func TestQuitToleratesCloseWithoutReply(t *testing.T) {
	p, c := connect(t)
	go func() {
		cmd := p.recv()
		if cmd.Execute != "quit" {
			t.Errorf("got %q", cmd.Execute)
		}
		_ = p.conn.Close()
	}()
	require.NoError(t, c.Quit(context.Background()))
}

func TestExecuteHonoursContext(t *testing.T) {
	p, c := connect(t)
	go func() { _, _ = io.Copy(io.Discard, p.conn) }() // read commands, never answer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Execute(ctx, "query-status", nil, nil) }()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestMalformedLineEndsConnection(t *testing.T) {
	p, c := connect(t)
	go p.send(`{"unexpected": true}`)
	<-c.Done()
	assert.ErrorIs(t, c.Err(), ErrMalformed)
}

func TestReplyWithoutIDEndsConnection(t *testing.T) {
	p, c := connect(t)
	go p.send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
	<-c.Done()
	assert.ErrorIs(t, c.Err(), ErrMalformed)
}

func TestOverlongLineEndsConnection(t *testing.T) {
	p, c := connect(t)
	go func() {
		// Without a newline the line never ends; the reader must give up
		// at MaxLineBytes rather than buffer forever.
		chunk := strings.Repeat("x", 64<<10)
		for range MaxLineBytes/len(chunk) + 2 {
			if _, err := io.WriteString(p.conn, chunk); err != nil {
				return
			}
		}
	}()
	<-c.Done()
	assert.ErrorIs(t, c.Err(), ErrTooLong)
}

func TestHandshakeRejects(t *testing.T) {
	tests := []struct {
		name   string
		script func(p *peer)
		want   error
	}{
		{"response before greeting", func(p *peer) { p.send(`{"return": {}, "id": 0}`) }, ErrMalformed},
		{"garbage greeting", func(p *peer) { p.send(`hello`) }, ErrMalformed},
		{"capabilities refused", func(p *peer) {
			p.send(strings.TrimSpace(greeting72))
			p.recv()
			p.send(`{"error": {"class": "GenericError", "desc": "no"}, "id": 0}`)
		}, nil},
		{"wrong reply id", func(p *peer) {
			p.send(strings.TrimSpace(greeting72))
			p.recv()
			p.send(`{"return": {}, "id": 9}`)
		}, ErrMalformed},
		{"closed", func(p *peer) { _ = p.conn.Close() }, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, conn := newPair(t)
			go tt.script(p)
			c, err := Handshake(context.Background(), conn)
			require.Error(t, err)
			assert.Nil(t, c)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			var qe *Error
			if tt.name == "capabilities refused" {
				assert.True(t, errors.As(err, &qe))
			}
		})
	}
}

func TestHandshakeHonoursContext(t *testing.T) {
	_, conn := newPair(t) // the peer never speaks
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := Handshake(ctx, conn)
		done <- err
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}
