package boot

import (
	"fmt"
	"sort"
)

// E820Type is an e820 address range type (ACPI "Address Range Types"; Linux
// arch/x86/include/asm/e820/types.h). PVH's hvm_memmap_table_entry uses the
// same numbers.
type E820Type uint32

// E820 range types.
const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3
	E820NVS      E820Type = 4
	E820Unusable E820Type = 5
)

// E820Entry is one range of the memory map.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type E820Type
}

// End is the first address past the entry.
func (e E820Entry) End() uint64 { return e.Addr + e.Size }

const (
	// e820MaxEntries is E820_MAX_ENTRIES_ZEROPAGE: the zero page's
	// e820_table holds 128 entries.
	e820MaxEntries = 128
	e820EntrySize  = 20 // struct boot_e820_entry: addr u64, size u64, type u32 (packed)
)

// buildE820 turns the RAM regions into the memory map a PC would report:
// RAM up to the EBDA, the EBDA and BIOS area [EBDAStart, 1 MiB) reserved
// (the MP table and ACPI tables live there; the legacy video hole is in it
// too), RAM from 1 MiB up, and each extra range in reserved marked reserved.
//
// The PCI MMIO hole is deliberately not reserved as a whole: Linux (x86
// pci_use_e820) clips host bridge windows by e820-reserved ranges, and would
// then have no room left for BARs. Only ECAM, which lies inside the hole but
// outside the bridge's windows, is passed in reserved.
func buildE820(ram []Region, reserved ...Region) ([]E820Entry, error) {
	var m []E820Entry
	legacy := Region{GuestAddr: EBDAStart, Size: HighMemStart - EBDAStart}
	for _, r := range ram {
		if lo, hi := r.GuestAddr, min(r.End(), legacy.GuestAddr); lo < hi {
			m = append(m, E820Entry{Addr: lo, Size: hi - lo, Type: E820RAM})
		}
		if lo, hi := max(r.GuestAddr, legacy.End()), r.End(); lo < hi {
			m = append(m, E820Entry{Addr: lo, Size: hi - lo, Type: E820RAM})
		}
	}
	m = append(m, E820Entry{Addr: legacy.GuestAddr, Size: legacy.Size, Type: E820Reserved})
	for _, res := range reserved {
		if res.Size == 0 {
			continue
		}
		for _, r := range ram {
			if r.overlaps(res.GuestAddr, res.Size) {
				return nil, fmt.Errorf("reserved range [%#x, +%#x) overlaps RAM [%#x, +%#x): %w", res.GuestAddr, res.Size, r.GuestAddr, r.Size, ErrBadConfig)
			}
		}
		m = append(m, E820Entry{Addr: res.GuestAddr, Size: res.Size, Type: E820Reserved})
	}
	sort.Slice(m, func(i, j int) bool { return m[i].Addr < m[j].Addr })
	if len(m) > e820MaxEntries {
		return nil, fmt.Errorf("memory map has %d entries, the zero page holds %d: %w", len(m), e820MaxEntries, ErrBadConfig)
	}
	return m, nil
}
