package boot

import (
	"encoding/binary"
	"fmt"
)

// The boot GDT. Its slots and selectors follow Linux's boot code
// (arch/x86/include/asm/segment.h: GDT_ENTRY_BOOT_CS = 2 -> __BOOT_CS 0x10,
// GDT_ENTRY_BOOT_DS = 3 -> __BOOT_DS 0x18, which the 64-bit boot protocol
// requires), with a 32-bit code segment for PVH in slot 1 and the TSS in
// slots 4-5 (a 64-bit TSS descriptor takes two slots).
const (
	gdtNull   = 0
	gdtCode32 = 1
	gdtCode64 = 2
	gdtData   = 3
	gdtTSS    = 4
	gdtSlots  = 6
	gdtSize   = gdtSlots * 8

	// Segment types (Intel SDM vol. 3, table 3-1 and 3-2).
	segTypeCodeExecReadAccessed = 0xb
	segTypeDataReadWriteAccess  = 0x3
	segTypeTSSBusy              = 0xb // 32-bit TSS (busy); in long mode, 64-bit TSS (busy)

	// tssLimit is 0x67: a 104-byte TSS, as PVH requires. The TSS sits at
	// address 0 (PVH says base 0); nothing reads it before the kernel
	// loads its own TR, since there are no privilege changes or IST
	// stacks at boot.
	tssLimit = 0x67
)

// bootSegments returns the descriptors in the GDT by slot, as loaded into
// segment registers. Both the GDT bytes and CPUState derive from it, so the
// two cannot disagree.
func bootSegments() [gdtSlots]Segment {
	return [gdtSlots]Segment{
		gdtCode32: {Selector: gdtCode32 * 8, Limit: 0xffffffff, Type: segTypeCodeExecReadAccessed, Present: true, DB: true, S: true, G: true},
		gdtCode64: {Selector: gdtCode64 * 8, Limit: 0xffffffff, Type: segTypeCodeExecReadAccessed, Present: true, S: true, L: true, G: true},
		gdtData:   {Selector: gdtData * 8, Limit: 0xffffffff, Type: segTypeDataReadWriteAccess, Present: true, DB: true, S: true, G: true},
		gdtTSS:    {Selector: gdtTSS * 8, Base: 0, Limit: tssLimit, Type: segTypeTSSBusy, Present: true},
	}
}

// descriptor encodes s as an 8-byte segment descriptor (Intel SDM vol. 3,
// figure 3-8). For a system segment in long mode the next slot holds base
// bits 63:32 (figure 8-4); see writeGDT.
func descriptor(s Segment) uint64 {
	limit := uint64(s.Limit)
	if s.G {
		limit >>= 12
	}
	access := uint64(s.Type&0xf) | uint64(s.DPL&3)<<5
	if s.S {
		access |= 1 << 4
	}
	if s.Present {
		access |= 1 << 7
	}
	var flags uint64
	if s.L {
		flags |= 1 << 1
	}
	if s.DB {
		flags |= 1 << 2
	}
	if s.G {
		flags |= 1 << 3
	}
	return limit&0xffff |
		(s.Base&0xffffff)<<16 |
		access<<40 |
		(limit>>16&0xf)<<48 |
		flags<<52 |
		(s.Base>>24&0xff)<<56
}

// writeGDT writes the boot GDT at GDTAddr and an empty IDT at IDTAddr.
func writeGDT(mem Memory) error {
	b := make([]byte, gdtSize)
	le := binary.LittleEndian
	segs := bootSegments()
	for slot, s := range segs {
		if slot == gdtNull || slot == gdtTSS+1 {
			continue
		}
		le.PutUint64(b[slot*8:], descriptor(s))
	}
	le.PutUint64(b[(gdtTSS+1)*8:], segs[gdtTSS].Base>>32)
	if err := mem.WriteAt(b, GDTAddr); err != nil {
		return fmt.Errorf("write GDT at %#x: %w", GDTAddr, err)
	}
	if err := mem.WriteAt(make([]byte, 8), IDTAddr); err != nil {
		return fmt.Errorf("write IDT at %#x: %w", IDTAddr, err)
	}
	return nil
}
