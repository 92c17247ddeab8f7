package kvm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// request is an ioctl request number. Its String is the C macro's name, so
// errors read "KVM_CREATE_VCPU: file exists".
type request uintptr

// The encoding of <asm-generic/ioctl.h>: dir<<30 | size<<16 | type<<8 | nr.
// Go has no constant functions, so _IO/_IOR/_IOW/_IOWR are prefixes that
// each request ORs with its number and, for the ones with an argument, the
// argument's size from unsafe.Sizeof. abi_test.go compares every request
// with the value the C macros give.
const (
	iocWrite     = 1
	iocRead      = 2
	iocDirShift  = 30
	iocSizeShift = 16
	kvmio        = 0xAE // the KVM ioctl "type"

	ioNone = request(kvmio << 8)                                 // _IO(KVMIO, nr)
	ioR    = request(iocRead<<iocDirShift | kvmio<<8)            // _IOR(KVMIO, nr, T)
	ioW    = request(iocWrite<<iocDirShift | kvmio<<8)           // _IOW(KVMIO, nr, T)
	ioWR   = request((iocRead|iocWrite)<<iocDirShift | kvmio<<8) // _IOWR(KVMIO, nr, T)
)

// Only the ioctls wisp needs.
const (
	// System (/dev/kvm).
	reqGetAPIVersion     = ioNone | 0x00
	reqCreateVM          = ioNone | 0x01
	reqGetMSRIndexList   = ioWR | 0x02 | request(unsafe.Sizeof(kvmMSRListHeader{}))<<iocSizeShift
	reqCheckExtension    = ioNone | 0x03 // also on a VM fd
	reqGetVCPUMmapSize   = ioNone | 0x04
	reqGetSupportedCPUID = ioWR | 0x05 | request(unsafe.Sizeof(kvmCPUID2Header{}))<<iocSizeShift

	// VM.
	reqCreateVCPU          = ioNone | 0x41
	reqSetUserMemoryRegion = ioW | 0x46 | request(unsafe.Sizeof(kvmUserspaceMemoryRegion{}))<<iocSizeShift
	reqSetTSSAddr          = ioNone | 0x47
	reqSetIdentityMapAddr  = ioW | 0x48 | request(unsafe.Sizeof(uint64(0)))<<iocSizeShift
	reqCreateIRQChip       = ioNone | 0x60
	reqIRQLine             = ioW | 0x61 | request(unsafe.Sizeof(kvmIRQLevel{}))<<iocSizeShift
	reqSetGSIRouting       = ioW | 0x6a | request(unsafe.Sizeof(kvmIRQRoutingHeader{}))<<iocSizeShift
	reqIRQFD               = ioW | 0x76 | request(unsafe.Sizeof(kvmIRQFD{}))<<iocSizeShift
	reqCreatePIT2          = ioW | 0x77 | request(unsafe.Sizeof(kvmPITConfig{}))<<iocSizeShift
	reqIOEventFD           = ioW | 0x79 | request(unsafe.Sizeof(kvmIOEventFD{}))<<iocSizeShift
	reqSignalMSI           = ioW | 0xa5 | request(unsafe.Sizeof(kvmMSI{}))<<iocSizeShift

	// vCPU.
	reqRun       = ioNone | 0x80
	reqGetRegs   = ioR | 0x81 | request(unsafe.Sizeof(Regs{}))<<iocSizeShift
	reqSetRegs   = ioW | 0x82 | request(unsafe.Sizeof(Regs{}))<<iocSizeShift
	reqGetSregs  = ioR | 0x83 | request(unsafe.Sizeof(Sregs{}))<<iocSizeShift
	reqSetSregs  = ioW | 0x84 | request(unsafe.Sizeof(Sregs{}))<<iocSizeShift
	reqTranslate = ioWR | 0x85 | request(unsafe.Sizeof(kvmTranslation{}))<<iocSizeShift
	reqGetMSRs   = ioWR | 0x88 | request(unsafe.Sizeof(kvmMSRsHeader{}))<<iocSizeShift
	reqSetMSRs   = ioW | 0x89 | request(unsafe.Sizeof(kvmMSRsHeader{}))<<iocSizeShift
	reqGetFPU    = ioR | 0x8c | request(unsafe.Sizeof(FPU{}))<<iocSizeShift
	reqSetFPU    = ioW | 0x8d | request(unsafe.Sizeof(FPU{}))<<iocSizeShift
	reqGetLAPIC  = ioR | 0x8e | request(unsafe.Sizeof(LAPICState{}))<<iocSizeShift
	reqSetLAPIC  = ioW | 0x8f | request(unsafe.Sizeof(LAPICState{}))<<iocSizeShift

	reqGetMPState = ioR | 0x98 | request(unsafe.Sizeof(MPState(0)))<<iocSizeShift
	reqSetMPState = ioW | 0x99 | request(unsafe.Sizeof(MPState(0)))<<iocSizeShift
	reqSetCPUID2  = ioW | 0x90 | request(unsafe.Sizeof(kvmCPUID2Header{}))<<iocSizeShift
	reqGetCPUID2  = ioWR | 0x91 | request(unsafe.Sizeof(kvmCPUID2Header{}))<<iocSizeShift
)

// namedRequest pairs a request with its C name.
type namedRequest struct {
	name string
	req  request
}

// allRequests lists every request above with its C name, for String and
// for the ABI test.
func allRequests() []namedRequest {
	return []namedRequest{
		{"KVM_GET_API_VERSION", reqGetAPIVersion},
		{"KVM_CREATE_VM", reqCreateVM},
		{"KVM_GET_MSR_INDEX_LIST", reqGetMSRIndexList},
		{"KVM_CHECK_EXTENSION", reqCheckExtension},
		{"KVM_GET_VCPU_MMAP_SIZE", reqGetVCPUMmapSize},
		{"KVM_GET_SUPPORTED_CPUID", reqGetSupportedCPUID},
		{"KVM_CREATE_VCPU", reqCreateVCPU},
		{"KVM_SET_USER_MEMORY_REGION", reqSetUserMemoryRegion},
		{"KVM_SET_TSS_ADDR", reqSetTSSAddr},
		{"KVM_SET_IDENTITY_MAP_ADDR", reqSetIdentityMapAddr},
		{"KVM_CREATE_IRQCHIP", reqCreateIRQChip},
		{"KVM_IRQ_LINE", reqIRQLine},
		{"KVM_SET_GSI_ROUTING", reqSetGSIRouting},
		{"KVM_IRQFD", reqIRQFD},
		{"KVM_CREATE_PIT2", reqCreatePIT2},
		{"KVM_IOEVENTFD", reqIOEventFD},
		{"KVM_SIGNAL_MSI", reqSignalMSI},
		{"KVM_RUN", reqRun},
		{"KVM_GET_REGS", reqGetRegs},
		{"KVM_SET_REGS", reqSetRegs},
		{"KVM_GET_SREGS", reqGetSregs},
		{"KVM_SET_SREGS", reqSetSregs},
		{"KVM_TRANSLATE", reqTranslate},
		{"KVM_GET_MSRS", reqGetMSRs},
		{"KVM_SET_MSRS", reqSetMSRs},
		{"KVM_GET_FPU", reqGetFPU},
		{"KVM_SET_FPU", reqSetFPU},
		{"KVM_GET_LAPIC", reqGetLAPIC},
		{"KVM_SET_LAPIC", reqSetLAPIC},
		{"KVM_GET_MP_STATE", reqGetMPState},
		{"KVM_SET_MP_STATE", reqSetMPState},
		{"KVM_SET_CPUID2", reqSetCPUID2},
		{"KVM_GET_CPUID2", reqGetCPUID2},
	}
}

func (r request) String() string {
	for _, n := range allRequests() {
		if n.req == r {
			return n.name
		}
	}
	return fmt.Sprintf("ioctl(%#x)", uintptr(r))
}

// ioctl issues req on fd with a plain integer argument (or none) and
// returns the ioctl's non-negative result. EINTR is retried: none of these
// requests has side effects when interrupted. KVM_RUN does not come through
// here because its EINTR must reach the caller.
func ioctl(fd int, req request, arg uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return int(r), fmt.Errorf("%v: %w", req, errno)
		}
		return int(r), nil
	}
}

// ioctlPtr is ioctl with a pointer argument. The pointer is converted to
// uintptr inside the Syscall argument list, which keeps *arg alive and in
// place for the duration of the call (unsafe.Pointer rule 4).
func ioctlPtr[T any](fd int, req request, arg *T) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(arg)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return int(r), fmt.Errorf("%v: %w", req, errno)
		}
		return int(r), nil
	}
}

// runIoctl issues KVM_RUN once and returns the bare errno, unretried.
func runIoctl(fd int) unix.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(reqRun), 0)
	return errno
}

// flexBuffer allocates a kernel struct with a flexible array member (a
// header H followed by n entries E, as kvm_cpuid2, kvm_msrs, kvm_msr_list
// and kvm_irq_routing are) in one buffer of uint64s, so it is 8-byte
// aligned like the C struct. It returns the header, to pass to the ioctl,
// and the entries, which alias the same memory. The header pointer keeps
// the whole buffer alive.
func flexBuffer[H, E any](n int) (*H, []E) {
	var h H
	var e E
	// In all four structs the entries start right after the header;
	// abi_test.go checks that offsetof(entries) == sizeof(header).
	size := unsafe.Sizeof(h) + uintptr(n)*unsafe.Sizeof(e)
	buf := make([]uint64, (size+7)/8)
	base := unsafe.Pointer(unsafe.SliceData(buf))
	if n == 0 {
		// No pointer one past the end of buf: that would be invalid.
		return (*H)(base), nil
	}
	entries := unsafe.Slice((*E)(unsafe.Add(base, unsafe.Sizeof(h))), n)
	return (*H)(base), entries
}

// sliceAddr is the host virtual address of b's first byte, for
// kvm_userspace_memory_region.userspace_addr. b must not be Go heap memory
// the caller lets go of: KVM keeps using the address after the call.
func sliceAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}
