package kvm

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// System is an open /dev/kvm: the handle for capabilities and for
// creating VMs. It is safe for concurrent use.
type System struct {
	mu         sync.Mutex
	fd         int // -1 once closed
	apiVersion int
}

// Open opens the KVM device at path (normally "/dev/kvm") and checks that
// it speaks API version 12. A missing device gives an error that matches
// ErrNoDevice, a device this user may not open one that matches
// ErrPermission; both say how to fix it.
func Open(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	v, err := ioctl(fd, reqGetAPIVersion, 0)
	if err != nil {
		unix.Close(fd)
		var errno unix.Errno
		if errors.As(err, &errno) && (errno == unix.ENOTTY || errno == unix.EINVAL) {
			return nil, openError(path, errno)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v != APIVersion {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: KVM_GET_API_VERSION returned %d, want %d: %w", path, v, APIVersion, ErrAPIVersion)
	}
	return &System{fd: fd, apiVersion: v}, nil
}

// Fd is the device's file descriptor, or -1 after Close.
func (s *System) Fd() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd
}

// APIVersion is what KVM_GET_API_VERSION returned (always 12).
func (s *System) APIVersion() int { return s.apiVersion }

// Close closes the device. VMs created from it stay usable.
func (s *System) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("close /dev/kvm: %w", err)
	}
	return nil
}

// withFd runs f with the open fd, holding the lock so Close cannot
// close (and the kernel reuse) the fd underneath.
func (s *System) withFd(f func(fd int) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return fmt.Errorf("/dev/kvm: %w", ErrClosed)
	}
	return f(s.fd)
}

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 if unsupported,
// otherwise 1 or a capability-specific number (a count, a size).
func (s *System) CheckExtension(c Cap) (int, error) {
	var n int
	err := s.withFd(func(fd int) (err error) {
		n, err = ioctl(fd, reqCheckExtension, uintptr(c))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%v: %w", c, err)
	}
	return n, nil
}

// VCPUMmapSize is the size of the kvm_run mapping of each vCPU, in bytes
// (the run page plus the pages KVM places after it, such as the PIO data).
func (s *System) VCPUMmapSize() (int, error) {
	var n int
	err := s.withFd(func(fd int) (err error) {
		n, err = ioctl(fd, reqGetVCPUMmapSize, 0)
		return err
	})
	return n, err
}

// cpuidStartEntries is the first buffer size for CPUID lists; it grows
// (doubling) up to cpuidMaxEntries while the kernel answers E2BIG.
// KVM_MAX_CPUID_ENTRIES has been 80 and is 256 since Linux 5.x.
const (
	cpuidStartEntries = 128
	cpuidMaxEntries   = 4096
)

// SupportedCPUID returns the CPUID entries KVM can offer guests on this
// host (KVM_GET_SUPPORTED_CPUID): the starting point for a vCPU's CPUID.
func (s *System) SupportedCPUID() (*CPUID, error) {
	var c *CPUID
	err := s.withFd(func(fd int) (err error) {
		c, err = getCPUID(fd, reqGetSupportedCPUID)
		return err
	})
	return c, err
}

// getCPUID runs a KVM_GET_*CPUID* request, growing the buffer while the
// kernel says it is too small.
func getCPUID(fd int, req request) (*CPUID, error) {
	for n := cpuidStartEntries; ; n *= 2 {
		hdr, entries := flexBuffer[kvmCPUID2Header, CPUIDEntry](n)
		hdr.Nent = uint32(n)
		_, err := ioctlPtr(fd, req, hdr)
		if errors.Is(err, unix.E2BIG) && n < cpuidMaxEntries {
			continue
		}
		if err != nil {
			return nil, err
		}
		if int(hdr.Nent) > n {
			return nil, fmt.Errorf("%v: kernel reported %d entries in a buffer of %d", req, hdr.Nent, n)
		}
		return &CPUID{Entries: append([]CPUIDEntry(nil), entries[:hdr.Nent]...)}, nil
	}
}

// msrListMax bounds the MSR index list; real kernels report a few hundred.
const msrListMax = 1 << 16

// MSRIndexList returns the MSRs KVM can save and restore for a guest
// (KVM_GET_MSR_INDEX_LIST).
func (s *System) MSRIndexList() ([]uint32, error) {
	var out []uint32
	err := s.withFd(func(fd int) error {
		// Ask with room for none: the kernel answers E2BIG and writes
		// how many there are; then ask again with that much room (and
		// again if the list grew in between, which it does not in practice).
		n := 0
		for {
			hdr, indices := flexBuffer[kvmMSRListHeader, uint32](n)
			hdr.NMSRs = uint32(n)
			_, err := ioctlPtr(fd, reqGetMSRIndexList, hdr)
			if errors.Is(err, unix.E2BIG) && int(hdr.NMSRs) > n && hdr.NMSRs <= msrListMax {
				n = int(hdr.NMSRs)
				continue
			}
			if err != nil {
				return err
			}
			if int(hdr.NMSRs) > n {
				return fmt.Errorf("%v: kernel reported %d MSRs in a buffer of %d", reqGetMSRIndexList, hdr.NMSRs, n)
			}
			out = append([]uint32(nil), indices[:hdr.NMSRs]...)
			return nil
		}
	})
	return out, err
}

// CreateVM creates a VM (KVM_CREATE_VM, default machine type).
func (s *System) CreateVM() (*VM, error) {
	var vm *VM
	err := s.withFd(func(fd int) error {
		// Every vCPU maps this much of its fd; ask once here so a VM
		// does not need the System later.
		size, err := ioctl(fd, reqGetVCPUMmapSize, 0)
		if err != nil {
			return err
		}
		if size < runMinSize {
			return fmt.Errorf("%v: %d bytes, need at least %d", reqGetVCPUMmapSize, size, runMinSize)
		}
		vmfd, err := ioctl(fd, reqCreateVM, 0)
		if err != nil {
			return err
		}
		vm = &VM{fd: vmfd, mmapSize: size}
		return nil
	})
	return vm, err
}
