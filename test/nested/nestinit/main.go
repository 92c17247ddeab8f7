// Command nestinit is the init (PID 1) of the nested test VM that
// test/nested boots: it mounts the pseudo file systems, loads the KVM
// modules, checks /dev/kvm, runs each test binary of the plan with its
// output on the console between marker lines (package protocol), and
// powers the VM off. It is built static (CGO_ENABLED=0) and needs nothing
// else in the initramfs.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION, _IO(0xAE, 0x00).
const kvmGetAPIVersion = 0xae00

func main() {
	// The console is a serial line the harness reads: everything goes to
	// stdout so that markers and test output keep their order.
	out := &lineTracker{w: os.Stdout}
	err := run(out)
	if err != nil {
		out.marker(protocol.Line(protocol.KindError, err.Error()))
		kernelLog(out)
	}
	unix.Sync()
	// PID 1 must not exit: power off; if that fails the kernel panics
	// when we return, and panic=-1 plus QEMU's -no-reboot end the VM.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(out, "nestinit: power off: %v\n", err)
	}
}

func run(out *lineTracker) error {
	if err := mountAll(); err != nil {
		return err
	}
	data, err := os.ReadFile(protocol.PlanPath)
	if err != nil {
		return fmt.Errorf("read plan: %w", err)
	}
	var plan protocol.Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return fmt.Errorf("parse plan %s: %w", protocol.PlanPath, err)
	}
	// Kernel messages must not land in the middle of test output lines:
	// from here on only emergencies reach the console directly, and
	// warnings and worse come through followKernelLog, between lines.
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0)
	followKernelLog(out)
	for _, m := range plan.Modules {
		if err := loadModule(m); err != nil {
			return err
		}
		out.marker(protocol.Line(protocol.KindInfo, "loaded "+m))
	}
	api, err := checkKVM()
	if err != nil {
		return err
	}
	out.marker(protocol.Line(protocol.KindKVM, fmt.Sprintf("/dev/kvm api=%d", api)))

	for _, b := range plan.Binaries {
		out.marker(protocol.Begin(b.Name))
		code := runBinary(out, b, plan.Env)
		out.marker(protocol.End(b.Name, code))
	}
	out.marker(protocol.Done())
	return nil
}

func mountAll() error {
	mounts := []struct{ fstype, target string }{
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		{"devtmpfs", "/dev"},
		{"tmpfs", "/tmp"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: finit_module: %w", path, err)
	}
	return nil
}

// checkKVM waits for devtmpfs to show /dev/kvm (the node appears when
// kvm-amd registers, asynchronously) and asks it for its API version.
func checkKVM() (int, error) {
	var f *os.File
	var err error
	for range 100 {
		if f, err = os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return 0, fmt.Errorf("no usable /dev/kvm after loading the modules (does the CPU have svm?): %w", err)
	}
	defer f.Close()
	api, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		return 0, fmt.Errorf("/dev/kvm: KVM_GET_API_VERSION: %w", err)
	}
	return api, nil
}

func runBinary(out *lineTracker, b protocol.Binary, env []string) int {
	cmd := exec.Command(b.Path, b.Args...)
	cmd.Dir = b.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Start()
	if err == nil {
		if b.Timeout > 0 {
			watchdog := time.AfterFunc(b.Timeout, func() {
				fmt.Fprintf(out, "\nnestinit: %s still running after %s: SIGQUIT, then SIGKILL\n", b.Name, b.Timeout)
				cmd.Process.Signal(unix.SIGQUIT)
				time.Sleep(10 * time.Second)
				cmd.Process.Kill()
			})
			defer watchdog.Stop()
		}
		err = cmd.Wait()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode() // -1 when killed by a signal
	default:
		fmt.Fprintf(out, "nestinit: run %s: %v\n", b.Path, err)
		return -1
	}
}

// kernelLog prints the kernel's log (KVM's complaints, oopses) after a
// failure, each line prefixed so it cannot be mistaken for test output.
func kernelLog(out *lineTracker) {
	buf := make([]byte, 1<<18)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		fmt.Fprintf(out, "nestinit: read kernel log: %v\n", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	for _, l := range lines {
		fmt.Fprintf(out, "kernel: %s\n", l)
	}
}

// followKernelLog copies new kernel messages of level warning or worse
// (OOM kills, lockups, KVM's complaints) to the console as "kernel: "
// lines, slipped in only between whole lines of test output.
func followKernelLog(out *lineTracker) {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		fmt.Fprintf(out, "nestinit: kernel log: %v\n", err)
		return
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		fmt.Fprintf(out, "nestinit: kernel log: %v\n", err)
	}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := f.Read(buf)
			if errors.Is(err, unix.EPIPE) {
				continue // records were overwritten before we read them
			}
			if err != nil {
				return
			}
			if line, ok := kmsgLine(string(buf[:n])); ok {
				out.between("kernel: " + line)
			}
		}
	}()
}

// kmsgLine parses one /dev/kmsg record, "prio,seq,usec,flags;text\n...",
// and keeps it if its level is warning (4) or worse.
func kmsgLine(rec string) (string, bool) {
	head, text, ok := strings.Cut(rec, ";")
	if !ok {
		return "", false
	}
	prio, _, _ := strings.Cut(head, ",")
	p, err := strconv.Atoi(prio)
	if err != nil || p&7 > 4 {
		return "", false
	}
	text, _, _ = strings.Cut(text, "\n") // continuation lines are key=value pairs
	return text, true
}

// lineTracker writes to the console and remembers whether the last byte
// ended a line, so a marker always starts on a line of its own even after
// a binary that printed no final newline, and kernel lines wait for a line
// to end.
type lineTracker struct {
	mu      sync.Mutex
	w       io.Writer
	midLine bool
	waiting []string // kernel lines held back until the current line ends
}

func (t *lineTracker) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) > 0 {
		t.midLine = !bytes.HasSuffix(p, []byte("\n"))
	}
	n, err := t.w.Write(p)
	t.flushWaiting()
	return n, err
}

func (t *lineTracker) flushWaiting() {
	if t.midLine {
		return
	}
	for _, l := range t.waiting {
		fmt.Fprintln(t.w, l)
	}
	t.waiting = nil
}

// between prints line at the next line boundary.
func (t *lineTracker) between(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.waiting = append(t.waiting, line)
	t.flushWaiting()
}

// marker prints line on a line of its own, ending a started line first.
func (t *lineTracker) marker(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.midLine {
		fmt.Fprintln(t.w)
		t.midLine = false
	}
	t.flushWaiting()
	fmt.Fprintln(t.w, line)
}
