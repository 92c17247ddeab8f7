package guest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

// TestCommandCancelKillsGroup checks that cancelling a kit command kills
// the processes it started, as a cancelled kernel build must kill the
// compilers make started.
func TestCommandCancelKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- command{}.run(ctx, "sh", "-c", "sleep 1000 & echo $! > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"; wait")
	}()
	var grandchild int
	for grandchild == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			grandchild, err = strconv.Atoi(strings.TrimSpace(string(b)))
			require.NoError(t, err)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.False(t, processGone(grandchild))
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	for !processGone(grandchild) {
		time.Sleep(10 * time.Millisecond) // the kill is delivered asynchronously
	}
}

func TestCommandErrorQuotesStderr(t *testing.T) {
	err := command{}.run(context.Background(), "sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the real reason")
	assert.Contains(t, err.Error(), "exit status 3")
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	tb.Write([]byte("0123456789"))
	tb.Write([]byte("ab"))
	assert.Equal(t, "456789ab", tb.String())
}
