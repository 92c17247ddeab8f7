// Command wisp boots virtual machines: `wisp run --kernel vmlinuz`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/vmm"
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error // printed when non-nil
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli is what every command gets: the process's streams and start time.
type cli struct {
	stdin          *os.File
	stdout, stderr io.Writer
	start          time.Time
}

// run is main without os.Exit, so tests can drive the CLI in process.
func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	ctx, stop := signalContext(context.Background())
	defer stop()
	root := newRootCommand(&cli{stdin: stdin, stdout: stdout, stderr: stderr, start: time.Now()})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "wisp: %s\n", cliMessage(ee.err))
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "wisp: %s\n", cliMessage(err))
	if errors.Is(err, vmm.ErrInvalidConfig) || isUsageError(err) {
		return vmm.CodeUsage
	}
	return vmm.CodeError
}

// signalContext is cancelled by SIGINT or SIGTERM, with the signal as cause,
// so every path that owns a resource (a VM, a tap, a temp dir) cleans up.
func signalContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			cancel(&signalError{sig: s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(context.Canceled)
	}
}

type signalError struct{ sig syscall.Signal }

func (s *signalError) Error() string { return "stopped by " + s.sig.String() }

func newRootCommand(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:           "wisp",
		Short:         "wisp boots virtual machines: KVM when it can, QEMU's TCG when it cannot",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{err}
	})
	root.AddCommand(newRunCommand(c), newDoctorCommand(c), newKernelCommand(c), newImageCommand(c), newAgentCommand(c), newVMCommand(c))
	root.AddCommand(newScheduleCommand(c))
	root.AddCommand(newCostCommand(c))
	return root
}

type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() + " (see wisp help)" }
func (u *usageError) Unwrap() error { return u.err }

func isUsageError(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}
