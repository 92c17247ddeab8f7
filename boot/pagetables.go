package boot

import (
	"encoding/binary"
	"fmt"
)

// Page table entry bits (Intel SDM vol. 3, 4.5).
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // in a PD entry: maps a 2 MiB page

	hugePageSize = 2 << 20
	ptEntries    = 512
	// pdCount page directories of 512 2-MiB pages map IdentityMapSize.
	pdCount = IdentityMapSize / (ptEntries * hugePageSize)
)

// writePageTables builds 4-level page tables that identity-map the first
// IdentityMapSize bytes with 2 MiB pages: one PML4 at PML4Addr, one PDPT at
// PDPTAddr, pdCount page directories from PDAddr. 2 MiB pages work on every
// x86-64 CPU (1 GiB pages need pdpe1gb, which a VMM cannot assume).
func writePageTables(mem Memory) error {
	le := binary.LittleEndian
	pml4 := make([]byte, pageSize)
	le.PutUint64(pml4, PDPTAddr|ptePresent|pteWritable)

	pdpt := make([]byte, pageSize)
	pds := make([]byte, pdCount*pageSize)
	for d := range pdCount {
		le.PutUint64(pdpt[d*8:], (PDAddr+d*pageSize)|ptePresent|pteWritable)
		for e := range uint64(ptEntries) {
			phys := (d*ptEntries + e) * hugePageSize
			le.PutUint64(pds[(d*ptEntries+e)*8:], phys|ptePresent|pteWritable|ptePageSize)
		}
	}
	for _, t := range []struct {
		name string
		addr uint64
		data []byte
	}{{"PML4", PML4Addr, pml4}, {"PDPT", PDPTAddr, pdpt}, {"page directories", PDAddr, pds}} {
		if err := mem.WriteAt(t.data, t.addr); err != nil {
			return fmt.Errorf("write %s at %#x: %w", t.name, t.addr, err)
		}
	}
	return nil
}
