package guest

import (
	"context"
	"io"

	runner "github.com/wisp-vmm/wisp/internal/command"
)

// command is how the kit describes a tool run; internal/command runs it
// (its own process group killed on cancel, the end of stderr quoted in the
// error).
type command struct {
	dir    string
	env    []string // added to the environment
	stdout io.Writer
	stderr io.Writer
}

func (c command) cmd() runner.Cmd {
	return runner.Cmd{Dir: c.dir, Env: c.env, Stdout: c.stdout, Stderr: c.stderr}
}

// run runs name with args.
func (c command) run(ctx context.Context, name string, args ...string) error {
	return c.cmd().Run(ctx, name, args...)
}

// output runs name and returns its stdout.
func (c command) output(ctx context.Context, name string, args ...string) ([]byte, error) {
	return c.cmd().Output(ctx, name, args...)
}
