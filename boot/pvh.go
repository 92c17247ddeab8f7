package boot

import (
	"encoding/binary"
	"fmt"
)

// PVH boot structures (Xen's include/public/arch-x86/hvm/start_info.h and
// docs/misc/pvh.pandoc).
const (
	// pvhStartMagic is XEN_HVM_START_MAGIC_VALUE.
	pvhStartMagic = 0x336ec578
	// pvhStartVersion 1 adds the memory map to version 0.
	pvhStartVersion = 1

	pvhStartInfoSize    = 0x38 // struct hvm_start_info, version 1
	pvhModlistEntrySize = 0x20 // struct hvm_modlist_entry
	pvhMemmapEntrySize  = 0x18 // struct hvm_memmap_table_entry

	// struct hvm_start_info field offsets.
	pvhMagicOff         = 0x00 // u32
	pvhVersionOff       = 0x04 // u32
	pvhNrModulesOff     = 0x0c // u32
	pvhModlistPaddrOff  = 0x10 // u64
	pvhCmdlinePaddrOff  = 0x18 // u64
	pvhRSDPPaddrOff     = 0x20 // u64
	pvhMemmapPaddrOff   = 0x28 // u64
	pvhMemmapEntriesOff = 0x30 // u32
)

// writeStartInfo builds hvm_start_info, its module list (the initrd, if
// any) and its memory map, and writes them at PVHStartInfoAddr.
func writeStartInfo(mem Memory, res *Result) error {
	if maxEntries := (pvhAreaEnd - PVHMemmapAddr) / pvhMemmapEntrySize; uint64(len(res.E820)) > maxEntries {
		return fmt.Errorf("PVH memory map: %d entries, room for %d: %w", len(res.E820), maxEntries, ErrBadConfig)
	}
	area := make([]byte, pvhAreaEnd-PVHStartInfoAddr)
	le := binary.LittleEndian
	info := area[:pvhStartInfoSize]
	le.PutUint32(info[pvhMagicOff:], pvhStartMagic)
	le.PutUint32(info[pvhVersionOff:], pvhStartVersion)
	le.PutUint64(info[pvhCmdlinePaddrOff:], res.Cmdline)
	le.PutUint64(info[pvhRSDPPaddrOff:], res.RSDP)
	if res.Initrd.Size > 0 {
		le.PutUint32(info[pvhNrModulesOff:], 1)
		le.PutUint64(info[pvhModlistPaddrOff:], PVHModlistAddr)
		mod := area[PVHModlistAddr-PVHStartInfoAddr:]
		le.PutUint64(mod[0:], res.Initrd.GuestAddr) // paddr
		le.PutUint64(mod[8:], res.Initrd.Size)      // size; cmdline_paddr stays 0
	}
	le.PutUint64(info[pvhMemmapPaddrOff:], PVHMemmapAddr)
	le.PutUint32(info[pvhMemmapEntriesOff:], uint32(len(res.E820)))
	for i, e := range res.E820 {
		b := area[PVHMemmapAddr-PVHStartInfoAddr+uint64(i)*pvhMemmapEntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], uint32(e.Type))
	}
	if err := mem.WriteAt(area, PVHStartInfoAddr); err != nil {
		return fmt.Errorf("write PVH start info at %#x: %w", PVHStartInfoAddr, err)
	}
	return nil
}
