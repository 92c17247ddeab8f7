// Package command runs the external tools wisp drives (make, apt-get,
// dpkg-deb, mmdebstrap, mkfs.ext4, debugfs, qemu-img, ...) so that
// cancelling the context kills each tool together with everything it
// started, and a failure quotes the end of the tool's stderr.
package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/internal/tail"
)

// tailSize is how much of a failing tool's stderr an error quotes.
const tailSize = 4096

// waitDelay bounds how long Run waits for the tool's output pipes after
// the tool is gone: a grandchild that escaped the kill must not hang us.
const waitDelay = 5 * time.Second

// Cmd describes one run of a tool.
type Cmd struct {
	// Dir is the working directory, "" for the current one.
	Dir string
	// Env is added to the environment.
	Env []string
	// Stdin is the tool's input, nil for none.
	Stdin io.Reader
	// Stdout and Stderr receive the tool's output besides the error's
	// quote (progress output, a build log); nil discards it.
	Stdout, Stderr io.Writer
}

// Run runs name with args, found as Path finds it. The tool gets its own
// process group, and cancelling ctx kills the group: make spawns compilers
// and mmdebstrap runs apt and dpkg, which run maintainer scripts; killing
// the tool alone would orphan them.
func (c Cmd) Run(ctx context.Context, name string, args ...string) error {
	if p, err := Path(name); err == nil {
		name = p
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdin = c.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	stderrTail := tail.New(tailSize)
	cmd.Stdout = c.Stdout
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	errw := c.Stderr
	if errw == nil {
		errw = io.Discard
	}
	cmd.Stderr = io.MultiWriter(errw, stderrTail)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, context.Cause(ctx))
		}
		return &Error{Name: name, Args: args, Err: err, Stderr: stderrTail.String()}
	}
	return nil
}

// Output runs name and returns its stdout.
func (c Cmd) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	c.Stdout = &out
	err := c.Run(ctx, name, args...)
	return out.Bytes(), err
}

// Error is a tool that ran and failed.
type Error struct {
	Name   string
	Args   []string
	Err    error
	Stderr string // the end of its stderr
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %v", e.Name, strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// sbinDirs are searched after $PATH: e2fsprogs installs debugfs and
// mkfs.ext4 in /usr/sbin, which a normal user's $PATH often lacks.
func sbinDirs() []string { return []string{"/usr/sbin", "/sbin"} }

// Path finds tool in $PATH or the sbin directories. A tool named by a
// path (it has a slash) is taken as it is.
func Path(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	if strings.Contains(tool, "/") {
		return "", fmt.Errorf("%s: %w", tool, exec.ErrNotFound)
	}
	for _, d := range sbinDirs() {
		p := filepath.Join(d, tool)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", tool, exec.ErrNotFound)
}

// Need checks that the tools are installed and names the Debian package
// that brings each missing one: tools maps a tool to its package.
func Need(tools map[string]string) error {
	var missing []string
	for tool, pkg := range tools {
		if _, err := Path(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("missing tools: %s", strings.Join(missing, ", "))
}
