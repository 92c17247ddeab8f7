package boot

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"
)

// A small ELF64 reader of exactly what a loader needs (the file header,
// program headers and notes), so that every offset and size is checked here
// rather than trusted to a general-purpose parser. Layouts are from the
// System V ABI (elf(5)); the constants come from debug/elf.

var elfMagic = []byte(elf.ELFMAG)

const (
	elfHeaderSize  = 64 // sizeof(Elf64_Ehdr)
	elfPhdrSize    = 56 // sizeof(Elf64_Phdr)
	elfNoteHdrSize = 12 // namesz, descsz, type: three u32

	// Elf64_Ehdr field offsets.
	elfTypeOff      = 0x10
	elfMachineOff   = 0x12
	elfEntryOff     = 0x18
	elfPhoffOff     = 0x20
	elfPhentsizeOff = 0x36
	elfPhnumOff     = 0x38

	// elfPNXnum in e_phnum means the real count is in section 0; no
	// kernel needs that many segments.
	elfPNXnum = 0xffff

	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (Xen's
	// include/public/elfnote.h): the 32-bit physical PVH entry point.
	xenElfnotePhys32Entry = 18
	xenNoteName           = "Xen\x00"

	// linuxCommandLineSize is x86's COMMAND_LINE_SIZE, NUL included: what
	// a vmlinux without a setup header accepts.
	linuxCommandLineSize = 2048
	// elfInitrdLimit keeps an ELF kernel's initrd below 2 GiB, the
	// initrd_addr_max every x86-64 bzImage declares; PVH hands it over
	// through 32-bit boot_params fields in any case.
	elfInitrdLimit = 0x8000_0000
)

// elfProgram is one program header.
type elfProgram struct {
	typ    elf.ProgType
	offset uint64
	vaddr  uint64
	paddr  uint64
	filesz uint64
	memsz  uint64
	align  uint64
}

// parseELF checks an x86-64 ELF executable and collects its loadable
// segments and entry point, preferring the PVH entry if the kernel has one.
func parseELF(data []byte) (*kernelImage, error) {
	progs, entry, err := readELFHeaders(data)
	if err != nil {
		return nil, err
	}
	k := &kernelImage{
		format:      FormatELF64,
		cmdlineMax:  linuxCommandLineSize - 1,
		initrdLimit: elfInitrdLimit,
	}
	for i, p := range progs {
		if p.typ != elf.PT_LOAD {
			continue
		}
		if p.filesz > p.memsz {
			return nil, fmt.Errorf("ELF segment %d: file size %#x exceeds memory size %#x: %w", i, p.filesz, p.memsz, ErrCorruptKernel)
		}
		if p.memsz == 0 {
			continue
		}
		if end, c := bits.Add64(p.offset, p.filesz, 0); c != 0 || end > uint64(len(data)) {
			return nil, fmt.Errorf("ELF segment %d: file range [%#x, +%#x) outside the %d-byte file: %w", i, p.offset, p.filesz, len(data), ErrCorruptKernel)
		}
		if _, c := bits.Add64(p.paddr, p.memsz, 0); c != 0 {
			return nil, fmt.Errorf("ELF segment %d: address range [%#x, +%#x) wraps around: %w", i, p.paddr, p.memsz, ErrCorruptKernel)
		}
		k.segments = append(k.segments, segment{addr: p.paddr, data: data[p.offset : p.offset+p.filesz], memSize: p.memsz})
	}
	if len(k.segments) == 0 {
		return nil, fmt.Errorf("ELF: no loadable segments: %w", ErrCorruptKernel)
	}
	if err := checkSegmentsDisjoint(k.segments); err != nil {
		return nil, err
	}

	pvh, hasPVH, err := findPVHEntry(data, progs)
	if err != nil {
		return nil, err
	}
	if hasPVH {
		if !segmentsContain(k.segments, pvh) {
			return nil, fmt.Errorf("ELF: PVH entry %#x is not inside any loadable segment: %w", pvh, ErrCorruptKernel)
		}
		k.format, k.entry = FormatELFPVH, pvh
		return k, nil
	}
	k.entry, err = physicalEntry(entry, progs)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// readELFHeaders validates the file header and returns the program headers
// and e_entry.
func readELFHeaders(data []byte) ([]elfProgram, uint64, error) {
	if len(data) < elfHeaderSize {
		return nil, 0, fmt.Errorf("ELF header truncated at %d bytes: %w", len(data), ErrCorruptKernel)
	}
	if c := elf.Class(data[elf.EI_CLASS]); c != elf.ELFCLASS64 {
		return nil, 0, fmt.Errorf("ELF class %v: wisp boots 64-bit x86 kernels only: %w", c, ErrUnsupportedKernel)
	}
	if d := elf.Data(data[elf.EI_DATA]); d != elf.ELFDATA2LSB {
		return nil, 0, fmt.Errorf("ELF data encoding %v, want little-endian: %w", d, ErrUnsupportedKernel)
	}
	le := binary.LittleEndian
	if m := elf.Machine(le.Uint16(data[elfMachineOff:])); m != elf.EM_X86_64 {
		return nil, 0, fmt.Errorf("ELF machine %v, want EM_X86_64: %w", m, ErrUnsupportedKernel)
	}
	if t := elf.Type(le.Uint16(data[elfTypeOff:])); t != elf.ET_EXEC {
		return nil, 0, fmt.Errorf("ELF type %v, want ET_EXEC: %w", t, ErrUnsupportedKernel)
	}
	phoff := le.Uint64(data[elfPhoffOff:])
	phentsize := uint64(le.Uint16(data[elfPhentsizeOff:]))
	phnum := uint64(le.Uint16(data[elfPhnumOff:]))
	if phnum == 0 || phnum == elfPNXnum {
		return nil, 0, fmt.Errorf("ELF: e_phnum %d: %w", phnum, ErrCorruptKernel)
	}
	if phentsize < elfPhdrSize {
		return nil, 0, fmt.Errorf("ELF: e_phentsize %d, want at least %d: %w", phentsize, elfPhdrSize, ErrCorruptKernel)
	}
	// phnum and phentsize are 16-bit, so their product cannot overflow.
	if end, c := bits.Add64(phoff, phnum*phentsize, 0); c != 0 || end > uint64(len(data)) {
		return nil, 0, fmt.Errorf("ELF: %d program headers at %#x run past the %d-byte file: %w", phnum, phoff, len(data), ErrCorruptKernel)
	}
	progs := make([]elfProgram, phnum)
	for i := range progs {
		ph := data[phoff+uint64(i)*phentsize:]
		progs[i] = elfProgram{
			typ:    elf.ProgType(le.Uint32(ph[0:])),
			offset: le.Uint64(ph[8:]),
			vaddr:  le.Uint64(ph[16:]),
			paddr:  le.Uint64(ph[24:]),
			filesz: le.Uint64(ph[32:]),
			memsz:  le.Uint64(ph[40:]),
			align:  le.Uint64(ph[48:]),
		}
	}
	return progs, le.Uint64(data[elfEntryOff:]), nil
}

// checkSegmentsDisjoint rejects loadable segments that overlap in guest
// memory: no linker produces them, and loading one over another would
// silently depend on the order.
func checkSegmentsDisjoint(segs []segment) error {
	sorted := append([]segment(nil), segs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].addr < sorted[j].addr })
	for i := 1; i < len(sorted); i++ {
		prev := sorted[i-1]
		if sorted[i].addr < prev.addr+prev.memSize {
			return fmt.Errorf("ELF: segments at %#x (+%#x) and %#x overlap: %w", prev.addr, prev.memSize, sorted[i].addr, ErrCorruptKernel)
		}
	}
	return nil
}

// findPVHEntry looks through the PT_NOTE segments for Xen's PHYS32_ENTRY
// note.
func findPVHEntry(data []byte, progs []elfProgram) (uint64, bool, error) {
	for i, p := range progs {
		if p.typ != elf.PT_NOTE {
			continue
		}
		end, c := bits.Add64(p.offset, p.filesz, 0)
		if c != 0 || end > uint64(len(data)) {
			return 0, false, fmt.Errorf("ELF note segment %d: [%#x, +%#x) outside the %d-byte file: %w", i, p.offset, p.filesz, len(data), ErrCorruptKernel)
		}
		entry, found, err := scanNotes(data[p.offset:end], p.align)
		if err != nil {
			return 0, false, fmt.Errorf("ELF note segment %d: %w", i, err)
		}
		if found {
			return entry, true, nil
		}
	}
	return 0, false, nil
}

// scanNotes walks the notes in one PT_NOTE segment. The name and the
// descriptor each start at an offset aligned to 4, or to 8 in a segment
// aligned to 8 (as GNU property notes are).
func scanNotes(notes []byte, segAlign uint64) (uint64, bool, error) {
	align := uint64(4)
	if segAlign == 8 {
		align = 8
	}
	le := binary.LittleEndian
	n := uint64(len(notes))
	for off := uint64(0); n-off >= elfNoteHdrSize; {
		namesz := uint64(le.Uint32(notes[off:]))
		descsz := uint64(le.Uint32(notes[off+4:]))
		typ := le.Uint32(notes[off+8:])
		nameOff := off + elfNoteHdrSize
		// off <= n and the sizes are 32-bit: none of this overflows.
		descOff := roundUp(nameOff+namesz, align)
		next := roundUp(descOff+descsz, align)
		if descOff+descsz > n {
			return 0, false, fmt.Errorf("note at %#x (name %d bytes, desc %d bytes) runs past the segment's %d bytes: %w", off, namesz, descsz, n, ErrCorruptKernel)
		}
		if typ == xenElfnotePhys32Entry && string(notes[nameOff:nameOff+namesz]) == xenNoteName {
			desc := notes[descOff : descOff+descsz]
			var entry uint64
			switch descsz {
			case 4:
				entry = uint64(le.Uint32(desc))
			case 8: // Linux emits it with _ASM_PTR, a quad on x86-64
				entry = le.Uint64(desc)
			default:
				return 0, false, fmt.Errorf("XEN_ELFNOTE_PHYS32_ENTRY has %d bytes, want 4 or 8: %w", descsz, ErrCorruptKernel)
			}
			if entry > 0xffff_ffff {
				return 0, false, fmt.Errorf("PVH entry %#x is not a 32-bit address: %w", entry, ErrCorruptKernel)
			}
			return entry, true, nil
		}
		if next > n {
			break // the last note may omit its padding
		}
		off = next
	}
	return 0, false, nil
}

// physicalEntry turns e_entry into a physical address. Linux's vmlinux has a
// physical e_entry; other linkers put a virtual one there, which the segment
// holding it translates.
func physicalEntry(entry uint64, progs []elfProgram) (uint64, error) {
	for _, p := range progs {
		if p.typ == elf.PT_LOAD && entry >= p.paddr && entry-p.paddr < p.memsz {
			return entry, nil
		}
	}
	for _, p := range progs {
		if p.typ == elf.PT_LOAD && entry >= p.vaddr && entry-p.vaddr < p.memsz {
			return p.paddr + (entry - p.vaddr), nil
		}
	}
	return 0, fmt.Errorf("ELF: entry point %#x is not inside any loadable segment: %w", entry, ErrCorruptKernel)
}

func segmentsContain(segs []segment, addr uint64) bool {
	for _, s := range segs {
		if addr >= s.addr && addr-s.addr < s.memSize {
			return true
		}
	}
	return false
}

// placeELF checks that every segment lies in RAM, at or above 1 MiB and below
// 4 GiB (the PVH entry is 32-bit and the 64-bit entry's page tables map the
// first 4 GiB), and records the span they cover.
func placeELF(k *kernelImage, ram []Region) error {
	lo, hi := ^uint64(0), uint64(0)
	for i, s := range k.segments {
		end := s.addr + s.memSize // no wrap: checked in parseELF
		switch {
		case s.addr < HighMemStart:
			return fmt.Errorf("ELF segment %d at [%#x, %#x) overlaps the boot data below %#x: %w", i, s.addr, end, HighMemStart, ErrNoRoom)
		case end > IdentityMapSize:
			return fmt.Errorf("ELF segment %d at [%#x, %#x) ends above 4 GiB, out of reach of the 32-bit/identity-mapped entry: %w", i, s.addr, end, ErrNoRoom)
		case !inRAM(ram, s.addr, s.memSize):
			return fmt.Errorf("ELF segment %d at [%#x, %#x) is not inside guest RAM: %w", i, s.addr, end, ErrNoRoom)
		}
		lo, hi = min(lo, s.addr), max(hi, end)
	}
	k.footprint = Region{GuestAddr: lo, Size: hi - lo}
	return nil
}

// roundUp rounds v up to a multiple of align (a power of two); v must be
// small enough not to overflow (callers pass file offsets plus 32-bit sizes).
func roundUp(v, align uint64) uint64 { return (v + align - 1) &^ (align - 1) }
