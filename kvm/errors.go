package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Errors; test with errors.Is. Errors from ioctls also wrap the errno
// (unix.Errno), so errors.Is(err, unix.EEXIST) works too.
var (
	// ErrNoDevice: there is no usable KVM device at the path (missing,
	// no driver behind it, or not a KVM device at all).
	ErrNoDevice = errors.New("no KVM device")
	// ErrPermission: the device exists but this user may not open it.
	ErrPermission = errors.New("no permission to use KVM")
	// ErrAPIVersion: the kernel speaks a KVM API other than version 12.
	ErrAPIVersion = errors.New("unsupported KVM API version")
	// ErrInterrupted: KVM_RUN returned early (EINTR: a signal or
	// immediate_exit; EAGAIN: the vCPU was not ready) before any exit to
	// handle. The caller decides whether to run again or stop.
	ErrInterrupted = errors.New("interrupted before an exit")
	// ErrWrongExit: an exit accessor (IO, MMIO, ...) was called while the
	// kvm_run page holds a different exit reason.
	ErrWrongExit = errors.New("kvm_run holds a different exit reason")
	// ErrBadRunData: a length or offset in the kvm_run page points outside
	// the page. The kernel fills these, not the guest, but they are checked
	// anyway rather than trusted.
	ErrBadRunData = errors.New("kvm_run field out of bounds")
	// ErrInvalidArgument: an argument was rejected before calling the kernel.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrClosed: the System, VM or VCPU was already closed.
	ErrClosed = errors.New("kvm handle closed")
	// ErrNotFound: a CPUID entry the caller asked for is not in the list.
	ErrNotFound = errors.New("not found")
	// ErrMSRRejected: KVM_GET_MSRS or KVM_SET_MSRS stopped at an MSR the
	// kernel does not accept; the error names it.
	ErrMSRRejected = errors.New("MSR rejected")
)

// APIVersion is the only KVM API version there has ever been in mainline
// Linux; anything else means a kernel we do not understand.
const APIVersion = 12

// openError turns the errno from open(2) or KVM_GET_API_VERSION on path
// into an error that says what is wrong and how to fix it. It is separate
// from Open so the mapping can be tested without a device.
func openError(path string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("open %s: %w", path, err)
	}
	switch errno {
	case unix.ENOENT:
		return fmt.Errorf("%w: open %s: %w (is the kvm module loaded and virtualization enabled in firmware?)", ErrNoDevice, path, errno)
	case unix.ENODEV, unix.ENXIO:
		return fmt.Errorf("%w: open %s: %w (no driver behind the device node; load kvm_intel or kvm_amd)", ErrNoDevice, path, errno)
	case unix.EACCES, unix.EPERM:
		return fmt.Errorf("%w: open %s: %w (add the user to group kvm, or check the device's mode)", ErrPermission, path, errno)
	case unix.ENOTTY, unix.EINVAL:
		// The file opened but does not answer KVM_GET_API_VERSION.
		return fmt.Errorf("%w: %s is not a KVM device: %w", ErrNoDevice, path, errno)
	default:
		return fmt.Errorf("open %s: %w", path, errno)
	}
}
