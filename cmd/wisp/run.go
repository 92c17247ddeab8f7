package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

type runFlags struct {
	kernel, initrd, cmdline string
	cpus                    int
	memory                  string
	console                 string
	accel                   string
	onReboot                string
}

func newRunCommand(stdin *os.File, stdout, stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags]",
		Short: "Boot a VM",
		Long: `Boot a Linux kernel (bzImage or ELF vmlinux) with an optional initrd.

Exit codes: 0 guest powered off; 1 wisp failed; 2 bad input; 81 guest reset
(unless --on-reboot=restart); 82 guest panic; 83 KVM could not emulate an
instruction; 84 the backend died; 128+N stopped by signal N.

On a terminal the console is raw: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			return runVM(cmd.Context(), cfg, stdin, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kernel, "kernel", "", "Linux kernel: bzImage or ELF vmlinux")
	fl.StringVar(&f.initrd, "initrd", "", "initial ramdisk")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line (default \""+vmm.DefaultCmdline+"\")")
	fl.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fl.StringVar(&f.memory, "memory", "256M", "guest RAM, e.g. 256M, 1G, 1536MiB")
	fl.StringVar(&f.console, "console", "stdio", "serial console: stdio, file:PATH or none")
	fl.StringVar(&f.accel, "accel", "auto", "CPU engine: auto, kvm or tcg")
	fl.StringVar(&f.onReboot, "on-reboot", "exit", "on guest reset: exit or restart")
	return cmd
}

func (f runFlags) config() (vmm.Config, error) {
	mem, err := vmm.ParseSize(f.memory)
	if err != nil {
		return vmm.Config{}, vmm.Invalidf("--memory: %v", err)
	}
	if mem == 0 {
		return vmm.Config{}, vmm.Invalidf("--memory 0: give the guest at least %s", vmm.FormatSize(vmm.MinMemory))
	}
	kind, path, err := vmm.ParseConsole(f.console)
	if err != nil {
		return vmm.Config{}, err
	}
	cfg := vmm.Config{
		Kernel:      f.kernel,
		Initrd:      f.initrd,
		Cmdline:     f.cmdline,
		CPUs:        f.cpus,
		MemoryBytes: mem,
		Console:     kind,
		ConsolePath: path,
		Accel:       vmm.Accel(f.accel),
		OnReboot:    vmm.RebootPolicy(f.onReboot),
		KVMDevice:   os.Getenv("WISP_KVM_DEVICE"),
	}.WithDefaults()
	hostMem, err := vmm.HostMemory()
	if err != nil {
		return vmm.Config{}, err
	}
	if err := cfg.Validate(hostMem); err != nil {
		return vmm.Config{}, err
	}
	return cfg, nil
}

func attachConsole(cfg vmm.Config, stdin *os.File, stdout io.Writer) (*console.Console, error) {
	switch cfg.Console {
	case vmm.ConsoleFile:
		return console.File(cfg.ConsolePath)
	case vmm.ConsoleNone:
		return console.None(), nil
	}
	return console.Stdio(stdin, stdout)
}

// runVM boots cfg and turns the way the guest ended into an exit code.
func runVM(ctx context.Context, cfg vmm.Config, stdin *os.File, stdout, stderr io.Writer) error {
	con, err := attachConsole(cfg, stdin, stdout)
	if err != nil {
		return err
	}
	defer con.Close()

	// Ctrl-A x on the console stops the VM like a signal does.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-con.Quit:
			cancel(errQuit)
		case <-ctx.Done():
		}
	}()

	backend, err := newBackend(ctx, cfg, vmm.Console{In: con.In, Out: con.Out}, stderr)
	if err != nil {
		return err
	}
	st, err := vmm.NewMachine(cfg, backend).Run(ctx)
	_ = con.Close() // restore the terminal before printing
	if err != nil {
		return &exitError{code: vmm.CodeError, err: err}
	}
	if st.Reason == vmm.ExitStopped {
		var sig *signalError
		if errors.As(context.Cause(ctx), &sig) {
			return &exitError{code: vmm.CodeSignalBase + int(sig.sig)}
		}
		if errors.Is(context.Cause(ctx), errQuit) {
			return nil
		}
		return &exitError{code: vmm.CodeError, err: errors.New(st.Detail)}
	}
	code := vmm.ExitCode(st)
	if code == 0 {
		return nil
	}
	msg := "guest " + st.Reason.String()
	if st.Detail != "" {
		msg += ": " + st.Detail
	}
	return &exitError{code: code, err: errors.New(msg)}
}

var errQuit = errors.New("quit from the console (Ctrl-A x)")
