// Package vmm turns a validated Config into a running virtual machine on one
// of two backends: wisp's own KVM VMM or QEMU's TCG emulator.
package vmm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Accel names the engine that runs the guest's CPUs.
type Accel string

// Accelerators wisp knows.
const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// ConsoleKind says where the guest's serial console goes.
type ConsoleKind string

// Console kinds.
const (
	ConsoleStdio ConsoleKind = "stdio"
	ConsoleFile  ConsoleKind = "file"
	ConsoleNone  ConsoleKind = "none"
)

// RebootPolicy says what a guest reset does.
type RebootPolicy string

// Reboot policies.
const (
	RebootExit    RebootPolicy = "exit"
	RebootRestart RebootPolicy = "restart"
)

// BootMode says how the guest starts.
type BootMode string

// Boot modes.
const (
	// BootKernel loads Config.Kernel (and Initrd) directly: the fast path.
	BootKernel BootMode = "kernel"
	// BootFirmware starts SeaBIOS, which boots the first disk's own
	// bootloader, for images that bring one. Only the TCG backend has it.
	BootFirmware BootMode = "firmware"
)

// Config is everything needed to build a VM. Validate it once; backends
// trust a validated Config.
type Config struct {
	Kernel      string
	Initrd      string
	Cmdline     string
	CPUs        int
	MemoryBytes uint64
	Console     ConsoleKind
	ConsolePath string // with ConsoleFile
	Accel       Accel
	OnReboot    RebootPolicy
	// KVMDevice is the KVM device node; tests point it elsewhere.
	KVMDevice string
	// Disks are virtio-blk disks in guest order (the first is /dev/vda).
	Disks []Disk
	// Nets are virtio-net devices in guest order (the first is eth0).
	Nets []Net
	// RNG adds a virtio-rng device fed from the host's crypto/rand.
	RNG bool
	// Boot is BootKernel (the default) or BootFirmware.
	Boot BootMode
	// StateDir is a directory private to this VM where it keeps what it
	// writes at run time (qcow2 overlays, sockets). Empty: a fresh
	// directory under os.TempDir(), removed when the VM is closed.
	StateDir string
}

// Limits on what a guest may ask for.
const (
	MaxCPUs       = 64
	MinMemory     = 16 << 20
	DefaultMemory = 256 << 20
	// DefaultCmdline gives a console on COM1 that works with both wisp's own
	// UART and QEMU's, and makes a panic or reboot end the VM promptly.
	DefaultCmdline = "console=ttyS0 reboot=k panic=-1"
	DefaultKVM     = "/dev/kvm"
)

// ErrInvalidConfig marks every configuration error; test with errors.Is.
var ErrInvalidConfig = errors.New("invalid configuration")

// configError prints as just its message (it is meant for the user) and
// matches ErrInvalidConfig.
type configError struct{ msg string }

func (e *configError) Error() string        { return e.msg }
func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

// FieldError is a Config field that cannot be used: Field is its path in
// Config ("CPUs", "MemoryBytes", "Disks[1]", "Nets[0]"), Value the value at
// fault as text (empty when the message says it all; MemoryBytes in plain
// bytes), and Msg the problem and the fix in words that hold both for a
// program that filled a Config and for a CLI that mapped flags to it, so
// callers can point at their own name for the field. It matches
// ErrInvalidConfig, and Err, when set, is the cause for errors.Is.
type FieldError struct {
	Field string
	Value string
	Msg   string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return "Config." + e.Field + ": " + e.Msg
	}
	return "Config." + e.Field + " " + e.Value + ": " + e.Msg
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns the cause, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// fieldError builds a *FieldError with a formatted message.
func fieldError(field, value, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// Invalidf builds a configuration error: one line for the user that names
// the flag and the fix, matching ErrInvalidConfig.
func Invalidf(format string, args ...any) error { return invalid(format, args...) }

func invalid(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// ParseSize reads sizes such as 256M, 1G, 1536MiB, 512k or a plain byte
// count. Units are binary (M = MiB).
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, invalid("empty size")
	}
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, invalid("size %q: want a number with an optional unit (K, M, G, T)", s)
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, invalid("size %q: unknown unit %q (use K, M, G or T)", s, t[i:])
	}
	if n > (^uint64(0))>>sh {
		return 0, invalid("size %q is too large", s)
	}
	return n << sh, nil
}
