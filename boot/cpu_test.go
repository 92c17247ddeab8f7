package boot_test

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
)

// translate walks 4-level page tables from cr3 as the MMU would (Intel SDM
// vol. 3, 4.5), handling 1 GiB and 2 MiB pages.
func translate(t *testing.T, mem boot.Memory, cr3, va uint64) (uint64, bool) {
	t.Helper()
	const addrMask = 0x000f_ffff_ffff_f000
	table := cr3 & addrMask
	for level, shift := range []uint64{39, 30, 21, 12} {
		e := read64(t, mem, table+((va>>shift)&511)*8)
		if e&1 == 0 {
			return 0, false
		}
		if level > 0 && level < 3 && e&(1<<7) != 0 { // PS: 1 GiB or 2 MiB page
			size := uint64(1) << shift
			return e&addrMask&^(size-1) | va&(size-1), true
		}
		table = e & addrMask
	}
	return table | va&0xfff, true
}

// decodeDescriptor reads GDT slot selector>>3 back into a Segment.
func decodeDescriptor(t *testing.T, mem boot.Memory, gdt boot.DescriptorTable, selector uint16) boot.Segment {
	t.Helper()
	off := uint64(selector &^ 7)
	require.LessOrEqual(t, off+7, uint64(gdt.Limit), "selector %#x beyond the GDT limit", selector)
	d := read64(t, mem, gdt.Base+off)
	s := boot.Segment{
		Selector: selector,
		Base:     (d>>16)&0xffffff | (d>>56&0xff)<<24,
		Type:     uint8(d >> 40 & 0xf),
		S:        d>>44&1 == 1,
		DPL:      uint8(d >> 45 & 3),
		Present:  d>>47&1 == 1,
		L:        d>>53&1 == 1,
		DB:       d>>54&1 == 1,
		G:        d>>55&1 == 1,
	}
	limit := uint32(d&0xffff | (d>>48&0xf)<<16)
	if s.G {
		limit = limit<<12 | 0xfff
	}
	s.Limit = limit
	if !s.S { // 16-byte system descriptor in long mode: base bits 63:32 follow
		s.Base |= read64(t, mem, gdt.Base+off+8) << 32
	}
	return s
}

// assertSegmentsMatchGDT checks that the segment registers Load reports are
// exactly what loading their selectors from the GDT it wrote would give.
func assertSegmentsMatchGDT(t *testing.T, mem boot.Memory, cpu boot.CPUState) {
	t.Helper()
	for name, s := range map[string]boot.Segment{"CS": cpu.CS, "DS": cpu.DS, "ES": cpu.ES, "FS": cpu.FS, "GS": cpu.GS, "SS": cpu.SS, "TR": cpu.TR} {
		assert.Equal(t, s, decodeDescriptor(t, mem, cpu.GDT, s.Selector), "%s vs its GDT descriptor", name)
	}
	assert.True(t, cpu.LDT.Unusable, "no LDT")
	for name, s := range map[string]boot.Segment{"DS": cpu.DS, "ES": cpu.ES, "SS": cpu.SS} {
		assert.Equal(t, uint64(0), s.Base, name)
		assert.Equal(t, uint32(0xffffffff), s.Limit, name)
		assert.Equal(t, uint8(3), s.Type, "%s: read/write data", name)
	}
	assert.Equal(t, boot.Segment{Selector: 0x20, Limit: 0x67, Type: 0xb, Present: true}, cpu.TR, "busy TSS, base 0, limit 0x67")
	assert.Equal(t, uint64(boot.IDTAddr), cpu.IDT.Base)
	assert.Equal(t, uint64(boot.GDTAddr), cpu.GDT.Base)
}

// assertLong64 checks the 64-bit boot protocol's entry state.
func assertLong64(t *testing.T, mem boot.Memory, res *boot.Result, zeroPage uint64) {
	t.Helper()
	c := res.CPU
	assert.Equal(t, boot.Long64, c.Mode)
	assert.Equal(t, res.Entry, c.RIP)
	assert.Equal(t, zeroPage, c.RSI, "RSI = zero page")
	assert.Equal(t, zeroPage, res.BootParams)
	assert.Equal(t, uint64(2), c.RFLAGS, "only the reserved bit: interrupts off")
	assert.Equal(t, uint64(boot.CR0PE|boot.CR0PG), c.CR0&(boot.CR0PE|boot.CR0PG))
	assert.Equal(t, uint64(boot.CR4PAE), c.CR4)
	assert.Equal(t, uint64(boot.EFERLME|boot.EFERLMA), c.EFER)
	assert.Equal(t, boot.PML4Addr, c.CR3)
	assert.Equal(t, boot.StackTop, c.RSP)
	assert.Equal(t, uint16(0x10), c.CS.Selector, "__BOOT_CS")
	assert.Equal(t, uint16(0x18), c.DS.Selector, "__BOOT_DS")
	assert.True(t, c.CS.L, "64-bit code segment")
	assert.False(t, c.CS.DB, "L and D are exclusive")
	assertSegmentsMatchGDT(t, mem, c)

	// The boot page tables identity-map the first 4 GiB and nothing else.
	for _, va := range []uint64{0, boot.ZeroPageAddr, boot.CmdlineAddr, res.Entry, res.Kernel.End() - 1, res.Initrd.GuestAddr, 3*gib + 12345, 4*gib - 1} {
		if va >= 4*gib {
			continue // an initrd above 4 GiB needs no mapping
		}
		pa, ok := translate(t, mem, c.CR3, va)
		if assert.True(t, ok, "%#x not mapped", va) {
			assert.Equal(t, va, pa, "%#x not identity-mapped", va)
		}
	}
	_, ok := translate(t, mem, c.CR3, 4*gib)
	assert.False(t, ok, "4 GiB must not be mapped")

	zp := read(t, mem, zeroPage, 4096)
	assert.Equal(t, byte(0xff), zp[zpTypeOfLoader], "type_of_loader")
	assert.Equal(t, uint32(boot.CmdlineAddr), binary.LittleEndian.Uint32(zp[zpCmdLinePtr:]))
	assert.Equal(t, "HdrS", string(zp[zpHeader:zpHeader+4]))
	assert.Equal(t, uint16(0xaa55), binary.LittleEndian.Uint16(zp[zpBootFlag:]))
	assert.Equal(t, res.E820, zeroPageE820(zp))
}

// assertProtected32 checks PVH's entry state.
func assertProtected32(t *testing.T, mem boot.Memory, res *boot.Result) {
	t.Helper()
	c := res.CPU
	assert.Equal(t, boot.Protected32, c.Mode)
	assert.Equal(t, res.Entry, c.RIP)
	assert.Equal(t, boot.PVHStartInfoAddr, c.RBX, "EBX = hvm_start_info")
	assert.Equal(t, boot.PVHStartInfoAddr, res.BootParams)
	assert.Equal(t, uint64(2), c.RFLAGS)
	assert.Equal(t, uint64(boot.CR0PE), c.CR0&^boot.CR0ET, "PE only: paging off")
	assert.Zero(t, c.CR4)
	assert.Zero(t, c.EFER)
	assert.True(t, c.CS.DB && !c.CS.L, "32-bit code segment")
	assert.Equal(t, uint32(0xffffffff), c.CS.Limit)
	assertSegmentsMatchGDT(t, mem, c)
}

// assertTables checks that the MP table and ACPI tables are where the result
// says, for cpus CPUs.
func assertTables(t *testing.T, mem boot.Memory, res *boot.Result, cpus int) {
	t.Helper()
	assert.Equal(t, "RSD PTR ", string(read(t, mem, res.RSDP, 8)))
	assert.Equal(t, "_MP_", string(read(t, mem, res.MPTable, 4)))
	assert.Equal(t, boot.EBDAStart, res.MPTable)
	cfg := binary.LittleEndian.Uint32(read(t, mem, res.MPTable+4, 4))
	count := binary.LittleEndian.Uint16(read(t, mem, uint64(cfg)+34, 2))
	assert.Equal(t, uint16(cpus+20), count, "MP entries: CPUs + bus + IOAPIC + 16 interrupts + 2 local")
}
