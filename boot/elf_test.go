package boot_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
)

// A tiny "kernel": a PVH entry, a 64-bit entry, initialised data and a .bss.
const testKernelSource = `
	.text
	.code32
	.globl pvh_entry
pvh_entry:
	hlt
	.code64
	.globl _start
_start:
	hlt

	.data
marker:
	.quad 0x1122334455667788

	.bss
	.space 0x3000
`

// pvhNoteSource adds XEN_ELFNOTE_PHYS32_ENTRY the way Linux's
// arch/x86/platform/pvh/head.S does: the entry's physical address, its link
// address less the link-to-load offset. Here with a 4-byte descriptor.
func pvhNoteSource(offset uint64) string {
	return fmt.Sprintf(`
	.section .note.Xen, "a", @note
	.balign 4
	.long 4, 4, 18
	.asciz "Xen"
	.long pvh_entry - %#x
	.balign 4
`, offset)
}

// linkerScript places the kernel at base (virtual) loaded at base-offset
// (physical).
func linkerScript(base, offset uint64) string {
	return fmt.Sprintf(`
ENTRY(_start)
PHDRS { text PT_LOAD; data PT_LOAD; note PT_NOTE; }
SECTIONS {
	. = %#x;
	.text : AT(ADDR(.text) - %#x) { *(.text) } :text
	.note.Xen : AT(ADDR(.note.Xen) - %#[2]x) { *(.note.Xen) } :text :note
	. = ALIGN(0x1000);
	.data : AT(ADDR(.data) - %#[2]x) { *(.data) } :data
	.bss : AT(ADDR(.bss) - %#[2]x) { *(.bss) } :data
	/DISCARD/ : { *(.note.gnu.property) }
}`, base, offset)
}

// assertStartInfo checks hvm_start_info and what it points to.
func assertStartInfo(t *testing.T, mem boot.Memory, res *boot.Result, cmdline string) {
	t.Helper()
	le := binary.LittleEndian
	si := read(t, mem, boot.PVHStartInfoAddr, 0x38)
	assert.Equal(t, uint32(0x336ec578), le.Uint32(si[0:]), "magic")
	assert.Equal(t, uint32(1), le.Uint32(si[4:]), "version")
	assert.Equal(t, uint64(boot.CmdlineAddr), le.Uint64(si[0x18:]), "cmdline_paddr")
	assert.Equal(t, cmdline+"\x00", string(read(t, mem, boot.CmdlineAddr, uint64(len(cmdline)+1))))
	assert.Equal(t, res.RSDP, le.Uint64(si[0x20:]), "rsdp_paddr")
	assert.Equal(t, "RSD PTR ", string(read(t, mem, res.RSDP, 8)))
	if res.Initrd.Size > 0 {
		assert.Equal(t, uint32(1), le.Uint32(si[0x0c:]), "nr_modules")
		mod := read(t, mem, le.Uint64(si[0x10:]), 32)
		assert.Equal(t, res.Initrd.GuestAddr, le.Uint64(mod[0:]), "module paddr")
		assert.Equal(t, res.Initrd.Size, le.Uint64(mod[8:]), "module size")
	} else {
		assert.Zero(t, le.Uint32(si[0x0c:]), "nr_modules")
	}
	n := le.Uint32(si[0x30:])
	require.Equal(t, len(res.E820), int(n), "memmap_entries")
	mm := read(t, mem, le.Uint64(si[0x28:]), uint64(n)*24)
	for i, e := range res.E820 {
		got := boot.E820Entry{Addr: le.Uint64(mm[24*i:]), Size: le.Uint64(mm[24*i+8:]), Type: boot.E820Type(le.Uint32(mm[24*i+16:]))}
		assert.Equal(t, e, got, "memmap entry %d", i)
	}
}

func TestAssembledELF(t *testing.T) {
	tests := []struct {
		name        string
		source      string
		base        uint64 // link address
		offset      uint64 // link address - load address
		wantFormat  boot.Format
		wantEntry   uint64
		initrd      int
		wantMarkerA uint64 // physical address of .data
	}{
		{"PVH note", testKernelSource + pvhNoteSource(0), 0x200000, 0, boot.FormatELFPVH, 0x200000, 1 << 20, 0x201000},
		{"PVH note, no initrd", testKernelSource + pvhNoteSource(0), 0x200000, 0, boot.FormatELFPVH, 0x200000, 0, 0x201000},
		{"no note: 64-bit entry", testKernelSource, 0x200000, 0, boot.FormatELF64, 0x200001, 1 << 20, 0x201000},
		{"higher-half link, physical load", testKernelSource, 0xffffffff80200000, 0xffffffff80000000, boot.FormatELF64, 0x200001, 0, 0x201000},
		{"higher-half link with PVH note", testKernelSource + pvhNoteSource(0xffffffff80000000), 0xffffffff81000000, 0xffffffff80000000, boot.FormatELFPVH, 0x1000000, 0, 0x1001000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kernel := assembleELF(t, tt.source, linkerScript(tt.base, tt.offset))
			mem, ram := guestRAM(t, 64*mib)
			// Dirty the .bss first: Load must clear it.
			require.NoError(t, mem.WriteAt(bytes.Repeat([]byte{0xaa}, 0x4000), tt.wantMarkerA))

			const cmdline = "console=hvc0"
			res, err := boot.Load(mem, boot.Config{Kernel: kernel, Initrd: bytes.Repeat([]byte{7}, tt.initrd), Cmdline: cmdline, RAM: ram, CPUs: 3})
			require.NoError(t, err)
			assert.Equal(t, tt.wantFormat, res.Format)
			assert.Equal(t, tt.wantEntry, res.Entry)
			assert.Equal(t, []byte{0xf4}, read(t, mem, res.Entry, 1), "hlt at the entry point")
			assert.Equal(t, uint64(0x1122334455667788), read64(t, mem, tt.wantMarkerA), ".data")
			assert.Equal(t, make([]byte, 0x3000), read(t, mem, tt.wantMarkerA+8, 0x3000), ".bss cleared")
			assertTables(t, mem, res, 3)
			if tt.initrd > 0 {
				assert.Equal(t, bytes.Repeat([]byte{7}, tt.initrd), read(t, mem, res.Initrd.GuestAddr, uint64(tt.initrd)))
				assert.LessOrEqual(t, res.Initrd.End(), uint64(0x80000000))
			}
			if tt.wantFormat == boot.FormatELFPVH {
				assertProtected32(t, mem, res)
				assertStartInfo(t, mem, res, cmdline)
				return
			}
			assertLong64(t, mem, res, boot.ZeroPageAddr)
			zp := read(t, mem, boot.ZeroPageAddr, 4096)
			assert.Equal(t, uint32(2047), binary.LittleEndian.Uint32(zp[zpCmdlineSize:]), "cmdline_size of a vmlinux")
			assert.Equal(t, uint32(res.Initrd.GuestAddr), binary.LittleEndian.Uint32(zp[zpRamdiskImage:]))
			assert.Equal(t, uint32(res.Initrd.Size), binary.LittleEndian.Uint32(zp[zpRamdiskSize:]))
		})
	}
}

// pvhNotePattern is Linux's PHYS32_ENTRY note header: namesz 4, descsz 8
// (a quad), type 18, "Xen".
func pvhNotePattern() []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 4)
	b = le.AppendUint32(b, 8)
	b = le.AppendUint32(b, 18)
	return append(b, "Xen\x00"...)
}

func TestDebianVmlinux(t *testing.T) {
	vmlinux := testVmlinux(t, testKernel(t))
	noteAt := bytes.Index(vmlinux, pvhNotePattern())
	require.Positive(t, noteAt, "Debian's vmlinux has a PVH note (CONFIG_PVH=y)")
	pvhEntry := binary.LittleEndian.Uint64(vmlinux[noteAt+16:])

	// assertSegments compares every PT_LOAD segment in guest memory with
	// what debug/elf reads from the file.
	assertSegments := func(t *testing.T, mem boot.Memory, res *boot.Result, file []byte) {
		t.Helper()
		f, err := elf.NewFile(bytes.NewReader(file))
		require.NoError(t, err, "the reference ELF reader cannot read the test vmlinux")
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD {
				continue
			}
			want, err := io2bytes(p)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(want, read(t, mem, p.Paddr, p.Filesz)), "segment at %#x", p.Paddr)
			assert.GreaterOrEqual(t, p.Paddr, res.Kernel.GuestAddr)
			assert.LessOrEqual(t, p.Paddr+p.Memsz, res.Kernel.End())
		}
	}

	t.Run("PVH", func(t *testing.T) {
		mem, ram := guestRAM(t, 512*mib)
		res, err := boot.Load(mem, boot.Config{Kernel: vmlinux, Initrd: []byte("initrd"), Cmdline: "console=ttyS0", RAM: ram, CPUs: 4})
		require.NoError(t, err)
		assert.Equal(t, boot.FormatELFPVH, res.Format)
		assert.Equal(t, pvhEntry, res.Entry)
		assertSegments(t, mem, res, vmlinux)
		assertProtected32(t, mem, res)
		assertStartInfo(t, mem, res, "console=ttyS0")
		assertTables(t, mem, res, 4)
	})

	t.Run("64-bit entry when the note is gone", func(t *testing.T) {
		patched := append([]byte(nil), vmlinux...)
		binary.LittleEndian.PutUint32(patched[noteAt+8:], 0x7fff) // some other note type
		mem, ram := guestRAM(t, 512*mib)
		res, err := boot.Load(mem, boot.Config{Kernel: patched, Cmdline: "console=ttyS0", RAM: ram, CPUs: 1})
		require.NoError(t, err)
		assert.Equal(t, boot.FormatELF64, res.Format)
		assert.Equal(t, binary.LittleEndian.Uint64(vmlinux[0x18:]), res.Entry, "vmlinux's e_entry is physical")
		assertSegments(t, mem, res, patched)
		assertLong64(t, mem, res, boot.ZeroPageAddr)
	})

	t.Run("truncated", func(t *testing.T) {
		f, err := elf.NewFile(bytes.NewReader(vmlinux))
		require.NoError(t, err)
		var segEnd int // where the last byte a segment loads lies
		for _, p := range f.Progs {
			segEnd = max(segEnd, int(p.Off+p.Filesz))
		}
		mem, ram := guestRAM(t, 512*mib)
		for _, n := range []int{4, 63, 64, 100, 0x1000, len(vmlinux) / 2, segEnd - 1} {
			_, err := boot.Load(mem, boot.Config{Kernel: vmlinux[:n], RAM: ram, CPUs: 1})
			assert.ErrorIs(t, err, boot.ErrCorruptKernel, "%d bytes", n)
		}
	})

	t.Run("too little RAM", func(t *testing.T) {
		mem, ram := guestRAM(t, 32*mib)
		_, err := boot.Load(mem, boot.Config{Kernel: vmlinux, RAM: ram, CPUs: 1})
		assert.ErrorIs(t, err, boot.ErrNoRoom)
	})
}

func io2bytes(p *elf.Prog) ([]byte, error) {
	b := make([]byte, p.Filesz)
	_, err := p.ReadAt(b, 0)
	return b, err
}

func TestHandmadeELF(t *testing.T) {
	le := binary.LittleEndian
	code := bytes.Repeat([]byte{0xf4}, 4096)
	load := func(paddr uint64) elfSegment { return elfSegment{typ: elf.PT_LOAD, paddr: paddr, data: code} }
	note := func(entry uint64, descsz int) elfSegment {
		return elfSegment{typ: elf.PT_NOTE, data: xenNote(entry, descsz), align: 4}
	}
	base := func() []byte { return makeELF(0x200000, load(0x200000), note(0x200010, 4)) }
	poke := func(b []byte, off int, v uint64, size int) []byte {
		switch size {
		case 2:
			le.PutUint16(b[off:], uint16(v))
		case 4:
			le.PutUint32(b[off:], uint32(v))
		case 8:
			le.PutUint64(b[off:], v)
		}
		return b
	}
	const ph0 = 64 // first program header

	tests := []struct {
		name       string
		kernel     []byte
		cmdline    string
		wantErr    error
		wantFormat boot.Format
		wantEntry  uint64
	}{
		{name: "PVH, 4-byte note", kernel: base(), wantFormat: boot.FormatELFPVH, wantEntry: 0x200010},
		{name: "PVH, 8-byte note", kernel: makeELF(0x200000, load(0x200000), note(0x200020, 8)), wantFormat: boot.FormatELFPVH, wantEntry: 0x200020},
		{name: "PVH note after another note, 8-aligned segment", kernel: makeELF(0x200000, load(0x200000), elfSegment{typ: elf.PT_NOTE, align: 8,
			data: append([]byte{4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 'G', 'N', 'U', 0, 1, 2, 3, 0, 0, 0, 0, 0}, xenNote(0x200030, 8)...)}),
			wantFormat: boot.FormatELFPVH, wantEntry: 0x200030},
		{name: "no note", kernel: makeELF(0x200040, load(0x200000)), wantFormat: boot.FormatELF64, wantEntry: 0x200040},
		{name: "virtual entry", kernel: makeELF(0xffffffff80200040, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, vaddr: 0xffffffff80200000, data: code}), wantFormat: boot.FormatELF64, wantEntry: 0x200040},
		{name: "bss larger than file part", kernel: makeELF(0x200000, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, data: code, memsz: 8 << 20}), wantFormat: boot.FormatELF64, wantEntry: 0x200000},
		{name: "longest command line", kernel: base(), cmdline: strings.Repeat("x", 2047), wantFormat: boot.FormatELFPVH, wantEntry: 0x200010},
		{name: "command line too long", kernel: base(), cmdline: strings.Repeat("x", 2048), wantErr: boot.ErrCmdlineTooLong},

		{name: "empty", kernel: nil, wantErr: boot.ErrNotKernel},
		{name: "PE file", kernel: append([]byte("MZ"), make([]byte, 4096)...), wantErr: boot.ErrNotKernel},
		{name: "header truncated", kernel: base()[:40], wantErr: boot.ErrCorruptKernel},
		{name: "ELF32", kernel: func() []byte { b := base(); b[elf.EI_CLASS] = byte(elf.ELFCLASS32); return b }(), wantErr: boot.ErrUnsupportedKernel},
		{name: "big-endian", kernel: func() []byte { b := base(); b[elf.EI_DATA] = byte(elf.ELFDATA2MSB); return b }(), wantErr: boot.ErrUnsupportedKernel},
		{name: "arm64", kernel: poke(base(), 0x12, uint64(elf.EM_AARCH64), 2), wantErr: boot.ErrUnsupportedKernel},
		{name: "shared object", kernel: poke(base(), 0x10, uint64(elf.ET_DYN), 2), wantErr: boot.ErrUnsupportedKernel},
		{name: "no program headers", kernel: poke(base(), 0x38, 0, 2), wantErr: boot.ErrCorruptKernel},
		{name: "PN_XNUM program headers", kernel: poke(base(), 0x38, 0xffff, 2), wantErr: boot.ErrCorruptKernel},
		{name: "short program header entries", kernel: poke(base(), 0x36, 32, 2), wantErr: boot.ErrCorruptKernel},
		{name: "program headers past the end", kernel: poke(base(), 0x20, 1<<40, 8), wantErr: boot.ErrCorruptKernel},
		{name: "program header offset wraps", kernel: poke(base(), 0x20, ^uint64(0)-8, 8), wantErr: boot.ErrCorruptKernel},
		{name: "segment data past the end", kernel: poke(base(), ph0+8, 1<<30, 8), wantErr: boot.ErrCorruptKernel},
		{name: "segment offset wraps", kernel: poke(base(), ph0+8, ^uint64(0)-10, 8), wantErr: boot.ErrCorruptKernel},
		{name: "file size over memory size", kernel: poke(base(), ph0+40, 16, 8), wantErr: boot.ErrCorruptKernel},
		{name: "file size but no memory size", kernel: poke(base(), ph0+40, 0, 8), wantErr: boot.ErrCorruptKernel},
		{name: "segment address wraps", kernel: poke(poke(base(), ph0+24, ^uint64(0)-100, 8), ph0+40, 1<<20, 8), wantErr: boot.ErrCorruptKernel},
		{name: "overlapping segments", kernel: makeELF(0x200000, load(0x200000), load(0x200800)), wantErr: boot.ErrCorruptKernel},
		{name: "no loadable segment", kernel: makeELF(0x200000, note(0x200010, 4)), wantErr: boot.ErrCorruptKernel},
		{name: "entry outside the segments", kernel: makeELF(0x900000, load(0x200000)), wantErr: boot.ErrCorruptKernel},
		{name: "PVH entry outside the segments", kernel: makeELF(0x200000, load(0x200000), note(0x900000, 4)), wantErr: boot.ErrCorruptKernel},
		{name: "PVH entry above 4 GiB", kernel: makeELF(0x200000, load(0x200000), note(1<<32, 8)), wantErr: boot.ErrCorruptKernel},
		{name: "PVH note of 2 bytes", kernel: makeELF(0x200000, load(0x200000), elfSegment{typ: elf.PT_NOTE, data: append(xenNote(0, 4)[:4], 2, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0, 1, 2, 0, 0)}), wantErr: boot.ErrCorruptKernel},
		{name: "note name runs past the segment", kernel: poke(base(), 64+2*56+((4096+64+2*56+15)&^15)-(64+2*56), 0xfffffff0, 4), wantErr: boot.ErrCorruptKernel},
		{name: "note segment past the end", kernel: poke(base(), ph0+56+8, 1<<32, 8), wantErr: boot.ErrCorruptKernel},
		{name: "segment below 1 MiB", kernel: makeELF(0x7000, load(0x7000)), wantErr: boot.ErrNoRoom},
		{name: "segment above 4 GiB", kernel: makeELF(5<<30, load(5<<30)), wantErr: boot.ErrNoRoom},
		{name: "segment outside RAM", kernel: makeELF(100<<20, load(100<<20)), wantErr: boot.ErrNoRoom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, ram := guestRAM(t, 64*mib)
			res, err := boot.Load(mem, boot.Config{Kernel: tt.kernel, Cmdline: tt.cmdline, RAM: ram, CPUs: 1})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantFormat, res.Format)
			assert.Equal(t, tt.wantEntry, res.Entry)
			assert.Equal(t, tt.wantEntry, res.CPU.RIP)
		})
	}
}
