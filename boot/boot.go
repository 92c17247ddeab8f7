// Package boot puts a Linux kernel into guest memory and describes the CPU
// state to start it in. It understands the two formats Linux ships for x86-64:
//
//   - bzImage, entered through the 64-bit Linux boot protocol
//     (Documentation/arch/x86/boot.rst), with a zero page in RSI;
//   - ELF vmlinux, entered through PVH (a XEN_ELFNOTE_PHYS32_ENTRY note, 32-bit
//     protected mode, hvm_start_info in EBX) when the kernel has the note, or
//     else at its ELF entry in 64-bit mode with a zero page in RSI.
//
// Besides the kernel, Load writes the initrd, the command line, the memory
// map, the boot GDT and page tables, an Intel MP table and ACPI tables, all at
// the fixed addresses in layout.go. The kernel file is untrusted input: every
// offset and size in it is checked, and a corrupt file yields an error.
//
// The package knows nothing of KVM: guest memory is the Memory interface and
// the result is plain data the VMM turns into registers.
package boot

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"github.com/wisp-vmm/wisp/boot/acpi"
	"github.com/wisp-vmm/wisp/boot/mptable"
)

// Memory is guest RAM as loaders see it (vmm/memory.Memory implements it).
// Accesses outside guest RAM must return an error.
type Memory interface {
	ReadAt(p []byte, gpa uint64) error
	WriteAt(p []byte, gpa uint64) error
	Size() uint64
}

// Region is a range of guest-physical addresses, [GuestAddr, GuestAddr+Size).
type Region struct {
	GuestAddr uint64
	Size      uint64
}

// End is the first address past the region.
func (r Region) End() uint64 { return r.GuestAddr + r.Size }

// contains reports whether [addr, addr+size) lies inside r.
func (r Region) contains(addr, size uint64) bool {
	return addr >= r.GuestAddr && size <= r.Size && addr-r.GuestAddr <= r.Size-size
}

// overlaps reports whether r and [addr, addr+size) share a byte.
func (r Region) overlaps(addr, size uint64) bool {
	return size != 0 && r.Size != 0 && addr < r.End() && r.GuestAddr < addr+size
}

// Errors; test with errors.Is.
var (
	// ErrNotKernel: the file is neither a bzImage nor an ELF file.
	ErrNotKernel = errors.New("not a Linux kernel")
	// ErrUnsupportedKernel: a kernel, but one wisp cannot start (boot
	// protocol too old, no 64-bit entry, not x86-64).
	ErrUnsupportedKernel = errors.New("unsupported kernel")
	// ErrCorruptKernel: the file's headers point outside the file or make
	// no sense.
	ErrCorruptKernel = errors.New("corrupt kernel image")
	// ErrNoRoom: the kernel does not fit in guest RAM, or would overlap
	// the boot data below 1 MiB.
	ErrNoRoom = errors.New("kernel does not fit in guest memory")
	// ErrInitrdTooLarge: no free RAM the kernel accepts an initrd in is
	// big enough.
	ErrInitrdTooLarge = errors.New("initrd does not fit in guest memory")
	// ErrCmdlineTooLong: the command line exceeds what the kernel accepts.
	ErrCmdlineTooLong = errors.New("kernel command line too long")
	// ErrBadConfig: the Config itself is invalid (CPU count, RAM regions).
	ErrBadConfig = errors.New("invalid boot configuration")
)

// Config says what to boot and on what machine.
type Config struct {
	// Kernel is the whole kernel file: a bzImage or an ELF vmlinux.
	Kernel []byte
	// Initrd is the initial RAM disk, or nil for none.
	Initrd []byte
	// Cmdline is the kernel command line, without a terminating NUL.
	Cmdline string
	// RAM lists guest RAM in ascending address order (see
	// vmm/memory.Layout): the first region must start at 0 and reach past
	// 1 MiB.
	RAM []Region
	// CPUs is the number of vCPUs, 1..MaxCPUs; vCPU 0 is the boot CPU.
	CPUs int
	// ACPI describes the platform for the ACPI tables. Its CPUs field is
	// ignored (Config.CPUs wins); zero fields take the defaults in
	// package acpi. The ECAM window it names is reserved in the e820 map.
	ACPI acpi.Config
}

// Format is the kind of kernel Load found and how it enters it.
type Format int

// Formats.
const (
	// FormatBzImage is a bzImage entered at its 64-bit entry point.
	FormatBzImage Format = iota + 1
	// FormatELFPVH is an ELF vmlinux entered through its PVH note.
	FormatELFPVH
	// FormatELF64 is an ELF vmlinux entered at e_entry in 64-bit mode.
	FormatELF64
)

func (f Format) String() string {
	switch f {
	case FormatBzImage:
		return "bzImage (64-bit boot protocol)"
	case FormatELFPVH:
		return "ELF (PVH entry)"
	case FormatELF64:
		return "ELF (64-bit entry)"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Result describes what Load put where and how to start the boot CPU.
type Result struct {
	Format Format
	// CPU is the boot CPU's initial state.
	CPU CPUState
	// Kernel is the guest memory the kernel owns at entry: the loaded
	// image, and for a bzImage also the room it decompresses into.
	Kernel Region
	// Entry is the guest-physical entry point (CPU.RIP).
	Entry uint64
	// Initrd is where the initrd was put; zero Size if there is none.
	Initrd Region
	// Cmdline is the address of the NUL-terminated command line.
	Cmdline uint64
	// BootParams is the address of the zero page (bzImage, ELF64) or of
	// hvm_start_info (PVH).
	BootParams uint64
	// RSDP is the address of the ACPI root pointer.
	RSDP uint64
	// MPTable is the address of the MP floating pointer structure.
	MPTable uint64
	// E820 is the memory map handed to the kernel.
	E820 []E820Entry
}

// Load writes the kernel in cfg.Kernel and everything it needs to boot into
// mem, and returns the boot CPU's initial state. Load writes only guest
// memory; on error, guest memory may be partly written.
func Load(mem Memory, cfg Config) (*Result, error) {
	if err := validateConfig(mem, &cfg); err != nil {
		return nil, err
	}
	img, err := parseKernel(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	if err := img.place(cfg.RAM); err != nil {
		return nil, err
	}
	if uint64(len(cfg.Cmdline)) > img.cmdlineMax {
		return nil, fmt.Errorf("%d bytes, kernel accepts %d: %w", len(cfg.Cmdline), img.cmdlineMax, ErrCmdlineTooLong)
	}
	e820, err := buildE820(cfg.RAM, ecamRegion(cfg.ACPI))
	if err != nil {
		return nil, err
	}
	initrd, err := placeInitrd(uint64(len(cfg.Initrd)), e820, img)
	if err != nil {
		return nil, err
	}

	res := &Result{
		Format:  img.format,
		Kernel:  img.footprint,
		Entry:   img.entry,
		Initrd:  initrd,
		Cmdline: CmdlineAddr,
		E820:    e820,
	}
	if err := img.write(mem); err != nil {
		return nil, err
	}
	if initrd.Size > 0 {
		if err := mem.WriteAt(cfg.Initrd, initrd.GuestAddr); err != nil {
			return nil, fmt.Errorf("write initrd at %#x: %w", initrd.GuestAddr, err)
		}
	}
	if err := mem.WriteAt(append([]byte(cfg.Cmdline), 0), CmdlineAddr); err != nil {
		return nil, fmt.Errorf("write command line at %#x: %w", CmdlineAddr, err)
	}
	if res.MPTable, err = mptable.Write(mem, cfg.CPUs); err != nil {
		return nil, fmt.Errorf("MP table: %w", err)
	}
	acpiCfg := cfg.ACPI
	acpiCfg.CPUs = cfg.CPUs
	if res.RSDP, err = acpi.Write(mem, acpiCfg); err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	if err := writeGDT(mem); err != nil {
		return nil, err
	}

	switch img.format {
	case FormatELFPVH:
		res.BootParams = PVHStartInfoAddr
		if err := writeStartInfo(mem, res); err != nil {
			return nil, err
		}
		res.CPU = protected32State(img.entry, PVHStartInfoAddr)
	default:
		res.BootParams = ZeroPageAddr
		if err := writeZeroPage(mem, img, res); err != nil {
			return nil, err
		}
		if err := writePageTables(mem); err != nil {
			return nil, err
		}
		res.CPU = long64State(img.entry, ZeroPageAddr)
	}
	return res, nil
}

// validateConfig checks cfg against itself and mem.
func validateConfig(mem Memory, cfg *Config) error {
	if mem == nil {
		return fmt.Errorf("no guest memory: %w", ErrBadConfig)
	}
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return fmt.Errorf("%d CPUs (want 1..%d): %w", cfg.CPUs, MaxCPUs, ErrBadConfig)
	}
	if len(cfg.RAM) == 0 {
		return fmt.Errorf("no RAM regions: %w", ErrBadConfig)
	}
	var total uint64
	for i, r := range cfg.RAM {
		if r.Size == 0 || r.GuestAddr%pageSize != 0 || r.Size%pageSize != 0 {
			return fmt.Errorf("RAM region %d [%#x, +%#x): want a non-empty page-aligned range: %w", i, r.GuestAddr, r.Size, ErrBadConfig)
		}
		if _, carry := bits.Add64(r.GuestAddr, r.Size, 0); carry != 0 {
			return fmt.Errorf("RAM region %d [%#x, +%#x) wraps around: %w", i, r.GuestAddr, r.Size, ErrBadConfig)
		}
		if i > 0 && r.GuestAddr < cfg.RAM[i-1].End() {
			return fmt.Errorf("RAM region %d at %#x overlaps or precedes region %d: %w", i, r.GuestAddr, i-1, ErrBadConfig)
		}
		total += r.Size
	}
	if total > mem.Size() {
		return fmt.Errorf("RAM regions add up to %#x bytes, guest memory has %#x: %w", total, mem.Size(), ErrBadConfig)
	}
	if strings.IndexByte(cfg.Cmdline, 0) >= 0 {
		return fmt.Errorf("kernel command line contains a NUL byte: %w", ErrBadConfig)
	}
	if low := cfg.RAM[0]; low.GuestAddr != 0 || low.Size <= HighMemStart {
		return fmt.Errorf("RAM must start at 0 and extend past 1 MiB (first region [%#x, +%#x)): %w", low.GuestAddr, low.Size, ErrBadConfig)
	}
	return nil
}

// alignUp rounds v up to a multiple of align (a power of two); ok is false
// on overflow.
func alignUp(v, align uint64) (uint64, bool) {
	r, carry := bits.Add64(v, align-1, 0)
	return r &^ (align - 1), carry == 0
}

// alignDown rounds v down to a multiple of align (a power of two).
func alignDown(v, align uint64) uint64 { return v &^ (align - 1) }

// ecamRegion is the PCI ECAM window the ACPI tables describe, to be
// reserved in the memory map.
func ecamRegion(c acpi.Config) Region {
	c = c.WithDefaults()
	return Region{GuestAddr: c.ECAMBase, Size: acpi.ECAMSize}
}
