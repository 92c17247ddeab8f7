package nested

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// QEMUBinary is the emulator the nested VM runs in.
const QEMUBinary = "qemu-system-x86_64"

// QEMUInstallHint says how to get it on Debian.
const QEMUInstallHint = "apt-get install qemu-system-x86"

// VM is the nested test VM's QEMU command line.
type VM struct {
	QEMU      string // path of qemu-system-x86_64
	Kernel    string
	Initrd    string
	CPUs      int
	MemoryMiB int
	Cmdline   string
}

// DefaultCmdline is the kernel command line: the console on the serial
// port QEMU connects to its stdout, and a panic ends the VM at once
// (panic=-1 reboots, -no-reboot turns that into QEMU exiting).
const DefaultCmdline = "console=ttyS0 panic=-1 quiet"

// Args is the QEMU command line. TCG with -cpu max gives the guest SVM,
// so its KVM can run guests of its own (nested).
func (vm VM) Args() []string {
	return []string{
		"-accel", "tcg", "-cpu", "max",
		"-smp", strconv.Itoa(vm.CPUs), "-m", strconv.Itoa(vm.MemoryMiB) + "M",
		"-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", vm.Kernel, "-initrd", vm.Initrd, "-append", vm.Cmdline,
	}
}

// ErrTimeout means the nested VM was still running at the deadline.
var ErrTimeout = errors.New("nested VM did not finish in time")

// ErrStalled means the nested VM printed nothing for the stall time: its
// kernel is stuck (seen now and then under heavy host load, where QEMU's
// emulation of nested SVM can stop making progress; the inner tests' own
// -test.timeout never fires then, because the kernel running them is
// stuck too).
var ErrStalled = errors.New("nested VM stalled: no console output")

// Run boots vm and calls line for every line of its console, in order,
// until QEMU exits. At ctx's end it kills QEMU and returns ErrTimeout
// (for a deadline) or ctx's error; after stall without a line (0: never)
// it kills QEMU and returns ErrStalled.
func Run(ctx context.Context, vm VM, stall time.Duration, line func(string)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := exec.CommandContext(ctx, vm.QEMU, vm.Args()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", vm.QEMU, err)
	}
	var watchdog *time.Timer
	if stall > 0 {
		watchdog = time.AfterFunc(stall, func() { cancel(ErrStalled) })
		defer watchdog.Stop()
	}
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		s, err := r.ReadString('\n')
		if s != "" {
			if watchdog != nil {
				watchdog.Reset(stall)
			}
			line(strings.TrimRight(s, "\r\n"))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			break // the pipe closed under us: Wait says why
		}
	}
	err = cmd.Wait()
	switch {
	case errors.Is(context.Cause(ctx), ErrStalled):
		return fmt.Errorf("%w for %s", ErrStalled, stall)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return ErrTimeout
	case ctx.Err() != nil:
		return fmt.Errorf("nested VM: %w", ctx.Err())
	case err != nil:
		return fmt.Errorf("%s: %w\n%s", vm.QEMU, err, stderr.String())
	}
	return nil
}
