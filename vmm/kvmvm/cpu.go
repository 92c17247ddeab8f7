package kvmvm

import (
	"fmt"
	"strings"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
)

// MSRs set on every vCPU at boot.
const (
	msrIA32TSC          = 0x10
	msrIA32SysenterCS   = 0x174
	msrIA32SysenterESP  = 0x175
	msrIA32SysenterEIP  = 0x176
	msrIA32MiscEnable   = 0x1a0
	msrMTRRDefType      = 0x2ff
	msrSTAR             = 0xc0000081
	msrLSTAR            = 0xc0000082
	msrCSTAR            = 0xc0000083
	msrSyscallMask      = 0xc0000084
	msrKernelGSBase     = 0xc0000102
	miscEnableFastStr   = 1 << 0
	mtrrEnableWriteBack = 1<<11 | 6 // MTRRs on, default type write-back
)

// LAPIC register offsets and the delivery modes wisp programs into LINT0
// and LINT1, as a PC's firmware leaves them: LINT0 takes the legacy PIC's
// interrupts (ExtINT), LINT1 is the NMI line.
const (
	lapicLVTLINT0    = 0x350
	lapicLVTLINT1    = 0x360
	lapicDeliveryMsk = 0x700
	lapicModeExtINT  = 0x700
	lapicModeNMI     = 0x400
)

// CPUID bits wisp adjusts.
const (
	cpuidFeatureECXHypervisor = 1 << 31
)

func (inst *instance) createVCPUs(n int, boot0 boot.CPUState) error {
	supported, err := inst.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	for id := 0; id < n; id++ {
		k, err := inst.vm.CreateVCPU(id)
		if err != nil {
			return err
		}
		c := &vcpu{VCPU: k, mem: inst.mem}
		inst.vcpus = append(inst.vcpus, c)
		if err := setCPUID(c, supported, id, n); err != nil {
			return err
		}
		if err := setBootMSRs(c); err != nil {
			return err
		}
		if err := setLINTs(c); err != nil {
			return err
		}
		if id == 0 || inst.opts.StartAllCPUs {
			if err := setCPUState(c, boot0); err != nil {
				return fmt.Errorf("vCPU %d: %w", id, err)
			}
		}
		if id > 0 && inst.opts.StartAllCPUs {
			// The in-kernel LAPIC parks APs until a SIPI; these start now.
			if err := c.SetMPState(kvm.MPStateRunnable); err != nil {
				return fmt.Errorf("vCPU %d: %w", id, err)
			}
		}
	}
	return nil
}

// setCPUID gives each vCPU what KVM supports, with its own APIC ID and the
// hypervisor bit, so the guest knows it is virtualised and which CPU it is.
func setCPUID(c *vcpu, supported *kvm.CPUID, id, n int) error {
	cpuid := supported.Clone()
	for i := range cpuid.Entries {
		e := &cpuid.Entries[i]
		switch e.Function {
		case 1:
			// EBX[31:24] initial APIC ID, EBX[23:16] logical processors.
			e.EBX = e.EBX&0x0000ffff | uint32(id)<<24 | uint32(n&0xff)<<16
			e.ECX |= cpuidFeatureECXHypervisor
		case 0xb, 0x1f:
			// x2APIC topology: EDX is the x2APIC ID.
			e.EDX = uint32(id)
		}
	}
	if err := c.SetCPUID(cpuid); err != nil {
		return fmt.Errorf("vCPU %d: %w", c.ID(), err)
	}
	return nil
}

func setBootMSRs(c *vcpu) error {
	msrs := []kvm.MSR{
		{Index: msrIA32SysenterCS}, {Index: msrIA32SysenterESP}, {Index: msrIA32SysenterEIP},
		{Index: msrSTAR}, {Index: msrCSTAR}, {Index: msrKernelGSBase}, {Index: msrSyscallMask}, {Index: msrLSTAR},
		{Index: msrIA32TSC},
		{Index: msrIA32MiscEnable, Data: miscEnableFastStr},
		{Index: msrMTRRDefType, Data: mtrrEnableWriteBack},
	}
	if err := c.SetMSRs(msrs); err != nil {
		return fmt.Errorf("vCPU %d: %w", c.ID(), err)
	}
	return nil
}

func setLINTs(c *vcpu) error {
	lapic, err := c.LAPIC()
	if err != nil {
		return err
	}
	for _, l := range []struct {
		reg  uint32
		mode uint32
	}{{lapicLVTLINT0, lapicModeExtINT}, {lapicLVTLINT1, lapicModeNMI}} {
		v, err := lapic.Register(l.reg)
		if err != nil {
			return err
		}
		if err := lapic.SetRegister(l.reg, v&^lapicDeliveryMsk|l.mode); err != nil {
			return err
		}
	}
	return c.SetLAPIC(lapic)
}

// setCPUState loads the boot CPU state the loader asked for.
func setCPUState(c *vcpu, s boot.CPUState) error {
	sregs, err := c.Sregs()
	if err != nil {
		return err
	}
	sregs.CS, sregs.DS, sregs.ES = segment(s.CS), segment(s.DS), segment(s.ES)
	sregs.FS, sregs.GS, sregs.SS = segment(s.FS), segment(s.GS), segment(s.SS)
	sregs.TR, sregs.LDT = segment(s.TR), segment(s.LDT)
	sregs.GDT = kvm.DTable{Base: s.GDT.Base, Limit: s.GDT.Limit}
	sregs.IDT = kvm.DTable{Base: s.IDT.Base, Limit: s.IDT.Limit}
	sregs.CR0, sregs.CR3, sregs.CR4, sregs.EFER = s.CR0, s.CR3, s.CR4, s.EFER
	if err := c.SetSregs(sregs); err != nil {
		return err
	}
	fpu := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
	if err := c.SetFPU(fpu); err != nil {
		return err
	}
	return c.SetRegs(kvm.Regs{
		RIP: s.RIP, RSP: s.RSP, RBP: s.RSP, RSI: s.RSI, RBX: s.RBX, RFlags: s.RFLAGS,
	})
}

func segment(s boot.Segment) kvm.Segment {
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: b2u(s.Present), DPL: s.DPL, DB: b2u(s.DB), S: b2u(s.S),
		L: b2u(s.L), G: b2u(s.G), Unusable: b2u(s.Unusable),
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// realModeState enters a flat binary at 0:addr in real mode, the state a
// CPU leaves reset in apart from CS.
func realModeState(addr uint64) boot.CPUState {
	seg := func(typ uint8) boot.Segment {
		return boot.Segment{Limit: 0xffff, Type: typ, Present: true, S: true}
	}
	data := seg(3) // read/write, accessed
	return boot.CPUState{
		Mode: boot.Mode(0), RIP: addr, RSP: addr, RFLAGS: boot.RFLAGSReserved,
		CR0: boot.CR0ET,
		GDT: boot.DescriptorTable{Limit: 0xffff}, IDT: boot.DescriptorTable{Limit: 0x3ff},
		CS: seg(0xb), DS: data, ES: data, FS: data, GS: data, SS: data,
		TR:  boot.Segment{Limit: 0xffff, Type: 0xb, Present: true},
		LDT: boot.Segment{Limit: 0xffff, Type: 2, Present: true},
	}
}

// emulationFailure describes a KVM internal error in one line: the
// suberror, where the guest was and the bytes KVM choked on.
func emulationFailure(c *vcpu) vmm.ExitStatus {
	ie, err := c.InternalError()
	if err != nil {
		return backendFailure(c, err)
	}
	detail := fmt.Sprintf("vCPU %d: KVM internal error (%v)", c.ID(), ie.Suberror)
	regs, err := c.Regs()
	if err == nil {
		detail += fmt.Sprintf(" at RIP %#x", regs.RIP)
	}
	insn, ok := ie.InstructionBytes()
	if !ok && err == nil {
		insn = c.instructionAt(regs.RIP)
	}
	if len(insn) > 0 {
		detail += ", instruction bytes " + hexBytes(insn)
	}
	return vmm.ExitStatus{Reason: vmm.ExitEmulationFailure, Detail: detail}
}

// instructionAt reads up to 15 bytes at the guest virtual address rip, when
// the page tables translate it; best effort, for the error message only.
func (c *vcpu) instructionAt(rip uint64) []byte {
	sregs, err := c.Sregs()
	if err != nil {
		return nil
	}
	linear := rip
	if sregs.EFER&boot.EFERLMA == 0 {
		linear += sregs.CS.Base
	}
	gpa, valid, err := c.TranslateAddr(linear)
	if err != nil || !valid || c.mem == nil {
		return nil
	}
	buf := make([]byte, 15)
	for n := len(buf); n > 0; n-- {
		if c.mem.ReadAt(buf[:n], gpa) == nil {
			return buf[:n]
		}
	}
	return nil
}

func hexBytes(b []byte) string {
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02x", x)
	}
	return sb.String()
}
