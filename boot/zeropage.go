package boot

import (
	"encoding/binary"
	"fmt"
)

// Offsets in struct boot_params, the zero page (Linux
// arch/x86/include/uapi/asm/bootparam.h, Documentation/arch/x86/zero-page.rst),
// besides the setup header fields in bzimage.go.
const (
	zeroPageSize        = 4096
	zpACPIRSDPAddrOff   = 0x070 // u64 acpi_rsdp_addr
	zpExtRamdiskImgOff  = 0x0c0 // u32 ext_ramdisk_image: initrd address bits 63:32
	zpExtRamdiskSizeOff = 0x0c4 // u32 ext_ramdisk_size: initrd size bits 63:32
	zpExtCmdLinePtrOff  = 0x0c8 // u32 ext_cmd_line_ptr: command line address bits 63:32
	zpE820EntriesOff    = 0x1e8 // u8 e820_entries
	zpE820TableOff      = 0x2d0 // struct boot_e820_entry e820_table[128]
)

// writeZeroPage builds struct boot_params for the 64-bit entry (bzImage or
// ELF) and writes it at ZeroPageAddr.
func writeZeroPage(mem Memory, k *kernelImage, res *Result) error {
	zp := make([]byte, zeroPageSize)
	le := binary.LittleEndian
	if k.bz != nil {
		// The loader hands the kernel's own setup header back to it,
		// with the loader-written fields filled in below.
		copy(zp[bzSetupSectsOff:], k.bz.header)
		le.PutUint32(zp[bzCode32StartOff:], uint32(k.bz.loadAddr))
	} else {
		// A vmlinux has no setup header; build the parts the kernel's
		// early code reads (boot_flag and magic mark it valid).
		le.PutUint16(zp[bzBootFlagOff:], bzBootFlag)
		copy(zp[bzHeaderMagicOff:], bzHeaderMagic)
		le.PutUint32(zp[bzCmdlineSizeOff:], uint32(k.cmdlineMax))
	}
	zp[bzTypeOfLoaderOff] = bzTypeOfLoaderUndef

	le.PutUint32(zp[bzCmdLinePtrOff:], uint32(res.Cmdline))
	le.PutUint32(zp[zpExtCmdLinePtrOff:], uint32(res.Cmdline>>32))
	le.PutUint32(zp[bzRamdiskImageOff:], uint32(res.Initrd.GuestAddr))
	le.PutUint32(zp[bzRamdiskSizeOff:], uint32(res.Initrd.Size))
	le.PutUint32(zp[zpExtRamdiskImgOff:], uint32(res.Initrd.GuestAddr>>32))
	le.PutUint32(zp[zpExtRamdiskSizeOff:], uint32(res.Initrd.Size>>32))
	le.PutUint64(zp[zpACPIRSDPAddrOff:], res.RSDP)

	if len(res.E820) > e820MaxEntries {
		return fmt.Errorf("zero page: %d e820 entries, room for %d: %w", len(res.E820), e820MaxEntries, ErrBadConfig)
	}
	zp[zpE820EntriesOff] = uint8(len(res.E820))
	for i, e := range res.E820 {
		b := zp[zpE820TableOff+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], uint32(e.Type))
	}
	if err := mem.WriteAt(zp, ZeroPageAddr); err != nil {
		return fmt.Errorf("write zero page at %#x: %w", ZeroPageAddr, err)
	}
	return nil
}
