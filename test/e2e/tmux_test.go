package e2e

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tmuxSession is a terminal (a tmux pane) running one shell command, for
// tests that drive wisp the way a person at a terminal does.
type tmuxSession struct {
	t    *testing.T
	tmux string
	name string
}

// newTmux starts script in a detached 160x50 tmux session, killed when the
// test ends. It skips the test when tmux is missing.
func newTmux(t *testing.T, name, script string) *tmuxSession {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("SKIP: tmux not found (apt-get install tmux): it provides the terminal this test types into")
	}
	s := &tmuxSession{t: t, tmux: tmux, name: name}
	require.NoError(t, exec.Command(tmux, "new-session", "-d", "-s", name, "-x", "160", "-y", "50", "bash", "-c", script).Run())
	t.Cleanup(func() { _ = exec.Command(tmux, "kill-session", "-t", name).Run() })
	return s
}

// screen is the pane's text with 200 lines of history.
func (s *tmuxSession) screen() string {
	out, _ := exec.Command(s.tmux, "capture-pane", "-p", "-S", "-200", "-t", s.name).Output()
	return string(out)
}

// waitFor polls the screen until ok says yes, failing the test after
// timeout (a bound only a hung guest reaches, not a performance check).
func (s *tmuxSession) waitFor(what string, timeout time.Duration, ok func(string) bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok(s.screen()) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("waited %v for %s; screen:\n%s", timeout, what, s.screen())
}

// send types keys followed by Enter.
func (s *tmuxSession) send(keys string) {
	s.t.Helper()
	require.NoError(s.t, exec.Command(s.tmux, "send-keys", "-t", s.name, keys, "Enter").Run())
}
