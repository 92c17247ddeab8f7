package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Files in a VM's runtime directory.
const (
	apiSocketName = "api.sock"
	exitFileName  = "exit.json"
)

// ExitRecord is what a VMM process writes (atomically) when its VM ends,
// so that an agent which is not its parent still learns how it ended.
type ExitRecord struct {
	Reason string    `json:"reason"` // vmm.ExitReason's name
	Detail string    `json:"detail,omitempty"`
	Code   int       `json:"code"` // wisp run's exit code
	Time   time.Time `json:"time"`
}

// process is a VMM process this agent watches.
type process struct {
	pid  int
	done chan struct{} // closed when it has exited
	// status is its wait status when this agent is its parent.
	status *syscall.WaitStatus
}

// spawn starts the VMM process of vm in its own session, so that it
// outlives the agent, and returns its runtime record.
func (a *Agent) spawn(vm model.VM) (*model.Runtime, error) {
	dir := filepath.Join(a.cfg.RunDir, "vms", vm.Name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("runtime directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime directory: %w", err)
	}
	state := a.vmStateDir(vm.Name)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(state, "vmm.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmm log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	sock := filepath.Join(dir, apiSocketName)
	args := []string{"run",
		"--name", vm.Name,
		"--api-sock", sock,
		"--exit-file", filepath.Join(dir, exitFileName),
		"--console", "file:" + filepath.Join(state, "console.log"),
		"--state-dir", state,
	}
	args = append(args, vm.Spec.Args()...)
	cmd := exec.Command(a.cfg.Wisp, args...)
	cmd.Dir = state
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	fmt.Fprintf(logFile, "--- %s: %s %s\n", time.Now().UTC().Format(time.RFC3339), a.cfg.Wisp, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the VMM process: %w", err)
	}
	pid := cmd.Process.Pid
	ticks, _ := startTicks(pid) // it may already be gone; observe tells
	p := &process{pid: pid, done: make(chan struct{})}
	a.mu.Lock()
	a.procs[pid] = p
	a.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			p.status = &ws
		}
		close(p.done)
		a.wake()
	}()
	return &model.Runtime{PID: pid, StartTicks: ticks, Socket: sock, Dir: dir, StartedAt: time.Now().UTC()}, nil
}

// watch follows a VMM process this agent did not start (adopted after a
// restart) through a pidfd, and wakes the loop when it exits.
func (a *Agent) watch(rt *model.Runtime) {
	a.mu.Lock()
	_, known := a.procs[rt.PID]
	if known {
		a.mu.Unlock()
		return
	}
	p := &process{pid: rt.PID, done: make(chan struct{})}
	a.procs[rt.PID] = p
	a.mu.Unlock()
	fd, err := unix.PidfdOpen(rt.PID, 0)
	if err != nil {
		close(p.done)
		a.wake()
		return
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(p.done)
		a.wake()
	}()
}

// forget drops a process that has ended from the watch list.
func (a *Agent) forget(pid int) *process {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.procs[pid]
	delete(a.procs, pid)
	return p
}

// alive reports whether the runtime's process still exists and is the
// one recorded (a reused pid has another start time).
func alive(rt *model.Runtime) bool {
	ticks, err := startTicks(rt.PID)
	if err != nil {
		return false
	}
	if rt.StartTicks != 0 && ticks != rt.StartTicks {
		return false
	}
	st, err := procState(rt.PID)
	return err == nil && st != "Z" && st != "X"
}

// startTicks is field 22 of /proc/PID/stat: when the process started, in
// clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// fields start after "pid (comm) ", at field 3.
	const startTimeField = 22
	if len(fields) < startTimeField-2 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.ParseUint(fields[startTimeField-3], 10, 64)
}

func procState(pid int) (string, error) {
	fields, err := statFields(pid)
	if err != nil {
		return "", err
	}
	return fields[0], nil
}

// statFields returns /proc/PID/stat's fields after the command name (which
// may hold spaces and parentheses).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) == 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return f, nil
}

// readExit reads the exit record a VMM process left in dir, if any.
func readExit(dir string) (*ExitRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, exitFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec ExitRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("exit record: %w", err)
	}
	return &rec, nil
}

// WriteExit writes rec to path atomically (a temporary file renamed into
// place), for the VMM process.
func WriteExit(path string, rec ExitRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("exit record: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("exit record: %w", err)
	}
	return nil
}

// diedHow describes a process's end from its wait status.
func diedHow(p *process) string {
	if p == nil || p.status == nil {
		return ""
	}
	ws := *p.status
	switch {
	case ws.Signaled():
		return fmt.Sprintf(" (killed by %s)", ws.Signal())
	case ws.Exited():
		return fmt.Sprintf(" (exit status %d)", ws.ExitStatus())
	}
	return ""
}
