package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
	"github.com/wisp-vmm/wisp/vmm/machine"
)

type runFlags struct {
	kernel, initrd, cmdline string
	cpus                    int
	memory                  string
	console                 string
	accel                   string
	onReboot                string
	disks, nets             []string
	rng                     bool
	vm, image, boot         string
	seed                    seedFlags
	stateDir                string
	control                 controlFlags
}

func newRunCommand(c *cli) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] [-- CMD ARGS...]",
		Short: "Boot a VM",
		Long: `Boot a Linux kernel (bzImage or ELF vmlinux) with an optional initrd.
Without --kernel, boot the default guest (Debian's cloud kernel and wisp's
initramfs) to a shell. With -- CMD ARGS..., run CMD inside the guest instead
of a shell and exit with its exit status.

Exit codes: 0 guest powered off; 1 wisp failed; 2 bad input; 81 guest reset
(unless --on-reboot=restart); 82 guest panic; 83 KVM could not emulate an
instruction; 84 the backend died; 128+N stopped by signal N. With -- CMD,
CMD's own exit status.

On a terminal the console is raw: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			guestCmd, err := commandArgs(cmd, args)
			if err != nil {
				return err
			}
			if len(guestCmd) > 0 && (f.vm != "" || f.image != "") {
				return vmm.Invalidf("-- CMD runs through wisp's own init, which --vm and --image do not use: log in on the console (or over ssh) instead")
			}
			changed := cmd.Flags().Changed
			cfg, err := f.config(changed)
			if err != nil {
				return err
			}
			if f.image != "" {
				if err := c.applyImage(cmd.Context(), &cfg, f.image, changed); err != nil {
					return err
				}
				if err := validate(cfg); err != nil {
					return err
				}
			}
			if f.seed.wanted() {
				cleanup, err := attachSeed(&cfg, f.seed)
				if err != nil {
					return err
				}
				defer cleanup()
			}
			return c.runVM(cmd.Context(), cfg, changed("cmdline"), guestCmd, f.control)
		},
	}
	fl := cmd.Flags()
	f.registerMachine(fl)
	fl.StringVar(&f.console, "console", "stdio", "serial console: stdio, file:PATH or none")
	fl.StringVar(&f.stateDir, "state-dir", "", "directory for what the VM writes at run time, e.g. qcow2 overlays (default: a temporary one)")
	fl.StringVar(&f.control.apiSock, "api-sock", "", "serve the VM's control API (status, pause, resume, stop, console) on this unix socket; the console is then the socket's")
	fl.StringVar(&f.control.exitFile, "exit-file", "", "when the VM ends, write how (JSON) to this file")
	fl.StringVar(&f.control.name, "name", "", "the VM's name in logs and on the control socket")
	return cmd
}

// registerMachine adds the flags that say what a VM is, shared by
// `wisp run` and `wisp vm create`.
func (f *runFlags) registerMachine(fl *pflag.FlagSet) {
	fl.StringVar(&f.kernel, "kernel", "", "Linux kernel: bzImage or ELF vmlinux (default: the default guest)")
	fl.StringVar(&f.initrd, "initrd", "", "initial ramdisk")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line (default \""+vmm.DefaultCmdline+"\")")
	fl.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fl.StringVar(&f.memory, "memory", "256M", "guest RAM, e.g. 256M, 1G, 1536MiB")
	fl.StringVar(&f.accel, "accel", "auto", "CPU engine: auto, kvm or tcg")
	fl.StringVar(&f.onReboot, "on-reboot", "exit", "on guest reset: exit or restart")
	fl.StringArrayVar(&f.disks, "disk", nil, "virtio disk PATH[,ro][,serial=ID][,format=raw|qcow2]; repeat for more (the first is /dev/vda)")
	fl.StringArrayVar(&f.nets, "net", nil, "virtio NIC: tap[:NAME][,mac=MAC][,bridge=BR] or user[,mac=MAC][,hostfwd=tcp:HOSTPORT-:GUESTPORT]; repeatable")
	fl.BoolVar(&f.rng, "rng", true, "virtio-rng device fed from the host's random source")
	fl.StringVar(&f.boot, "boot", "kernel", "kernel: load --kernel directly; firmware: SeaBIOS boots the first disk's own bootloader (TCG)")
	fl.StringVar(&f.vm, "vm", "", "boot a directory made by `wisp image build` (its vm.json); flags given here override it")
	fl.StringVar(&f.image, "image", "", "boot a raw or qcow2 disk whose root filesystem has /boot/vmlinuz (and /boot/initrd.img); it becomes /dev/vda")
	fl.StringVar(&f.seed.userData, "user-data", "", "cloud-init user-data for the guest, given on a NoCloud seed disk")
	fl.StringArrayVar(&f.seed.sshKeys, "ssh-key", nil, "authorized_keys file for the guest's default user, on a NoCloud seed disk; repeatable")
	fl.StringVar(&f.seed.hostname, "hostname", "", "the guest's host name, on a NoCloud seed disk")
}

// commandArgs returns what follows "--": the command to run in the guest.
func commandArgs(cmd *cobra.Command, args []string) ([]string, error) {
	dash := cmd.ArgsLenAtDash()
	if dash < 0 && len(args) > 0 {
		return nil, vmm.Invalidf("unexpected argument %q: put the command to run in the guest after --, e.g. wisp run -- uname -a", args[0])
	}
	if dash > 0 {
		return nil, vmm.Invalidf("unexpected argument %q before --", args[0])
	}
	if dash == 0 && len(args) == 0 {
		return nil, vmm.Invalidf("nothing after --: give the command to run in the guest")
	}
	return args, nil
}

func (f runFlags) config(changed func(string) bool) (vmm.Config, error) {
	sources := 0
	for _, set := range []bool{f.kernel != "", f.vm != "", f.image != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return vmm.Config{}, vmm.Invalidf("--kernel, --vm and --image each say what to boot: give one of them")
	}
	mem, err := vmm.ParseSize(f.memory)
	if err != nil {
		return vmm.Config{}, vmm.Invalidf("--memory: %v", err)
	}
	if mem == 0 {
		return vmm.Config{}, vmm.Invalidf("--memory 0: give the guest at least %s", vmm.FormatSize(vmm.MinMemory))
	}
	if f.cpus < 1 {
		return vmm.Config{}, vmm.Invalidf("--cpus %d: want 1 to %d", f.cpus, vmm.MaxCPUs)
	}
	if f.kernel == "" && f.initrd != "" {
		return vmm.Config{}, vmm.Invalidf("--initrd needs --kernel: the default guest brings its own initramfs")
	}
	kind, path, err := vmm.ParseConsole(f.console)
	if err != nil {
		return vmm.Config{}, err
	}
	var disks []vmm.Disk
	for _, s := range f.disks {
		d, err := vmm.ParseDisk(s)
		if err != nil {
			return vmm.Config{}, err
		}
		disks = append(disks, d)
	}
	var nets []vmm.Net
	for _, s := range f.nets {
		n, err := vmm.ParseNet(s)
		if err != nil {
			return vmm.Config{}, err
		}
		nets = append(nets, n)
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
		Disks:       disks,
		Nets:        nets,
		RNG:         f.rng,
		Boot:        vmm.BootMode(f.boot),
		StateDir:    f.stateDir,
	}
	if f.vm != "" {
		if err := applyMachineDir(&cfg, f.vm, changed); err != nil {
			return vmm.Config{}, err
		}
	}
	cfg = cfg.WithDefaults()
	if f.image != "" {
		// The image is not applied yet (it may be the disk --boot firmware
		// needs): RunE validates once it is.
		return cfg, nil
	}
	return cfg, validate(cfg)
}

// validate checks cfg against the host; without a kernel yet (the default
// guest, --image) it checks everything else.
func validate(cfg vmm.Config) error {
	hostMem, err := vmm.HostMemory()
	if err != nil {
		return err
	}
	if cfg.Kernel == "" {
		return cfg.ValidateMachine(hostMem)
	}
	return cfg.Validate(hostMem)
}

// defaultGuest points cfg at Debian's cloud kernel and wisp's initramfs,
// fetching and building them into the cache on first use.
func (c *cli) defaultGuest(ctx context.Context, cfg *vmm.Config) error {
	kit := &guest.Kit{CacheDir: guest.DefaultCacheDir(), Progress: c.stderr}
	kern, err := kit.DebianKernel(ctx)
	if err != nil {
		return fmt.Errorf("default guest: %w", err)
	}
	initrd, err := kit.DefaultInitramfs(ctx, kern)
	if err != nil {
		return fmt.Errorf("default guest: %w", err)
	}
	cfg.Kernel, cfg.Initrd = kern.Image, initrd
	return nil
}

// attachConsole connects the console cfg asks for; with a control socket
// the socket's viewers take the place of stdio.
func attachConsole(cfg vmm.Config, stdin *os.File, stdout io.Writer, controlSocket bool) (*console.Console, error) {
	switch {
	case cfg.Console == vmm.ConsoleFile:
		return console.File(cfg.ConsolePath)
	case cfg.Console == vmm.ConsoleNone, controlSocket:
		return console.None(), nil
	}
	return console.Stdio(stdin, stdout)
}

// commandCmdline adds what wisp's init needs to run argv: the command, quiet
// boot messages, and the console's mode and size.
func (c *cli) commandCmdline(cmdline string, userCmdline bool, argv []string) (string, error) {
	param, err := initproto.EncodeCmd(argv)
	if err != nil {
		return "", vmm.Invalidf("-- %s: %v", strings.Join(argv, " "), err)
	}
	parts := []string{cmdline}
	if !userCmdline {
		parts = append(parts, "quiet")
	}
	parts = append(parts, param)
	if fd := int(c.stdin.Fd()); term.IsTerminal(fd) {
		if cols, rows, err := term.GetSize(fd); err == nil {
			parts = append(parts, initproto.Winsize(uint16(cols), uint16(rows)))
		}
	} else {
		// Pipes want the command's bytes as they are: no echo, no \r\n.
		parts = append(parts, initproto.ParamTTY+"=raw")
	}
	full := strings.Join(parts, " ")
	if len(full) > initproto.MaxCmdline {
		return "", vmm.Invalidf("-- %s: the command does not fit on the kernel command line (%d bytes, at most %d)", strings.Join(argv, " "), len(full), initproto.MaxCmdline)
	}
	return full, nil
}

// runVM boots cfg and turns the way the guest ended into an exit code.
func (c *cli) runVM(ctx context.Context, cfg vmm.Config, userCmdline bool, argv []string, o controlFlags) error {
	if len(argv) > 0 && cfg.Boot == vmm.BootFirmware {
		return vmm.Invalidf("-- CMD runs through wisp's own init, which --boot firmware does not use: log in on the console instead")
	}
	if cfg.Kernel == "" && cfg.Boot != vmm.BootFirmware {
		if err := c.defaultGuest(ctx, &cfg); err != nil {
			return err
		}
	}
	if len(argv) > 0 {
		full, err := c.commandCmdline(cfg.Cmdline, userCmdline, argv)
		if err != nil {
			return err
		}
		cfg.Cmdline = full
	}
	if err := cfg.CheckBoot(); err != nil {
		return err
	}
	con, err := attachConsole(cfg, c.stdin, c.stdout, o.apiSock != "")
	if err != nil {
		return err
	}
	defer con.Close()
	out, in := con.Out, con.In
	var hub *console.Hub
	if o.apiSock != "" {
		// The control socket's viewers get the console; a console file
		// keeps everything, for `wisp vm logs`.
		hub = console.NewHub(consoleHistory)
		defer hub.Close()
		if cfg.Console == vmm.ConsoleFile {
			out = io.MultiWriter(hub, con.Out)
		} else {
			out = hub
		}
		in = hub.Input()
	}
	var status *initproto.ExitFilter
	if len(argv) > 0 {
		status = initproto.NewExitFilter(out)
		out = status
	}
	// The terminal stays cooked until the VM is built, so that a locked
	// disk, a tap that cannot be made or the reason for TCG read normally;
	// later lines get their \r from the log handler.
	m, err := machine.New(ctx, cfg, machine.Options{
		ID:           o.name,
		Console:      vmm.Console{In: in, Out: out},
		Logger:       newLineLogger(c.stderr, con.IsRaw),
		Start:        c.start,
		OnBootMarker: bootMarkerLogger(c.stderr),
	})
	if err != nil {
		return err
	}
	defer m.Close()
	if o.apiSock != "" {
		stopServing, err := serveControl(m, o, hub, c.stderr)
		if err != nil {
			return err
		}
		defer stopServing()
	}
	if err := con.Raw(); err != nil {
		return err
	}

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

	st, err := runToEnd(ctx, m)
	if status != nil {
		_ = status.Flush()
	}
	if o.exitFile != "" {
		if werr := writeExitRecord(o.exitFile, st, err); werr != nil {
			fmt.Fprintf(c.stderr, "wisp: %v\n", werr)
		}
	}
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
	if status != nil && st.Reason == vmm.ExitPoweroff {
		code, ok := status.Status()
		if !ok {
			return &exitError{code: vmm.CodeError, err: errors.New("the guest powered off without reporting the command's exit status (is its initramfs one wisp built?)")}
		}
		return &exitError{code: code}
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

// runToEnd starts m and waits until the guest ends or ctx is cancelled (a
// signal, Ctrl-A x); then it forces the guest off and reports ExitStopped
// with the cancellation's cause.
func runToEnd(ctx context.Context, m *machine.Machine) (vmm.ExitStatus, error) {
	if err := m.Start(ctx); err != nil {
		return vmm.ExitStatus{}, err
	}
	select {
	case <-m.Done():
		return m.Wait()
	case <-ctx.Done():
	}
	if err := m.Stop(context.WithoutCancel(ctx), 0); err != nil && !errors.Is(err, vmm.ErrBadTransition) {
		return vmm.ExitStatus{}, err
	}
	st, err := m.Wait()
	st.Reason = vmm.ExitStopped
	if st.Detail == "" {
		st.Detail = context.Cause(ctx).Error()
	}
	return st, err
}
