package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Listen errors; test with errors.Is.
var (
	// ErrNotSocket: something other than a socket is at the path.
	ErrNotSocket = errors.New("exists and is not a socket")
	// ErrSocketInUse: a server already answers on the socket.
	ErrSocketInUse = errors.New("socket in use by another server")
)

// maxSocketPath is the room in sockaddr_un.sun_path, with its NUL.
const maxSocketPath = 108

// Listen creates the unix socket path, readable and writable by its owner
// only (0600). A socket at path that nobody listens on (left by a VMM that
// died) is replaced; anything else there is refused. Closing the listener
// removes the socket, unless something else has taken the path meanwhile.
func Listen(path string) (net.Listener, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	// The socket is made in a private directory and linked into place once
	// its mode is 0600: bound at path directly it would be open to others
	// for a moment (bind honours only the process-wide umask, which other
	// goroutines' files depend on).
	dir, err := os.MkdirTemp(filepath.Dir(path), ".api-sock-")
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	defer d.Close()
	tmp := filepath.Join(dir, "s")
	bindAt := tmp
	if len(bindAt) >= maxSocketPath {
		// Too long for sun_path: reach the directory through its open fd.
		bindAt = "/proc/self/fd/" + strconv.Itoa(int(d.Fd())) + "/s"
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindAt, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	// The name it was bound at is gone once linked; unlinking it later
	// could hit an unrelated file (a reused fd number).
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	// link, unlike rename, never replaces what another process put at path
	// since clearStale looked.
	if err := os.Link(tmp, path); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	return &listener{UnixListener: ln, path: path, file: fi}, nil
}

// clearStale removes a socket at path that nobody answers on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("api socket %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("api socket %s: %w", path, ErrNotSocket)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("api socket %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket %s: check whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api socket %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// listener removes its socket file on Close if the file is still its own.
type listener struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

func (l *listener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}
