package command

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunQuotesStderr(t *testing.T) {
	err := Cmd{}.Run(context.Background(), "sh", "-c", "echo first >&2; echo the reason >&2; exit 3")
	var cerr *Error
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, "first\nthe reason", cerr.Stderr)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 3, exit.ExitCode())
}

func TestRunCancelKillsGroup(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("stopped by test")
	cancel(cause)
	err := Cmd{}.Run(ctx, "sh", "-c", "sleep 100 & sleep 100")
	require.ErrorIs(t, err, cause)
}

func TestOutput(t *testing.T) {
	out, err := Cmd{Stdin: strings.NewReader("in")}.Output(context.Background(), "cat")
	require.NoError(t, err)
	assert.Equal(t, "in", string(out))
}

func TestNeed(t *testing.T) {
	require.NoError(t, Need(map[string]string{"sh": "dash"}))
	err := Need(map[string]string{"wisp-no-such-tool": "wisp-pkg", "sh": "dash"})
	require.Error(t, err)
	assert.Equal(t, "missing tools: wisp-no-such-tool (apt-get install wisp-pkg)", err.Error())
}

func TestPathFindsSbin(t *testing.T) {
	found := ""
	for _, d := range sbinDirs {
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
