package api

import (
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

func TestListenSocketMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	ln, err := Listen(path)
	require.NoError(t, err)

	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket, fi.Mode().Type())
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary directory left behind")

	require.NoError(t, ln.Close())
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist, "Close removes the socket")
}

func TestListenRefusesWhatIsNotASocket(t *testing.T) {
	tests := []struct {
		name string
		make func(path string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o644) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"symlink to a socket", func(p string) error {
			target := p + ".real"
			l, err := net.Listen("unix", target)
			if err != nil {
				return err
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			if err := l.Close(); err != nil {
				return err
			}
			return os.Symlink(target, p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "api.sock")
			require.NoError(t, tt.make(path))
			before, err := os.Lstat(path)
			require.NoError(t, err)

			_, err = Listen(path)
			require.ErrorIs(t, err, ErrNotSocket)
			after, err := os.Lstat(path)
			require.NoError(t, err)
			assert.True(t, os.SameFile(before, after), "left alone")
		})
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	old, err := net.Listen("unix", path)
	require.NoError(t, err)
	// A VMM that died leaves its socket file with nobody listening.
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, old.Close())
	stale, err := os.Lstat(path)
	require.NoError(t, err)

	ln, err := Listen(path)
	require.NoError(t, err)
	srv := NewServer(&fakeVM{state: vmm.StateRunning}, nil, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	now, err := os.Lstat(path)
	require.NoError(t, err)
	assert.False(t, os.SameFile(stale, now))
	assert.Equal(t, fs.FileMode(0o600), now.Mode().Perm())
	st, err := Dial(path).Status(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "running", st.State)
}

func TestListenRefusesSocketInUse(t *testing.T) {
	path, _ := serve(t, &fakeVM{state: vmm.StateRunning}, nil)
	_, err := Listen(path)
	require.ErrorIs(t, err, ErrSocketInUse)
	assert.Equal(t, http.StatusOK, request(t, path, "GET", "/v1/status", "", nil).status, "the server there is untouched")
}

func TestListenLongDirectory(t *testing.T) {
	// A path that fits sun_path although the temporary one beside it
	// would not.
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", maxSocketPath-len(dir)-len("/api.sock")-3))
	require.NoError(t, os.Mkdir(long, 0o700))
	path := filepath.Join(long, "api.sock")
	require.Less(t, len(path), maxSocketPath)

	ln, err := Listen(path)
	require.NoError(t, err)
	srv := NewServer(&fakeVM{state: vmm.StateRunning}, nil, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	_, err = Dial(path).Status(t.Context())
	require.NoError(t, err)
}
