package guest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// tailBuffer keeps the last max bytes written to it, so a failing command's
// error can quote the end of its stderr without holding all of it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.buf)) }

// command describes one external program run by the kit.
type command struct {
	dir    string
	env    []string // added to the environment
	stdout io.Writer
	stderr io.Writer
}

// run runs name with args. The child gets its own process group so that
// cancelling ctx kills it together with everything it started (make spawns
// compilers; killing make alone would orphan them).
func (c command) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	tail := &tailBuffer{max: 4096}
	cmd.Stdout = c.stdout
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	errw := c.stderr
	if errw == nil {
		errw = io.Discard
	}
	cmd.Stderr = io.MultiWriter(errw, tail)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail)
	}
	return nil
}

// output runs name and returns its stdout.
func (c command) output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	c.stdout = &out
	err := c.run(ctx, name, args...)
	return out.Bytes(), err
}
