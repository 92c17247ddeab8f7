package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// VCPU is one virtual CPU: its fd and its kvm_run mapping.
//
// A VCPU belongs to one goroutine, normally locked to its OS thread
// (runtime.LockOSThread) so that a signal can kick it out of KVM_RUN.
// The exception is SetImmediateExit, which another goroutine may call while
// Run is in progress. Close must not overlap any other call.
type VCPU struct {
	fd  int // -1 once closed
	id  int
	run runPage // the mmap of the vCPU fd; nil once closed
}

// Fd is the vCPU's file descriptor, or -1 after Close.
func (v *VCPU) Fd() int { return v.fd }

// ID is the id the vCPU was created with (its APIC id).
func (v *VCPU) ID() int { return v.id }

// Close unmaps kvm_run and closes the vCPU fd.
func (v *VCPU) Close() error {
	if v.fd < 0 {
		return nil
	}
	var errUnmap, errClose error
	if v.run != nil {
		if err := unix.Munmap(v.run); err != nil {
			errUnmap = fmt.Errorf("vCPU %d: munmap kvm_run: %w", v.id, err)
		}
		v.run = nil
	}
	if err := unix.Close(v.fd); err != nil {
		errClose = fmt.Errorf("vCPU %d: close fd: %w", v.id, err)
	}
	v.fd = -1
	return errors.Join(errUnmap, errClose)
}

// Run enters the guest until the next exit to user space (KVM_RUN). It
// returns nil when there is an exit to handle (see ExitReason). It returns
// an error matching ErrInterrupted (and unix.EINTR or unix.EAGAIN) when
// KVM_RUN came back without an exit, because a signal arrived or
// immediate_exit was set; this is not retried here, so that a signal can
// stop the vCPU. Any other error is fatal for the vCPU.
func (v *VCPU) Run() error {
	if v.fd < 0 {
		return fmt.Errorf("%v: vCPU %d: %w", reqRun, v.id, ErrClosed)
	}
	switch errno := runIoctl(v.fd); errno {
	case 0:
		return nil
	case unix.EINTR, unix.EAGAIN:
		return fmt.Errorf("%v: %w: %w", reqRun, ErrInterrupted, errno)
	default:
		return fmt.Errorf("%v: vCPU %d: %w", reqRun, v.id, errno)
	}
}

// ExitReason is why the last Run returned (ExitUnknown after Close).
func (v *VCPU) ExitReason() ExitReason { return v.run.exitReason() }

// IO returns the port I/O exit (ExitIO). Its Data lies inside the kvm_run
// mapping and has been checked to fit there.
func (v *VCPU) IO() (IOExit, error) { return v.run.io() }

// MMIO returns the MMIO exit (ExitMMIO).
func (v *VCPU) MMIO() (MMIOExit, error) { return v.run.mmio() }

// InternalError returns the KVM internal error (ExitInternalError).
func (v *VCPU) InternalError() (InternalErrorExit, error) { return v.run.internalError() }

// SystemEvent returns the system event (ExitSystemEvent).
func (v *VCPU) SystemEvent() (SystemEventExit, error) { return v.run.systemEvent() }

// FailEntry returns the failed-entry details (ExitFailEntry).
func (v *VCPU) FailEntry() (FailEntryExit, error) { return v.run.failEntry() }

// Debug returns the debug exit (ExitDebug).
func (v *VCPU) Debug() (DebugExit, error) { return v.run.debug() }

// SetImmediateExit sets kvm_run.immediate_exit: while it is set, KVM_RUN
// returns ErrInterrupted at once instead of entering the guest. Set it from
// another goroutine (then signal the vCPU thread) to stop a running vCPU
// without losing an exit; clear it before running again.
func (v *VCPU) SetImmediateExit(on bool) { v.run.setByte(runImmediateExit, on) }

// SetRequestInterruptWindow asks for an ExitIRQWindowOpen as soon as the
// guest can take an interrupt (for injecting interrupts without the
// in-kernel irqchip).
func (v *VCPU) SetRequestInterruptWindow(on bool) {
	v.run.setByte(runRequestInterruptWindow, on)
}

// ReadyForInterruptInjection is kvm_run.ready_for_interrupt_injection.
func (v *VCPU) ReadyForInterruptInjection() bool {
	return v.run.byteSet(runReadyForInterruptInjection)
}

// InterruptFlag is kvm_run.if_flag: the guest's RFLAGS.IF at the exit.
func (v *VCPU) InterruptFlag() bool { return v.run.byteSet(runIFFlag) }

// CR8 is kvm_run.cr8 at the exit.
func (v *VCPU) CR8() uint64 { return v.run.u64(runCR8) }

// APICBase is kvm_run.apic_base at the exit.
func (v *VCPU) APICBase() uint64 { return v.run.u64(runAPICBase) }

// vcpuGet and vcpuSet wrap the fixed-size register ioctls.
func vcpuGet[T any](v *VCPU, req request) (T, error) {
	var t T
	if _, err := ioctlPtr(v.fd, req, &t); err != nil {
		return t, fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	return t, nil
}

func vcpuSet[T any](v *VCPU, req request, t T) error {
	if _, err := ioctlPtr(v.fd, req, &t); err != nil {
		return fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	return nil
}

// Regs reads the general-purpose registers (KVM_GET_REGS).
func (v *VCPU) Regs() (Regs, error) { return vcpuGet[Regs](v, reqGetRegs) }

// SetRegs writes the general-purpose registers (KVM_SET_REGS).
func (v *VCPU) SetRegs(r Regs) error { return vcpuSet(v, reqSetRegs, r) }

// Sregs reads the special registers (KVM_GET_SREGS).
func (v *VCPU) Sregs() (Sregs, error) { return vcpuGet[Sregs](v, reqGetSregs) }

// SetSregs writes the special registers (KVM_SET_SREGS).
func (v *VCPU) SetSregs(s Sregs) error { return vcpuSet(v, reqSetSregs, s) }

// FPU reads the x87/SSE state (KVM_GET_FPU).
func (v *VCPU) FPU() (FPU, error) { return vcpuGet[FPU](v, reqGetFPU) }

// SetFPU writes the x87/SSE state (KVM_SET_FPU).
func (v *VCPU) SetFPU(f FPU) error { return vcpuSet(v, reqSetFPU, f) }

// LAPIC reads the in-kernel local APIC's registers (KVM_GET_LAPIC); it
// needs CreateIRQChip.
func (v *VCPU) LAPIC() (LAPICState, error) { return vcpuGet[LAPICState](v, reqGetLAPIC) }

// SetLAPIC writes the in-kernel local APIC's registers (KVM_SET_LAPIC).
func (v *VCPU) SetLAPIC(s LAPICState) error { return vcpuSet(v, reqSetLAPIC, s) }

// MPState is struct kvm_mp_state: whether a vCPU runs or waits for
// INIT/SIPI (KVM_MP_STATE_*).
type MPState uint32

// MP states wisp uses.
const (
	MPStateRunnable      MPState = 0
	MPStateUninitialized MPState = 1
	MPStateInitReceived  MPState = 2
	MPStateHalted        MPState = 3
)

// MPState reads the vCPU's multiprocessing state (KVM_GET_MP_STATE).
func (v *VCPU) MPState() (MPState, error) { return vcpuGet[MPState](v, reqGetMPState) }

// SetMPState sets it (KVM_SET_MP_STATE). With an in-kernel LAPIC every AP
// starts waiting for a SIPI; setting MPStateRunnable starts it at the
// registers the VMM gave it instead.
func (v *VCPU) SetMPState(s MPState) error { return vcpuSet(v, reqSetMPState, s) }

// SetCPUID sets what CPUID returns in the guest (KVM_SET_CPUID2). Call it
// before the first Run.
func (v *VCPU) SetCPUID(c *CPUID) error {
	if c == nil {
		return fmt.Errorf("%v: nil CPUID: %w", reqSetCPUID2, ErrInvalidArgument)
	}
	hdr, entries := flexBuffer[kvmCPUID2Header, CPUIDEntry](len(c.Entries))
	hdr.Nent = uint32(len(c.Entries))
	copy(entries, c.Entries)
	if _, err := ioctlPtr(v.fd, reqSetCPUID2, hdr); err != nil {
		return fmt.Errorf("vCPU %d: %d entries: %w", v.id, len(c.Entries), err)
	}
	return nil
}

// CPUID reads back the vCPU's CPUID entries (KVM_GET_CPUID2).
func (v *VCPU) CPUID() (*CPUID, error) {
	c, err := getCPUID(v.fd, reqGetCPUID2)
	if err != nil {
		return nil, fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	return c, nil
}

// MSRs reads the MSRs with the given indices (KVM_GET_MSRS). If the kernel
// stops at one it does not know, the error matches ErrMSRRejected and names
// that MSR.
func (v *VCPU) MSRs(indices []uint32) ([]MSR, error) {
	hdr, entries := flexBuffer[kvmMSRsHeader, MSR](len(indices))
	hdr.NMSRs = uint32(len(indices))
	for i, idx := range indices {
		entries[i].Index = idx
	}
	n, err := ioctlPtr(v.fd, reqGetMSRs, hdr)
	if err != nil {
		return nil, fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	if n < len(indices) {
		return nil, fmt.Errorf("%v: vCPU %d: read %d of %d MSRs, stopped at %#x: %w", reqGetMSRs, v.id, n, len(indices), indices[n], ErrMSRRejected)
	}
	return append([]MSR(nil), entries...), nil
}

// SetMSRs writes MSRs (KVM_SET_MSRS). If the kernel stops at one it does
// not accept, the error matches ErrMSRRejected and names that MSR; the ones
// before it were written.
func (v *VCPU) SetMSRs(msrs []MSR) error {
	hdr, entries := flexBuffer[kvmMSRsHeader, MSR](len(msrs))
	hdr.NMSRs = uint32(len(msrs))
	copy(entries, msrs)
	n, err := ioctlPtr(v.fd, reqSetMSRs, hdr)
	if err != nil {
		return fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	if n < len(msrs) {
		return fmt.Errorf("%v: vCPU %d: wrote %d of %d MSRs, stopped at %#x: %w", reqSetMSRs, v.id, n, len(msrs), msrs[n].Index, ErrMSRRejected)
	}
	return nil
}

// TranslateAddr translates guest-virtual gva with the vCPU's current page
// tables and segments (KVM_TRANSLATE); valid is false if nothing is mapped
// there. Useful to fetch the instruction bytes at RIP after a failure.
func (v *VCPU) TranslateAddr(gva uint64) (gpa uint64, valid bool, err error) {
	t := kvmTranslation{LinearAddress: gva}
	if _, err := ioctlPtr(v.fd, reqTranslate, &t); err != nil {
		return 0, false, fmt.Errorf("vCPU %d: address %#x: %w", v.id, gva, err)
	}
	return t.PhysicalAddress, t.Valid != 0, nil
}
