package kvm

import (
	"encoding/binary"
	"fmt"
)

// The structs below mirror the kernel's x86 structs in <asm/kvm.h> and
// <linux/kvm.h> field for field (blank fields are the kernel's padding), so
// they can be handed to ioctls as they are. Their sizes and offsets are
// checked against the C headers in abi_test.go.

// Regs is struct kvm_regs: the general-purpose registers, RIP and RFLAGS.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFlags        uint64
}

// Segment is struct kvm_segment: a segment register with its hidden part
// (the descriptor cache). The one-byte flags are uint8, not bool, because
// the kernel may store values other than 0 and 1.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable: the GDTR or IDTR.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment and descriptor-table registers,
// control registers, EFER, the APIC base and the pending-interrupt bitmap.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64 // (256 vectors + 63) / 64
}

// FPU is struct kvm_fpu: x87 and SSE state in FXSAVE layout.
//
// Linux's KVM_GET_FPU and KVM_SET_FPU do not carry MXCSR (it reads back as
// 0 and writes to it are ignored, seen on 6.1); the field exists for the
// ABI. MXCSR is part of the XSAVE state.
type FPU struct {
	FPR        [8][16]byte
	FCW        uint16
	FSW        uint16
	FTWX       uint8 // abridged tag word, as FXSAVE stores it
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32 // not transferred by the kernel, see above
	_          uint32
}

// MSR is struct kvm_msr_entry: one model-specific register.
type MSR struct {
	Index uint32
	_     uint32
	Data  uint64
}

// LAPICRegsSize is the size of the local APIC register page KVM exchanges
// (KVM_APIC_REG_SIZE).
const LAPICRegsSize = 0x400

// LAPICState is struct kvm_lapic_state: the local APIC's 1 KiB register
// page, as the APIC lays it out in memory (registers at 16-byte strides).
type LAPICState struct {
	Regs [LAPICRegsSize]byte
}

// Register returns the 32-bit APIC register at offset (e.g. 0x350 for
// LVT LINT0).
func (s *LAPICState) Register(offset uint32) (uint32, error) {
	if offset%4 != 0 || offset > LAPICRegsSize-4 {
		return 0, fmt.Errorf("LAPIC register offset %#x: %w", offset, ErrInvalidArgument)
	}
	return binary.LittleEndian.Uint32(s.Regs[offset:]), nil
}

// SetRegister sets the 32-bit APIC register at offset.
func (s *LAPICState) SetRegister(offset, value uint32) error {
	if offset%4 != 0 || offset > LAPICRegsSize-4 {
		return fmt.Errorf("LAPIC register offset %#x: %w", offset, ErrInvalidArgument)
	}
	binary.LittleEndian.PutUint32(s.Regs[offset:], value)
	return nil
}

// Internal ABI structs: arguments the wrappers build and callers never see.

// kvmUserspaceMemoryRegion is struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// kvmIRQLevel is struct kvm_irq_level.
type kvmIRQLevel struct {
	IRQ   uint32
	Level uint32
}

// kvmPITConfig is struct kvm_pit_config.
type kvmPITConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// kvmIRQFD is struct kvm_irqfd.
type kvmIRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	Pad        [16]uint8
}

// kvmIOEventFD is struct kvm_ioeventfd.
type kvmIOEventFD struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	Pad       [36]uint8
}

// kvmMSI is struct kvm_msi.
type kvmMSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	Pad       [12]uint8
}

// kvmIRQRoutingHeader is struct kvm_irq_routing without its entries.
type kvmIRQRoutingHeader struct {
	NR    uint32
	Flags uint32
}

// kvmIRQRoutingEntry is struct kvm_irq_routing_entry; U is the union
// (irqchip: chip, pin; msi: address_lo, address_hi, data, devid).
type kvmIRQRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	Pad   uint32
	U     [8]uint32
}

// kvmCPUID2Header is struct kvm_cpuid2 without its entries.
type kvmCPUID2Header struct {
	Nent    uint32
	Padding uint32
}

// kvmMSRsHeader is struct kvm_msrs without its entries.
type kvmMSRsHeader struct {
	NMSRs uint32
	Pad   uint32
}

// kvmMSRListHeader is struct kvm_msr_list without its indices.
type kvmMSRListHeader struct {
	NMSRs uint32
}

// kvmTranslation is struct kvm_translation.
type kvmTranslation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	Pad             [5]uint8
}
