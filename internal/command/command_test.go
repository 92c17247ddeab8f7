package command

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		cmd        Cmd
		script     string
		wantStdout string
		wantStderr string
	}{
		{"stdout and stderr pass through", Cmd{}, "echo out; echo err >&2", "out\n", "err\n"},
		{"env is added", Cmd{Env: []string{"WISP_TEST_VAR=set"}}, `echo "$WISP_TEST_VAR"; test -n "$PATH"`, "set\n", ""},
		{"dir is the working directory", Cmd{Dir: dir}, "pwd", dir + "\n", ""},
		{"stdin is read", Cmd{Stdin: strings.NewReader("in")}, "cat", "in", ""},
		{"nil writers discard", Cmd{}, "echo out; echo err >&2", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			c := tt.cmd
			if tt.wantStdout != "" || tt.wantStderr != "" {
				c.Stdout, c.Stderr = &stdout, &stderr
			}
			require.NoError(t, c.Run(context.Background(), "sh", "-c", tt.script))
			assert.Equal(t, tt.wantStdout, stdout.String())
			assert.Equal(t, tt.wantStderr, stderr.String())
		})
	}
}

func TestRunQuotesStderr(t *testing.T) {
	var seen bytes.Buffer
	err := Cmd{Stderr: &seen}.Run(context.Background(), "sh", "-c", "echo first >&2; echo the real reason >&2; exit 3")
	var cerr *Error
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, "first\nthe real reason", cerr.Stderr)
	assert.Equal(t, "first\nthe real reason\n", seen.String(), "the caller's writer gets stderr too")
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Contains(t, err.Error(), "the real reason")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 3, exit.ExitCode())
}

func TestRunQuoteIsBounded(t *testing.T) {
	err := Cmd{}.Run(context.Background(), "sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done; echo last >&2; exit 1")
	var cerr *Error
	require.ErrorAs(t, err, &cerr)
	assert.LessOrEqual(t, len(cerr.Stderr), tailSize)
	assert.True(t, strings.HasSuffix(cerr.Stderr, "line 1999\nlast"), "the quote is the end of stderr")
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"with stderr", &Error{Name: "mkfs.ext4", Args: []string{"-F", "x"}, Err: errors.New("exit status 1"), Stderr: "no space"}, "mkfs.ext4 -F x: exit status 1: no space"},
		{"without stderr", &Error{Name: "unshare", Err: errors.New("exit status 1")}, "unshare : exit status 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.err.Error())
			assert.ErrorIs(t, tt.err, tt.err.Err)
		})
	}
}

func TestRunCancelledBeforeStartReportsCause(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("stopped by test")
	cancel(cause)
	err := Cmd{}.Run(ctx, "sh", "-c", "sleep 100 & sleep 100")
	require.ErrorIs(t, err, cause)
}

// processGone reports whether pid has exited (no /proc entry, or a zombie
// waiting for its new parent to reap it).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

// TestRunCancelKillsGroup checks that cancelling a running tool kills the
// processes it started, as a cancelled kernel build must kill the
// compilers make started.
func TestRunCancelKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Cmd{}.Run(ctx, "sh", "-c", "sleep 1000 & echo $! > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"; wait")
	}()
	var grandchild int
	for grandchild == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			grandchild, err = strconv.Atoi(strings.TrimSpace(string(b)))
			require.NoError(t, err)
			break
		}
		time.Sleep(10 * time.Millisecond) // polling for the file, not a timed assertion
	}
	require.False(t, processGone(grandchild))
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	for !processGone(grandchild) {
		time.Sleep(10 * time.Millisecond) // the kill is delivered asynchronously
	}
}

func TestOutput(t *testing.T) {
	out, err := Cmd{Stdin: strings.NewReader("in")}.Output(context.Background(), "cat")
	require.NoError(t, err)
	assert.Equal(t, "in", string(out))
}

func TestNeed(t *testing.T) {
	tests := []struct {
		name    string
		tools   map[string]string
		wantErr string
	}{
		{"all there", map[string]string{"sh": "dash"}, ""},
		{"one missing", map[string]string{"wisp-no-such-tool": "wisp-pkg", "sh": "dash"}, "missing tools: wisp-no-such-tool (apt-get install wisp-pkg)"},
		{"missing ones sorted", map[string]string{"wisp-z": "z", "wisp-a": "a"}, "missing tools: wisp-a (apt-get install a), wisp-z (apt-get install z)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Need(tt.tools)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

func TestPathFindsSbin(t *testing.T) {
	found := ""
	for _, d := range sbinDirs() {
		if _, err := os.Stat(filepath.Join(d, "mkfs.ext4")); err == nil {
			found = filepath.Join(d, "mkfs.ext4")
			break
		}
	}
	if found == "" {
		t.Skip("no mkfs.ext4 in /usr/sbin or /sbin to look for")
	}
	t.Setenv("PATH", "/nonexistent")
	p, err := Path("mkfs.ext4")
	require.NoError(t, err, "found outside $PATH, as for users whose PATH lacks sbin")
	assert.Equal(t, found, p)
}

func TestPathTakesAPathAsItIs(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	p, err := Path("/bin/sh")
	require.NoError(t, err)
	assert.Equal(t, "/bin/sh", p)
	_, err = Path("sbin/mkfs.ext4")
	require.ErrorIs(t, err, exec.ErrNotFound, "a relative path is not looked up in the sbin directories")
}
