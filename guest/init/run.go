package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spawn starts argv in a new process group, which it makes the console's
// foreground group, with the console as stdin, stdout and stderr. Its
// process group id is its pid.
//
// The command does not get a session of its own: when a session leader
// exits, the kernel hangs up its controlling terminal, which discards
// output still queued for the UART and makes init's own console descriptor
// unusable for the exit record. init stays the console's session leader
// (see takeConsole) and hands the foreground to each command, as a shell
// does.
func spawn(path string, argv []string, console *os.File) (int, error) {
	fd := console.Fd()
	return syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   childEnv(os.Environ()),
		Files: []uintptr{fd, fd, fd},
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Foreground: true,
			Ctty:       int(fd), // Foreground's tcsetpgrp runs before Files are arranged
		},
	})
}

// reclaimForeground makes init's process group the console's foreground
// again after a command exits, so a signal typed later (^C) reaches init
// and not a dead group.
func reclaimForeground(log *logger, console *os.File) {
	err := asBackground(func() error {
		return unix.IoctlSetPointerInt(int(console.Fd()), unix.TIOCSPGRP, unix.Getpgrp())
	})
	if err != nil {
		log.errorf("reclaim console foreground: %v", err)
	}
}

// exitStatus turns a wait status into a shell-style status: the exit code,
// or 128 + the signal number for a process killed by a signal.
func exitStatus(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return statusInitFailure
}

// waitFor reaps children until pid exits and returns its wait status. As
// PID 1, init inherits every orphan in the guest; reaping them here keeps
// zombies from piling up while the command runs.
func waitFor(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, fmt.Errorf("wait4: %w", err)
		case got == pid && (ws.Exited() || ws.Signaled()):
			return ws, nil
		}
	}
}

// forwardSignals passes SIGINT, SIGTERM and SIGPWR that init receives
// (from the kernel's ctrl-alt-del handling, or a VMM asking for a graceful
// stop) to the command's process group as SIGTERM, until done is closed.
//
// A power-button press ends every process, as stopEverything does before
// power-off: SIGTERM, then SIGKILL after stopGrace for whatever is left (an
// interactive shell ignores SIGTERM). The command's end then takes init
// down its usual path to power-off. Reaping stays with waitFor.
func forwardSignals(log *logger, console *os.File, pgid int, sigs <-chan os.Signal, button <-chan struct{}, done <-chan struct{}) {
	var killAfterGrace <-chan time.Time
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			if s == unix.SIGHUP {
				continue
			}
			unix.Kill(-pgid, unix.SIGTERM)
		case <-button:
			button = nil // one press is enough
			// On the console, so whoever watches it knows why the
			// command ended; on a line of its own, since a prompt or a
			// partial line may be there.
			fmt.Fprintln(console, "\nwisp-init: power button pressed: ending all processes and powering off")
			unix.Kill(-1, unix.SIGTERM)
			killAfterGrace = time.After(stopGrace)
		case <-killAfterGrace:
			killAfterGrace = nil
			log.infof("killing processes still running after SIGTERM")
			unix.Kill(-1, unix.SIGKILL)
		}
	}
}

// runCommand runs argv on the console and returns its exit status. It
// prints to the console only when the command cannot be started, the way
// a shell would.
func runCommand(log *logger, console *os.File, argv []string, sigs <-chan os.Signal, button <-chan struct{}) int {
	os.Setenv("PATH", pathOf(childEnv(os.Environ())))
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(console, "wisp-init: %s: %v\n", argv[0], err)
		if errors.Is(err, os.ErrPermission) {
			return statusNotExecutable
		}
		return statusNotFound
	}
	pid, err := spawn(path, argv, console)
	if err != nil {
		fmt.Fprintf(console, "wisp-init: %s: %v\n", argv[0], err)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) {
			return statusNotExecutable
		}
		return statusNotFound
	}
	done := make(chan struct{})
	go forwardSignals(log, console, pid, sigs, button, done)
	ws, err := waitFor(pid)
	close(done)
	reclaimForeground(log, console)
	if err != nil {
		log.errorf("%v", err)
		return statusInitFailure
	}
	return exitStatus(ws)
}

func pathOf(env []string) string {
	for _, kv := range env {
		if len(kv) > 5 && kv[:5] == "PATH=" {
			return kv[5:]
		}
	}
	return defaultPath
}

// runShell runs an interactive login shell on the console and returns when
// it exits (or the power button ended it).
func runShell(log *logger, console *os.File, sigs <-chan os.Signal, button <-chan struct{}) {
	const shell = "/bin/sh"
	// "-sh": a leading dash makes it a login shell, which reads /etc/profile.
	pid, err := spawn(shell, []string{"-sh"}, console)
	if err != nil {
		fmt.Fprintf(console, "wisp-init: cannot start %s: %v\n", shell, err)
		return
	}
	done := make(chan struct{})
	go forwardSignals(log, console, pid, sigs, button, done)
	if _, err := waitFor(pid); err != nil {
		log.errorf("%v", err)
	}
	close(done)
	reclaimForeground(log, console)
}

// stopGrace is how long processes left over after the command get to exit
// on SIGTERM before they are killed.
const stopGrace = 2 * time.Second

// stopEverything ends every remaining process (background jobs the command
// left behind) so filesystems are quiet before power-off: SIGTERM, a short
// grace period, then SIGKILL, reaping as they go.
func stopEverything(log *logger) {
	if unix.Kill(-1, unix.SIGTERM) != nil {
		return // ESRCH: nothing else is running
	}
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) {
		if reapAll() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.infof("killing processes still running after SIGTERM")
	unix.Kill(-1, unix.SIGKILL)
	for !reapAll() {
		time.Sleep(10 * time.Millisecond)
	}
}

// reapAll collects exited children without blocking and reports whether
// none are left.
func reapAll() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			return true
		}
		if err != nil || pid == 0 {
			return false
		}
	}
}
