package boot_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/boot/acpi"
)

// smallELF is a minimal valid kernel for tests about everything but the
// kernel.
func smallELF() []byte {
	return makeELF(0x200000, elfSegment{typ: 1 /* PT_LOAD */, paddr: 0x200000, data: []byte{0xf4}})
}

func TestConfigErrors(t *testing.T) {
	low := boot.Region{GuestAddr: 0, Size: 64 * mib}
	tests := []struct {
		name    string
		mem     boot.Memory
		cfg     boot.Config
		wantErr error
	}{
		{"no memory", nil, boot.Config{RAM: []boot.Region{low}, CPUs: 1}, boot.ErrBadConfig},
		{"no CPUs", newSparseMemory(low), boot.Config{RAM: []boot.Region{low}}, boot.ErrBadConfig},
		{"too many CPUs", newSparseMemory(low), boot.Config{RAM: []boot.Region{low}, CPUs: boot.MaxCPUs + 1}, boot.ErrBadConfig},
		{"no RAM", newSparseMemory(low), boot.Config{CPUs: 1}, boot.ErrBadConfig},
		{"RAM not at 0", newSparseMemory(low), boot.Config{RAM: []boot.Region{{GuestAddr: mib, Size: 8 * mib}}, CPUs: 1}, boot.ErrBadConfig},
		{"RAM ends at 1 MiB", newSparseMemory(low), boot.Config{RAM: []boot.Region{{Size: mib}}, CPUs: 1}, boot.ErrBadConfig},
		{"unaligned region", newSparseMemory(low), boot.Config{RAM: []boot.Region{{Size: 8*mib + 1}}, CPUs: 1}, boot.ErrBadConfig},
		{"empty region", newSparseMemory(low), boot.Config{RAM: []boot.Region{low, {GuestAddr: 4 * gib}}, CPUs: 1}, boot.ErrBadConfig},
		{"regions out of order", newSparseMemory(low), boot.Config{RAM: []boot.Region{low, {GuestAddr: 32 * mib, Size: mib}}, CPUs: 1}, boot.ErrBadConfig},
		{"region wraps", newSparseMemory(low), boot.Config{RAM: []boot.Region{low, {GuestAddr: ^uint64(0) &^ 0xfff, Size: 8192}}, CPUs: 1}, boot.ErrBadConfig},
		{"more RAM than memory", newSparseMemory(boot.Region{Size: 16 * mib}), boot.Config{RAM: []boot.Region{low}, CPUs: 1}, boot.ErrBadConfig},
		{"NUL in command line", newSparseMemory(low), boot.Config{RAM: []boot.Region{low}, CPUs: 1, Cmdline: "a\x00b"}, boot.ErrBadConfig},
		{"ECAM inside RAM", newSparseMemory(low), boot.Config{RAM: []boot.Region{low}, CPUs: 1, ACPI: acpi.Config{ECAMBase: 32 * mib}}, boot.ErrBadConfig},
		{"bad ACPI config", newSparseMemory(low), boot.Config{RAM: []boot.Region{low}, CPUs: 1, ACPI: acpi.Config{PM1aEventPort: 0x604}}, acpi.ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Kernel = smallELF()
			_, err := boot.Load(tt.mem, tt.cfg)
			assert.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestNotAKernel(t *testing.T) {
	mem := newSparseMemory(boot.Region{Size: 64 * mib})
	for _, k := range [][]byte{nil, []byte("hello"), make([]byte, 8192), append([]byte("#!/bin/sh\n"), make([]byte, 1024)...)} {
		_, err := boot.Load(mem, boot.Config{Kernel: k, RAM: []boot.Region{{Size: 64 * mib}}, CPUs: 1})
		require.ErrorIs(t, err, boot.ErrNotKernel)
		assert.Contains(t, err.Error(), "not a Linux kernel")
		assert.Contains(t, err.Error(), "no bzImage header")
		assert.Contains(t, err.Error(), "no ELF magic")
	}
}

func TestE820AroundHoles(t *testing.T) {
	// The layout vmm/memory uses for 3.5 GiB: RAM up to 3 GiB, the rest at 4 GiB.
	ram := []boot.Region{{Size: 3 * gib}, {GuestAddr: 4 * gib, Size: gib / 2}}
	mem := newSparseMemory(ram...)
	res, err := boot.Load(mem, boot.Config{Kernel: smallELF(), RAM: ram, CPUs: 1, ACPI: acpi.Config{ECAMBase: 3 * gib}})
	require.NoError(t, err)
	assert.Equal(t, []boot.E820Entry{
		{Addr: 0, Size: 0x9fc00, Type: boot.E820RAM},
		{Addr: 0x9fc00, Size: 0x60400, Type: boot.E820Reserved},
		{Addr: mib, Size: 3*gib - mib, Type: boot.E820RAM},
		{Addr: 3 * gib, Size: mib, Type: boot.E820Reserved}, // ECAM
		{Addr: 4 * gib, Size: gib / 2, Type: boot.E820RAM},
	}, res.E820)
}

func TestLowMemoryLayoutIsDisjoint(t *testing.T) {
	// Every fixed structure, with its maximum size, must fit below 1 MiB
	// without touching another.
	areas := []struct {
		name       string
		start, end uint64
	}{
		{"GDT", boot.GDTAddr, boot.GDTAddr + 6*8},
		{"IDT", boot.IDTAddr, boot.IDTAddr + 8},
		{"PVH start info, modules, memory map", boot.PVHStartInfoAddr, boot.ZeroPageAddr},
		{"zero page", boot.ZeroPageAddr, boot.ZeroPageAddr + 4096},
		{"stack", boot.ZeroPageAddr + 4096, boot.StackTop},
		{"page tables", boot.PML4Addr, boot.PDAddr + 4*4096},
		{"command line", boot.CmdlineAddr, boot.CmdlineAddr + boot.CmdlineMax},
		{"MP table (254 CPUs)", boot.EBDAStart, boot.EBDAStart + 5300},
		{"ACPI", boot.ACPIAddr, boot.HighMemStart},
	}
	for i, a := range areas {
		assert.Less(t, a.start, a.end, a.name)
		assert.LessOrEqual(t, a.end, boot.HighMemStart, a.name)
		for _, b := range areas[:i] {
			assert.True(t, a.end <= b.start || b.end <= a.start, "%s [%#x, %#x) overlaps %s [%#x, %#x)", a.name, a.start, a.end, b.name, b.start, b.end)
		}
	}
}

func TestMaxCPUs(t *testing.T) {
	mem := newSparseMemory(boot.Region{Size: 64 * mib})
	res, err := boot.Load(mem, boot.Config{Kernel: smallELF(), RAM: []boot.Region{{Size: 64 * mib}}, CPUs: boot.MaxCPUs})
	require.NoError(t, err)
	assertTables(t, mem, res, boot.MaxCPUs)
}
