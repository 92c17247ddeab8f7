package stale

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helperEnv makes the test binary a process that makes a directory with
// MkdirTemp, prints its path and waits to be killed.
const helperEnv = "WISP_STALE_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		path, err := MkdirTemp(dir, PrefixVM)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(path)
		select {}
	}
	os.Exit(m.Run())
}

// deadPID is the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func record(t *testing.T, o Owner) string {
	t.Helper()
	b, err := json.Marshal(o)
	require.NoError(t, err)
	return string(b) + "\n"
}

func TestSweep(t *testing.T) {
	self, err := Self()
	require.NoError(t, err)
	dead := self
	dead.PID, dead.Start = deadPID(t), 1
	reused := self
	reused.Start++
	earlierBoot := self
	earlierBoot.Boot = "00000000-0000-0000-0000-000000000000"
	otherNS := dead
	otherNS.PIDNS = "pid:[1]"

	tests := []struct {
		name   string
		dir    string // under the swept directory
		make   func(t *testing.T, path string)
		remove bool
	}{
		{"dead owner", PrefixVM + "dead", func(t *testing.T, p string) { writeRecord(t, p, record(t, dead)) }, true},
		{"live owner", PrefixVM + "live", func(t *testing.T, p string) { writeRecord(t, p, record(t, self)) }, false},
		{"reused pid", PrefixVM + "reused", func(t *testing.T, p string) { writeRecord(t, p, record(t, reused)) }, true},
		{"earlier boot", PrefixVM + "boot", func(t *testing.T, p string) { writeRecord(t, p, record(t, earlierBoot)) }, true},
		{"owner in another pid namespace", PrefixVM + "ns", func(t *testing.T, p string) { writeRecord(t, p, record(t, otherNS)) }, false},
		{"no record", PrefixVM + "none", func(t *testing.T, p string) {}, false},
		{"garbled record", PrefixVM + "garbled", func(t *testing.T, p string) { writeRecord(t, p, "pid 12 start 3\n") }, false},
		{"record cut short", PrefixVM + "short", func(t *testing.T, p string) { writeRecord(t, p, strings.TrimSuffix(record(t, dead), "\n")) }, false},
		{"record with missing fields", PrefixVM + "fields", func(t *testing.T, p string) { writeRecord(t, p, `{"pid":1}`+"\n") }, false},
		{"record with unknown fields", PrefixVM + "unknown", func(t *testing.T, p string) {
			writeRecord(t, p, strings.TrimSuffix(record(t, dead), "}\n")+`,"x":1}`+"\n")
		}, false},
		{"record is a symlink", PrefixVM + "link", func(t *testing.T, p string) {
			target := filepath.Join(t.TempDir(), "owner")
			require.NoError(t, os.WriteFile(target, []byte(record(t, dead)), 0o600))
			require.NoError(t, os.Symlink(target, filepath.Join(p, RecordName)))
		}, false},
		{"record is a FIFO", PrefixVM + "fifo", func(t *testing.T, p string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(p, RecordName), 0o600))
		}, false},
		{"another prefix", "other-dead", func(t *testing.T, p string) { writeRecord(t, p, record(t, dead)) }, false},
	}
	base := t.TempDir()
	for _, tt := range tests {
		p := filepath.Join(base, tt.dir)
		require.NoError(t, os.Mkdir(p, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(p, "qmp.sock"), nil, 0o600), "something inside")
		tt.make(t, p)
	}
	// A symlink with the prefix to a dead owner's directory elsewhere, and
	// a plain file with the prefix: neither is a directory here.
	elsewhere := filepath.Join(t.TempDir(), "target")
	require.NoError(t, os.Mkdir(elsewhere, 0o700))
	writeRecord(t, elsewhere, record(t, dead))
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(base, PrefixVM+"symlink")))
	require.NoError(t, os.WriteFile(filepath.Join(base, PrefixVM+"file"), []byte(record(t, dead)), 0o600))

	removed, err := Sweep(base, PrefixVM)
	require.NoError(t, err)
	var want []string
	for _, tt := range tests {
		p := filepath.Join(base, tt.dir)
		t.Run(tt.name, func(t *testing.T) {
			if tt.remove {
				assert.NoDirExists(t, p)
				want = append(want, p)
			} else {
				assert.DirExists(t, p)
			}
		})
	}
	assert.ElementsMatch(t, want, removed)
	assert.DirExists(t, elsewhere, "a symlink is not followed")
	assert.FileExists(t, filepath.Join(elsewhere, RecordName))
	assert.FileExists(t, filepath.Join(base, PrefixVM+"file"))
}

func writeRecord(t *testing.T, dir, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, RecordName), []byte(content), 0o600))
}

func TestMkdirTempRecordsSelf(t *testing.T) {
	base := t.TempDir()
	path, err := MkdirTemp(base, PrefixQEMU)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(filepath.Base(path), PrefixQEMU))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())

	got, err := ReadOwner(path)
	require.NoError(t, err)
	self, err := Self()
	require.NoError(t, err)
	assert.Equal(t, self, got)

	removed, err := Sweep(base, PrefixQEMU)
	require.NoError(t, err)
	assert.Empty(t, removed, "our own directory stays")
	assert.DirExists(t, path)
}

func TestMkdirTempFailureLeavesNothing(t *testing.T) {
	_, err := MkdirTemp(filepath.Join(t.TempDir(), "missing"), PrefixSeed)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestSweepAfterKill9 kills a real process that made a directory and
// sweeps what it left.
func TestSweepAfterKill9(t *testing.T) {
	base := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+base)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	path := strings.TrimSpace(line)
	require.DirExists(t, path)

	removed, err := Sweep(base, PrefixVM)
	require.NoError(t, err)
	assert.Empty(t, removed, "its owner lives")
	assert.DirExists(t, path)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait() // reaped: the pid is free
	removed, err = Sweep(base, PrefixVM)
	require.NoError(t, err)
	assert.Equal(t, []string{path}, removed)
	assert.NoDirExists(t, path)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name  string
		stat  string
		start uint64
		ok    bool
	}{
		{"plain", "42 (wisp) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 123456 0 0", 123456, true},
		{"comm with spaces and parentheses", "42 (a) b (c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 777 0 0", 777, true},
		{"too short", "42 (wisp) S 1 42", 0, false},
		{"no comm", "42 wisp S", 0, false},
		{"start not a number", "42 (wisp) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 x 0 0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, err := parseStat(42, []byte(tt.stat))
			if !tt.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.start, start)
		})
	}
}
