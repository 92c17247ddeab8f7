package boot

// Mode is the CPU mode at the kernel's entry.
type Mode int

// Modes.
const (
	// Long64 is 64-bit long mode with paging (the Linux 64-bit boot
	// protocol).
	Long64 Mode = iota + 1
	// Protected32 is 32-bit protected mode with paging off (PVH).
	Protected32
)

func (m Mode) String() string {
	switch m {
	case Long64:
		return "64-bit long mode"
	case Protected32:
		return "32-bit protected mode"
	}
	return "unknown mode"
}

// Segment is a segment register's hidden state, field for field what KVM's
// struct kvm_segment holds.
type Segment struct {
	Selector uint16
	Base     uint64
	// Limit is in bytes: with G set, the descriptor's 20-bit limit
	// shifted left 12 with the low 12 bits set (0xffffffff for 4 GiB).
	Limit   uint32
	Type    uint8 // descriptor type, 4 bits (Intel SDM vol. 3, 3.4.5.1)
	Present bool
	DPL     uint8
	DB      bool // default operation size (code) / big (data): 32-bit
	S       bool // code or data segment (false: system segment such as a TSS)
	L       bool // 64-bit code segment
	G       bool // 4 KiB limit granularity
	// Unusable marks a register that holds no descriptor (the LDT at boot).
	Unusable bool
}

// DescriptorTable is a GDTR or IDTR value.
type DescriptorTable struct {
	Base  uint64
	Limit uint16
}

// CPUState is the boot CPU's register state at the kernel's entry. Registers
// not named here start at zero.
type CPUState struct {
	Mode Mode

	RIP, RSP, RSI, RBX, RFLAGS uint64
	CR0, CR3, CR4, EFER        uint64

	GDT, IDT                        DescriptorTable
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
}

// Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
const (
	CR0PE = 1 << 0  // protection enable
	CR0ET = 1 << 4  // extension type: always 1 on modern CPUs
	CR0NE = 1 << 5  // native x87 error reporting
	CR0PG = 1 << 31 // paging

	CR4PAE = 1 << 5 // physical address extension, required for long mode

	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active

	// RFLAGSReserved is bit 1 of RFLAGS, which always reads as 1.
	// Everything else, IF included, starts clear.
	RFLAGSReserved = 1 << 1
)

// long64State is the state the Linux 64-bit boot protocol asks for: long
// mode with the boot page tables, CS = __BOOT_CS, the data segments =
// __BOOT_DS, interrupts off, RSI = the zero page.
func long64State(entry, zeroPage uint64) CPUState {
	segs := bootSegments()
	data := segs[gdtData]
	return CPUState{
		Mode:   Long64,
		RIP:    entry,
		RSP:    StackTop,
		RSI:    zeroPage,
		RFLAGS: RFLAGSReserved,
		CR0:    CR0PE | CR0ET | CR0NE | CR0PG,
		CR3:    PML4Addr,
		CR4:    CR4PAE,
		EFER:   EFERLME | EFERLMA,
		GDT:    DescriptorTable{Base: GDTAddr, Limit: gdtSize - 1},
		IDT:    DescriptorTable{Base: IDTAddr, Limit: 0},
		CS:     segs[gdtCode64],
		DS:     data, ES: data, FS: data, GS: data, SS: data,
		TR:  segs[gdtTSS],
		LDT: unusableLDT(),
	}
}

// protected32State is the state PVH asks for (docs/misc/pvh.pandoc): 32-bit
// protected mode, paging off, flat 4 GiB code and data segments, a TSS with
// base 0 and limit 0x67 in TR, interrupts off, EBX = the start info.
func protected32State(entry, startInfo uint64) CPUState {
	segs := bootSegments()
	data := segs[gdtData]
	return CPUState{
		Mode:   Protected32,
		RIP:    entry,
		RSP:    StackTop,
		RBX:    startInfo,
		RFLAGS: RFLAGSReserved,
		CR0:    CR0PE | CR0ET,
		GDT:    DescriptorTable{Base: GDTAddr, Limit: gdtSize - 1},
		IDT:    DescriptorTable{Base: IDTAddr, Limit: 0},
		CS:     segs[gdtCode32],
		DS:     data, ES: data, FS: data, GS: data, SS: data,
		TR:  segs[gdtTSS],
		LDT: unusableLDT(),
	}
}

// unusableLDT is LDTR at boot: no LDT. Type 2 is the LDT system type.
func unusableLDT() Segment { return Segment{Type: 2, Unusable: true} }
