package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// logger sends init's messages to the kernel log (/dev/kmsg), so they
// reach the console only as the console log level allows: a command's
// output stays clean, and dmesg still shows what happened. Before /dev is
// mounted, and for fatal errors, it writes to stderr (the console).
type logger struct {
	kmsg *os.File
}

func (l *logger) openKmsg() {
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		l.kmsg = f
	}
}

// printk writes one message at a syslog level (3 = error, 6 = info).
func (l *logger) printk(level int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if l.kmsg != nil {
		if _, err := fmt.Fprintf(l.kmsg, "<%d>wisp-init: %s\n", level, msg); err == nil {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "wisp-init: %s\n", msg)
}

func (l *logger) infof(format string, args ...any)  { l.printk(6, format, args...) }
func (l *logger) errorf(format string, args ...any) { l.printk(3, format, args...) }

// fatalf reports an error that stops the guest: always on the console.
func (l *logger) fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wisp-init: %s\n", fmt.Sprintf(format, args...))
	l.printk(2, format, args...)
}

// mountSpec is one filesystem init mounts.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func mounts() []mountSpec {
	const hardened = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []mountSpec{
		{"proc", "/proc", "proc", hardened, ""},
		{"sysfs", "/sys", "sysfs", hardened, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
}

// mountAll mounts the standard filesystems. A filesystem already mounted
// (the kernel mounts devtmpfs itself when it mounts a disk root) is fine;
// other failures are logged and init goes on: a shell with less is more
// useful than a panic.
func mountAll(log *logger) {
	for _, m := range mounts() {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			log.errorf("mkdir %s: %v", m.target, err)
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			log.errorf("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
	// The usual /dev links that devtmpfs does not make.
	for link, target := range map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	} {
		os.Symlink(target, link)
	}
}

// setupSystem sets the host name and brings up the loopback interface.
func setupSystem(log *logger) {
	if err := unix.Sethostname([]byte("wisp")); err != nil {
		log.errorf("sethostname: %v", err)
	}
	if err := loopbackUp(); err != nil {
		log.errorf("bring up lo: %v", err)
	}
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// quietConsole sets the console log level to 1: only KERN_EMERG messages
// (panics, the final "Power down") still reach the console.
func quietConsole(log *logger) {
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0); err != nil {
		log.errorf("lower console log level: %v", err)
	}
}

// Boot marker: the VMM's debug port device at 0x440 records the byte
// userspaceReached when userspace starts.
const (
	debugPort        = 0x440
	userspaceReached = 0x7f
)

// markUserspace writes the boot marker. A VMM without the device ignores
// it; a kernel refusing ioperm only costs the marker.
func markUserspace(log *logger) {
	if err := writePort(debugPort, userspaceReached); err != nil {
		log.infof("boot marker on port %#x: %v", debugPort, err)
	}
}
