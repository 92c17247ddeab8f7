package guest

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	runner "github.com/wisp-vmm/wisp/internal/command"
)

// The runner itself is tested in internal/command; these check that the
// kit's fields reach it.
func TestCommandPassesItsFields(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		cmd    command
		script string
		want   string
	}{
		{"dir", command{dir: dir}, "pwd", dir + "\n"},
		{"env", command{env: []string{"WISP_KIT_TEST=1"}}, `echo "$WISP_KIT_TEST"`, "1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.cmd.output(context.Background(), "sh", "-c", tt.script)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(out))
		})
	}
}

func TestCommandStdoutAndStderrWriters(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := command{stdout: &stdout, stderr: &stderr}.run(context.Background(), "sh", "-c", "echo out; echo err >&2")
	require.NoError(t, err)
	assert.Equal(t, "out\n", stdout.String())
	assert.Equal(t, "err\n", stderr.String())
}

func TestCommandErrorQuotesStderr(t *testing.T) {
	err := command{}.run(context.Background(), "sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3")
	var cerr *runner.Error
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, "first\nthe real reason", cerr.Stderr)
}
