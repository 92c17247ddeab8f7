package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

// consoleDevice picks the device node behind /dev/console from the
// contents of /sys/class/tty/console/active, which lists the enabled
// consoles with the one /dev/console refers to last (e.g. "tty0 ttyS0").
// "" means it cannot tell.
func consoleDevice(active string) string {
	f := strings.Fields(active)
	if len(f) == 0 {
		return ""
	}
	name := f[len(f)-1]
	if strings.ContainsAny(name, "/.") {
		return ""
	}
	return "/dev/" + name
}

// takeConsole opens the console and makes it init's controlling terminal:
// init becomes a session leader (PID 1 starts in the kernel's session 0)
// and stays one for the guest's life, so the terminal is never hung up
// (see spawn).
func takeConsole() (*os.File, error) {
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("setsid: %w", err)
	}
	console, err := openConsole()
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlSetInt(int(console.Fd()), unix.TIOCSCTTY, 1); err != nil {
		console.Close()
		return nil, fmt.Errorf("make %s the controlling terminal: %w", console.Name(), err)
	}
	return console, nil
}

// openConsole opens the real console device (e.g. /dev/ttyS0) rather than
// /dev/console: /dev/console cannot become a controlling terminal, and
// without one a shell has no job control and ^C does not reach the
// command.
func openConsole() (*os.File, error) {
	if b, err := os.ReadFile("/sys/class/tty/console/active"); err == nil {
		if dev := consoleDevice(string(b)); dev != "" {
			if f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0); err == nil {
				return f, nil
			}
		}
	}
	return os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
}

// configureConsole applies wisp.tty and wisp.winsize. Raw mode turns off
// echo and output processing, for a host that feeds pipes rather than a
// terminal; canonical input and signals stay on so ^D and ^C still work.
func configureConsole(log *logger, console *os.File, p initproto.Params) {
	fd := int(console.Fd())
	if p.RawTTY {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			log.errorf("console termios: %v", err)
		} else {
			rawOutput(t)
			if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
				log.errorf("console termios: %v", err)
			}
		}
	}
	if p.Cols > 0 && p.Rows > 0 {
		ws := &unix.Winsize{Col: p.Cols, Row: p.Rows}
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
			log.errorf("console window size: %v", err)
		}
	}
}

// rawOutput turns off echo and output post-processing in t.
func rawOutput(t *unix.Termios) {
	t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOKE
	t.Oflag &^= unix.OPOST
}

// asBackground runs f, a terminal ioctl that the kernel only allows the
// foreground process group (tcsetpgrp, tcdrain), with SIGTTOU blocked on
// the calling thread: a process in the background may then make it.
// (Ignoring SIGTTOU instead would be inherited by every command.)
func asBackground(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (unix.SIGTTOU - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return fmt.Errorf("block SIGTTOU: %w", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return f()
}
