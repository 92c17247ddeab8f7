package boot

import (
	"github.com/wisp-vmm/wisp/boot/acpi"
	"github.com/wisp-vmm/wisp/boot/mptable"
)

// Guest-physical layout of everything wisp writes besides the kernel and the
// initrd. It all sits below 1 MiB, where a PC keeps its real-mode data and its
// BIOS, so a kernel loaded at 1 MiB or above can never overlap it (Load
// rejects a kernel that would).
//
//	0x0000_0000  real-mode IVT and BIOS data area: left zero
//	0x0000_0500  GDT (gdtEntries descriptors, 0x30 bytes)
//	0x0000_0540  IDT (empty: limit 0; the kernel loads its own)
//	0x0000_6000  PVH hvm_start_info, its module list at 0x6040, memory map at 0x6080
//	0x0000_7000  zero page (struct boot_params, 4 KiB)
//	0x0000_8000  initial stack, growing down from 0x8ff0
//	0x0000_9000  page tables: PML4 0x9000, PDPT 0xa000, four PDs 0xb000..0xefff
//	0x0002_0000  kernel command line (at most 64 KiB)
//	0x0009_fc00  EBDA: Intel MP table (may spill into the legacy video hole)
//	0x000e_0000  ACPI tables, RSDP first
//	0x0010_0000  kernel (bzImage protected-mode part, or ELF segments) and up
const (
	// GDTAddr is where the boot GDT lives; see gdt.go for its entries.
	GDTAddr uint64 = 0x500
	// IDTAddr is the (empty) boot IDT. Interrupts are off at entry and both
	// boot protocols expect the kernel to install its own IDT first thing.
	IDTAddr uint64 = 0x540

	// PVHStartInfoAddr holds struct hvm_start_info (Xen's
	// include/public/arch-x86/hvm/start_info.h); the module list and the
	// memory map follow it inside the same page.
	PVHStartInfoAddr uint64 = 0x6000
	PVHModlistAddr   uint64 = 0x6040
	PVHMemmapAddr    uint64 = 0x6080
	pvhAreaEnd       uint64 = 0x7000

	// ZeroPageAddr holds struct boot_params (Linux
	// arch/x86/include/uapi/asm/bootparam.h), the "zero page".
	ZeroPageAddr uint64 = 0x7000

	// StackTop is RSP at entry. Both Linux entry points switch to their own
	// stack immediately; this one only has to be valid RAM.
	StackTop uint64 = 0x8ff0

	// PML4Addr is CR3 for the 64-bit entry; PDPTAddr and the page
	// directories after it identity-map IdentityMapSize bytes.
	PML4Addr uint64 = 0x9000
	PDPTAddr uint64 = 0xa000
	PDAddr   uint64 = 0xb000

	// CmdlineAddr holds the NUL-terminated kernel command line; CmdlineMax
	// bytes (terminator included) are set aside for it.
	CmdlineAddr uint64 = 0x20000
	CmdlineMax  uint64 = 0x10000

	// EBDAStart is the start of the extended BIOS data area, where Linux
	// scans for the MP floating pointer (arch/x86/kernel/mpparse.c scans
	// the last KiB of base memory, 639 KiB..640 KiB).
	EBDAStart uint64 = mptable.DefaultAddr

	// ACPIAddr is where the RSDP and the other ACPI tables go: the BIOS
	// read-only area Linux scans for "RSD PTR " (0xe0000..0xfffff).
	ACPIAddr uint64 = acpi.DefaultAddr

	// HighMemStart is 1 MiB: nothing wisp writes for itself lies at or
	// above it, and nothing of the kernel's may lie below it.
	HighMemStart uint64 = 0x100000

	// IdentityMapSize is how much the boot page tables map 1:1 for the
	// 64-bit entry: the whole 32-bit address space, which holds the kernel,
	// the zero page, the command line and the MMIO hole.
	IdentityMapSize uint64 = 4 << 30

	pageSize uint64 = 4096
)

// MaxCPUs is the most vCPUs Load describes: xAPIC IDs are 8 bits, 0xff is the
// broadcast ID, and the IOAPIC takes the ID after the last CPU.
const MaxCPUs = mptable.MaxCPUs
