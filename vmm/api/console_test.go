package api

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

func newHub(t *testing.T) *console.Hub {
	hub := console.NewHub(1 << 10)
	t.Cleanup(func() { _ = hub.Close() })
	return hub
}

func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	_, err := w.Write([]byte(s))
	require.NoError(t, err)
}

func TestConsoleViewers(t *testing.T) {
	ctx := t.Context()
	hub := newHub(t)
	path, _ := serve(t, &fakeVM{state: vmm.StateRunning}, hub)
	c := Dial(path)
	write(t, hub, "boot log\n")

	watcher1, err := c.Console(ctx, false)
	require.NoError(t, err)
	defer watcher1.Close()
	watcher2, err := c.Console(ctx, false)
	require.NoError(t, err)
	defer watcher2.Close()
	writer, err := c.Console(ctx, true)
	require.NoError(t, err)
	defer writer.Close()

	viewers := []net.Conn{watcher1, watcher2, writer}
	for _, v := range viewers {
		assert.Equal(t, "boot log\n", readN(t, v, len("boot log\n")), "history first")
	}
	write(t, hub, "login: ")
	for _, v := range viewers {
		assert.Equal(t, "login: ", readN(t, v, len("login: ")), "then live output")
	}

	write(t, writer, "root\n")
	assert.Equal(t, "root\n", readN(t, hub.Input(), len("root\n")), "the writer types into the guest")

	_, err = c.Console(ctx, true)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusConflict, e.Status)
	assert.Equal(t, CodeConsoleBusy, e.Code)
	assert.ErrorIs(t, err, console.ErrConsoleBusy)

	// A watcher's keystrokes go nowhere: the guest reads only the writer's.
	write(t, watcher1, "junk")
	write(t, watcher2, "junk")
	write(t, writer, "ls\n")
	assert.Equal(t, "ls\n", readN(t, hub.Input(), len("ls\n")))

	// The watchers are still attached after typing.
	write(t, hub, "$ ")
	for _, v := range viewers {
		assert.Equal(t, "$ ", readN(t, v, 2))
	}

	// Closing the hub ends every stream.
	require.NoError(t, hub.Close())
	for _, v := range viewers {
		rest, err := io.ReadAll(v)
		require.NoError(t, err)
		assert.Empty(t, rest)
	}
	assert.Equal(t, http.StatusOK, request(t, path, "GET", "/v1/status", "", nil).status, "the server outlives its console")
}

func TestConsoleWriterLeavingFreesTheConsole(t *testing.T) {
	ctx := t.Context()
	hub := newHub(t)
	path, _ := serve(t, &fakeVM{state: vmm.StateRunning}, hub)
	c := Dial(path)

	first, err := c.Console(ctx, true)
	require.NoError(t, err)
	require.NoError(t, first.Close())

	// The server notices the hang-up on its own time; each try is a full
	// round trip, and one succeeds once it has. With no output from the
	// guest, a server that waited for a failed write would never free it.
	for {
		second, err := c.Console(ctx, true)
		if err == nil {
			write(t, second, "x")
			assert.Equal(t, "x", readN(t, hub.Input(), 1))
			require.NoError(t, second.Close())
			return
		}
		require.ErrorIs(t, err, console.ErrConsoleBusy)
	}
}

func TestServerCloseEndsConsoles(t *testing.T) {
	tests := []struct {
		name string
		stop func(*Server) error
	}{
		{"close", (*Server).Close},
		{"shutdown", func(s *Server) error { return s.Shutdown(context.Background()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newHub(t)
			path := filepath.Join(t.TempDir(), "api.sock")
			ln, err := Listen(path)
			require.NoError(t, err)
			srv := NewServer(&fakeVM{state: vmm.StateRunning}, hub, nil)
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()

			conn, err := Dial(path).Console(t.Context(), true)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, tt.stop(srv))
			require.ErrorIs(t, <-served, http.ErrServerClosed)
			rest, err := io.ReadAll(conn)
			require.NoError(t, err)
			assert.Empty(t, rest)

			v, err := hub.Attach(true)
			require.NoError(t, err, "the session's writer was released")
			require.NoError(t, v.Close())
			_, err = os.Lstat(path)
			assert.ErrorIs(t, err, fs.ErrNotExist, "the socket is gone")
		})
	}
}

// TestConsoleBytesAfterUpgrade checks that output arriving in the same read
// as the 101 response is not lost in the client's HTTP reader.
func TestConsoleBytesAfterUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	require.NoError(t, err)
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		req, err := http.ReadRequest(bufio.NewReader(conn))
		if err != nil {
			served <- err
			return
		}
		if req.URL.Query().Get("write") != "1" {
			_, err = conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			served <- err
			return
		}
		// One write: the response and the first output together.
		_, err = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: wisp-console\r\n\r\nhello, world"))
		served <- err
	}()

	conn, err := Dial(path).Console(t.Context(), true)
	require.NoError(t, err)
	defer conn.Close()
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	assert.Equal(t, "hello, world", string(got))
	require.NoError(t, <-served)
}

func TestConsoleUpgradeRefusedByAStranger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		_, _ = conn.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nupstream"))
	}()
	_, err = Dial(path).Console(t.Context(), false)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusBadGateway, e.Status)
	assert.Equal(t, CodeInternal, e.Code, "a status of no code of ours")
}
