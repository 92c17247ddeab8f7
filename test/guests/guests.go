// Package guests builds wisp's small purpose-built test guests from the
// assembly sources in src/ at test time, with Debian's gcc and binutils,
// so no binary is kept in git.
//
// Each guest does one thing a VMM must get right and says so on COM1 (port
// 0x3f8, polling LSR first), on the marker port 0x440 and through ACPI
// power-off (PM1a control, port 0x604). They use only port I/O, MMIO, HLT
// and polling: no FPU state, no interrupts (except probe.elf, whose job is
// to try exactly those things).
//
// Build returns the path of a built guest. Builds are cached under
// $WISP_CACHE/test-guests (or the user cache directory's wisp/test-guests),
// keyed by a hash of the sources and the build recipe. Where no toolchain
// exists (inside the nested test VM), $WISP_TEST_GUESTS names a directory of
// prebuilt guests, and Build returns files from there instead.
package guests

import "fmt"

// The guests.
const (
	// RealMode is a flat binary loaded at RealModeAddr and entered in real
	// mode at CS:IP = 0:RealModeAddr. It prints RealModeOutput and halts.
	RealMode = "realmode.bin"
	// LongMode is an ELF64 linked at ELFAddr, entered at its ELF entry in
	// 64-bit mode with the VMM's page tables. It prints LongModeOutput,
	// writes BootMarker to MarkerPort and powers off.
	LongMode = "longmode.elf"
	// PVH is an ELF64 with a Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY) whose
	// entry is 32-bit code. Entered per the PVH ABI (flat protected mode,
	// paging off, EBX = hvm_start_info), it checks the start_info magic,
	// prints PVHOutput (PVHBadStartInfoOutput if the magic is wrong) and
	// powers off.
	PVH = "pvh.elf"
	// MMIO is an ELF64 (64-bit entry) that writes the 32-bit MMIOWriteValue
	// to MMIOWriteAddr, reads 32 bits from MMIOReadAddr, prints
	// MMIOOutput(value read) and powers off.
	MMIO = "mmio.elf"
	// TripleFault is an ELF64 (64-bit entry) that prints TripleFaultOutput,
	// loads a zero-limit IDT and executes int3: the CPU shuts down, which
	// the VMM must report as a reset/shutdown. Should the guest survive it
	// prints TripleFaultSurvivedOutput and powers off.
	TripleFault = "triplefault.elf"
	// SMP is an ELF64 (64-bit entry) that every vCPU enters. Each prints
	// SMPCPUOutput(its APIC ID from CPUID.1:EBX[31:24]) under a spinlock.
	// The first to arrive waits for the count the test wrote as a
	// little-endian uint32 at SMPExpectedAddr (after loading, before
	// running), prints SMPOutput(n) (SMPTimeoutOutput(n) if they did not
	// all come) and powers off; the others halt with interrupts off. With
	// 0 at SMPExpectedAddr it waits a short bounded loop and reports how
	// many arrived.
	SMP = "smp.elf"
	// EmuFail is an ELF64 (64-bit entry) that prints EmuFailOutput and
	// jumps to EmuFailTarget, in the PCI hole: fetching instructions from
	// MMIO is an emulation failure on every KVM.
	EmuFail = "emufail.elf"
	// Probe is the KVM usability probe: an ELF64 (64-bit entry) that writes
	// step codes to MarkerPort (see package probe) and powers off.
	Probe = "probe.elf"
	// VirtioBlk is a freestanding virtio driver in C (ELF64, 64-bit entry).
	// It scans PCI bus 0 through ports 0xcf8/0xcfc for the modern
	// virtio-blk function, sizes its BAR 0 and moves it to VirtioBARAddr
	// through ECAM, walks its capabilities, negotiates VERSION_1 only,
	// sets up queue 0 with MSI-X vector 0 aimed at its own LAPIC
	// (VirtioMSIVector), writes VirtioBlkPattern(VirtioBlkWriteSeed) to
	// sector VirtioBlkWriteSector, reads it back and compares, reads
	// sector VirtioBlkReadSector and compares it with
	// VirtioBlkPattern(VirtioBlkReadSeed) (the test writes that into the
	// disk image first), and checks that every completion raised the MSI.
	// It prints VirtioBlkOutput (or a line starting with
	// VirtioBlkFailPrefix), writes BootMarker on success and powers off.
	VirtioBlk = "virtioblk.elf"
)

// Names lists every guest.
func Names() []string {
	return []string{RealMode, LongMode, PVH, MMIO, TripleFault, SMP, EmuFail, Probe, VirtioBlk}
}

// Ports, addresses and values the guests use. They are passed to the
// assembler as -D flags, so these constants are the one definition.
const (
	COM1Port              = 0x3f8         // 8250 UART, THR at +0, LSR at +5
	MarkerPort            = 0x440         // boot marker / probe step port (8-bit out)
	BootMarker            = 0x7f          // written by LongMode before power-off
	PowerOffPort          = 0x604         // ACPI PM1a control (16-bit out)
	PowerOffValue         = 5<<10 | 1<<13 // SLP_TYP = 5 (S5) | SLP_EN
	RealModeAddr          = 0x1000        // where RealMode is loaded and entered
	ELFAddr               = 0x100000      // where the ELF guests are linked (1 MiB)
	MMIOWriteAddr         = 0xd0000000    // in the PCI hole: no RAM there
	MMIOReadAddr          = 0xd0000004    //
	MMIOWriteValue        = 0x57495350    // "WISP" read as a big-endian word
	LAPICAddr             = 0xfee00000    // xAPIC MMIO base (Probe)
	EmuFailTarget         = 0xd0001000    // EmuFail jumps here: no RAM, no device
	PVHStartMagic         = 0x336ec578    // hvm_start_info.magic
	xenElfnotePhys32Entry = 18            // XEN_ELFNOTE_PHYS32_ENTRY
	// SMPExpectedAddr is where the test writes, as a little-endian
	// uint32, how many vCPUs SMP should wait for: the first bytes of its
	// image.
	SMPExpectedAddr = ELFAddr
	// SMPMaxCPUs is how many vCPUs SMP has stacks for; more park at once.
	SMPMaxCPUs = 64
	// smpWaitSpins bounds the wait for the expected vCPUs, smpCountSpins
	// the wait when no count was given.
	smpWaitSpins  = 1 << 28
	smpCountSpins = 1 << 24

	// VirtioBARAddr is where VirtioBlk moves the device's BAR 0: inside
	// wisp's 32-bit PCI window, away from where wisp assigns BARs (from
	// its start) and from ECAM.
	VirtioBARAddr = 0xd800_0000
	// VirtioMSIVector is the interrupt vector VirtioBlk programs into its
	// MSI-X entry.
	VirtioMSIVector = 0x50
	// VirtioBlkWriteSector and VirtioBlkReadSector are the 512-byte
	// sectors VirtioBlk writes and reads; the disk needs at least
	// VirtioBlkMinSectors.
	VirtioBlkWriteSector = 8
	VirtioBlkReadSector  = 16
	VirtioBlkMinSectors  = 32
	// Seeds of the two sector patterns.
	VirtioBlkWriteSeed = 0x5a
	VirtioBlkReadSeed  = 0xa5
	// virtioSpins bounds each wait for the device (used ring, interrupt).
	virtioSpins = 1 << 30
)

// What the guests print on COM1.
const (
	RealModeOutput            = "wisp real mode\n"
	LongModeOutput            = "wisp long mode\n"
	PVHOutput                 = "wisp pvh\n"
	PVHBadStartInfoOutput     = "wisp pvh: bad start_info magic\n"
	TripleFaultOutput         = "wisp triple fault\n"
	EmuFailOutput             = "wisp emulation failure\n"
	TripleFaultSurvivedOutput = "wisp triple fault: survived int3\n"
	mmioPrefix                = "wisp mmio 0x"
	smpDonePrefix             = "wisp smp: "
	smpTimeoutPrefix          = "wisp smp: timeout, "
	VirtioBlkOutput           = "wisp virtio-blk ok\n"
	VirtioBlkFailPrefix       = "wisp virtio-blk: FAIL "
)

// SectorSize is a virtio-blk sector.
const SectorSize = 512

// VirtioBlkPattern is the sector VirtioBlk writes (seed
// VirtioBlkWriteSeed) or expects to read (VirtioBlkReadSeed). The guest
// computes the same bytes: byte i is i*31 + i/256 + seed, mod 256, so the
// two halves of the sector differ.
func VirtioBlkPattern(seed byte) []byte {
	b := make([]byte, SectorSize)
	for i := range b {
		b[i] = byte(i*31 + i/256 + int(seed))
	}
	return b
}

// MMIOOutput is what MMIO prints after reading value from MMIOReadAddr.
func MMIOOutput(value uint32) string { return fmt.Sprintf("%s%08x\n", mmioPrefix, value) }

// SMPCPUOutput is the line SMP prints on the vCPU with APIC ID apicID.
func SMPCPUOutput(apicID int) string { return fmt.Sprintf("cpu %d\n", apicID) }

// SMPOutput is SMP's last line when n vCPUs reported.
func SMPOutput(n int) string { return fmt.Sprintf("%s%d cpus\n", smpDonePrefix, n) }

// SMPTimeoutOutput is SMP's last line when only n of the expected vCPUs
// reported before its wait ended.
func SMPTimeoutOutput(n int) string { return fmt.Sprintf("%s%d cpus\n", smpTimeoutPrefix, n) }
