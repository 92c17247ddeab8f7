// Command init is PID 1 of wisp's default guest. Build it static:
//
//	CGO_ENABLED=0 go build -o init ./guest/init
//
// It mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /tmp and /run; loads the
// kernel modules listed in /etc/wisp/modules (in order, with
// finit_module); writes 0x7f to I/O port 0x440 to tell the VMM that
// userspace was reached; then either runs the command given by wisp.cmd on
// the kernel command line (see package initproto), reports its exit status
// on the console and powers off, or starts an interactive /bin/sh on the
// console and powers off when it exits. With root= it first mounts that
// disk and switches to it: the command then runs there, and without one
// the disk's own init takes over PID 1.
//
// A press of the ACPI power button (a VMM's graceful stop) ends the
// command or shell and every other process (SIGTERM, a short grace,
// SIGKILL), syncs and powers off; wisp.powerbutton=ignore on the kernel
// command line makes init ignore it (see package initproto). The button is
// read from the event devices of the input devices named "Power Button"
// (the kernel's ACPI button and evdev drivers, loaded from the modules
// file when they are modules). Once the disk's own init has taken over,
// the button is its business.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

// Exit statuses init reports for failures of its own, following the
// shell's conventions for the first two.
const (
	statusNotFound      = 127
	statusNotExecutable = 126
	statusInitFailure   = 255
)

// defaultPath is the PATH commands get when the kernel passed none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "wisp-init: must run as PID 1 (it mounts filesystems and powers the machine off)")
		os.Exit(2)
	}
	// Go exits on SIGINT, SIGTERM and SIGHUP by default, and PID 1
	// exiting panics the kernel. Catch them; forwardSignals turns them
	// into a request to stop the command.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPWR)

	log := &logger{}
	mountAll(log)
	log.openKmsg()

	cmdline, params, cmdlineErr := readParams()
	if params.Argv != nil && params.Quiet {
		// The command's output is the guest's output: keep the kernel's
		// messages (except emergencies) off the console while it runs.
		quietConsole(log)
	}
	setupSystem(log)
	loadModules(log, initproto.ModulesFile)
	var rootErr error
	if params.Root != "" {
		rootErr = switchRoot(log, params)
	}
	handOver := params.Root != "" && rootErr == nil && params.Argv == nil
	var button <-chan struct{}
	if !handOver && !ignoresPowerButton(cmdline) {
		// Before the boot marker: a host may press the button as soon
		// as it sees the marker.
		button = watchPowerButtons(log, "/")
	}
	markUserspace(log)
	if handOver {
		// The disk's own init (systemd, or busybox init) takes over,
		// and with it the power button.
		rootErr = execInit(params.Init)
	}

	console, err := takeConsole()
	if err != nil {
		log.fatalf("open console: %v", err)
		powerOff(log, nil)
	}
	configureConsole(log, console, params)

	if cmdlineErr != nil {
		fmt.Fprintf(console, "wisp-init: %v\n", cmdlineErr)
		finishCommand(log, console, statusInitFailure)
	}
	if rootErr != nil {
		fmt.Fprintf(console, "wisp-init: %v\n", rootErr)
		if params.Argv != nil {
			finishCommand(log, console, statusInitFailure)
		}
		fmt.Fprintln(console, "wisp-init: starting a shell in the initramfs instead")
	}
	if params.Argv != nil {
		status := runCommand(log, console, params.Argv, sigs, button)
		finishCommand(log, console, status)
	}
	runShell(log, console, sigs, button)
	powerOff(log, console)
}

// readParams reads /proc/cmdline and parses wisp's parameters from it.
func readParams() (string, initproto.Params, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", initproto.Params{}, fmt.Errorf("read /proc/cmdline: %w", err)
	}
	p, err := initproto.ParseCmdline(string(b))
	if err != nil {
		return string(b), initproto.Params{}, fmt.Errorf("kernel command line: %w", err)
	}
	return string(b), p, nil
}

// childEnv is the environment for the command or shell: what the kernel
// gave init (TERM, and any plain key=value parameters), a PATH and
// HOME=/root.
func childEnv(environ []string) []string {
	env := make([]string, 0, len(environ)+2)
	hasPath := false
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, "HOME="):
			continue
		case strings.HasPrefix(kv, "PATH="):
			hasPath = true
		}
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	return append(env, "HOME=/root")
}

// finishCommand reports the command's status on the console and powers off.
func finishCommand(log *logger, console *os.File, status int) {
	stopEverything(log)
	// Everything the command wrote is in the tty's buffer ahead of the
	// record; drain waits until the UART has sent it all, since powering
	// off discards what is still queued.
	drain(console)
	if _, err := console.WriteString(initproto.ExitRecord(status)); err != nil {
		log.errorf("write exit record: %v", err)
	}
	drain(console)
	powerOff(log, console)
}

// drain waits until everything written to the tty has been transmitted
// (tcdrain).
func drain(tty *os.File) {
	if tty != nil {
		asBackground(func() error { return unix.IoctlSetInt(int(tty.Fd()), unix.TCSBRK, 1) })
	}
}

// powerOff syncs filesystems and turns the machine off. It never returns.
func powerOff(log *logger, console *os.File) {
	stopEverything(log)
	drain(console)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Without a way to power off (no ACPI), halting is the best we can do;
	// returning would panic the kernel.
	log.fatalf("power off: %v; halting", err)
	unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	for {
		syscall.Pause()
	}
}
