package boot

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Offsets of the setup header, the same in a bzImage file and in the zero
// page (Documentation/arch/x86/boot.rst, "THE REAL-MODE KERNEL HEADER"; the
// header starts at 0x1f1 in both).
const (
	bzSetupSectsOff      = 0x1f1 // u8: size of the real-mode setup in 512-byte sectors, minus one
	bzSysSizeOff         = 0x1f4 // u32 (2.04+): size of the protected-mode code in 16-byte paragraphs
	bzBootFlagOff        = 0x1fe // u16: 0xAA55
	bzJumpOff            = 0x200 // u16: jmp rel8; its displacement (0x201) gives the header's end
	bzHeaderMagicOff     = 0x202 // u32: "HdrS"
	bzVersionOff         = 0x206 // u16: boot protocol version, major<<8 | minor
	bzTypeOfLoaderOff    = 0x210 // u8: boot loader identifier
	bzLoadflagsOff       = 0x211 // u8: LOADED_HIGH etc.
	bzCode32StartOff     = 0x214 // u32: where the protected-mode kernel was loaded
	bzRamdiskImageOff    = 0x218 // u32: initrd address (low 32 bits)
	bzRamdiskSizeOff     = 0x21c // u32: initrd size (low 32 bits)
	bzCmdLinePtrOff      = 0x228 // u32: command line address (low 32 bits)
	bzInitrdAddrMaxOff   = 0x22c // u32: highest address the initrd may occupy
	bzKernelAlignmentOff = 0x230 // u32: alignment a relocatable kernel needs
	bzRelocatableOff     = 0x234 // u8: non-zero if the kernel is relocatable
	bzXLoadflagsOff      = 0x236 // u16: XLF_* (protocol 2.12+)
	bzCmdlineSizeOff     = 0x238 // u32: longest command line, without its NUL
	bzPrefAddressOff     = 0x258 // u64: preferred load address (2.10+)
	bzInitSizeOff        = 0x260 // u32: memory the kernel needs from its run address (2.10+)
	// bzHeaderMinEnd is the end of the last field Load reads (init_size).
	bzHeaderMinEnd = 0x264
	// bzHeaderMaxEnd bounds what is copied into the zero page: struct
	// boot_params has room for the header and its padding up to 0x290,
	// where edd_mbr_sig_buffer starts.
	bzHeaderMaxEnd = 0x290

	bzHeaderMagic = "HdrS"
	bzBootFlag    = 0xaa55
	// bzSectorSize is the unit of setup_sects; setup_sects == 0 means 4.
	bzSectorSize         = 512
	bzDefaultSetupSects  = 4
	bz64BitEntryOffset   = 0x200 // the 64-bit entry is 0x200 past the load address
	bzMinVersion         = 0x0206
	bzXLoadflagsVersion  = 0x020c // xloadflags, hence XLF_KERNEL_64, appear in 2.12
	bzTypeOfLoaderUndef  = 0xff   // "undefined" loader: no assigned ID
	bzLoadflagLoadedHigh = 0x01   // LOADED_HIGH: protected-mode code loads at 1 MiB+

	xlfKernel64          = 1 << 0 // XLF_KERNEL_64: 64-bit entry at load address + 0x200
	xlfCanBeLoadedAbove4 = 1 << 1 // XLF_CAN_BE_LOADED_ABOVE_4G: initrd etc. may sit above 4 GiB
)

// bzImage is a parsed bzImage.
type bzImage struct {
	header          []byte // setup header, from 0x1f1, for the zero page
	protected       []byte // protected-mode kernel
	version         uint16
	relocatable     bool
	kernelAlignment uint64
	prefAddress     uint64
	initSize        uint64
	loadAddr        uint64 // chosen by place
}

func protocolString(v uint16) string { return fmt.Sprintf("%d.%02d", v>>8, v&0xff) }

// parseBzImage checks a bzImage's setup header. The caller has seen "HdrS".
func parseBzImage(data []byte) (*kernelImage, error) {
	if len(data) < bzHeaderMinEnd {
		return nil, fmt.Errorf("bzImage: setup header truncated at %d bytes: %w", len(data), ErrCorruptKernel)
	}
	le := binary.LittleEndian
	if f := le.Uint16(data[bzBootFlagOff:]); f != bzBootFlag {
		return nil, fmt.Errorf("bzImage: boot_flag %#04x, want %#04x: %w", f, bzBootFlag, ErrCorruptKernel)
	}
	version := le.Uint16(data[bzVersionOff:])
	if version < bzMinVersion {
		return nil, fmt.Errorf("bzImage: boot protocol %s is older than %s: %w", protocolString(version), protocolString(bzMinVersion), ErrUnsupportedKernel)
	}
	if version < bzXLoadflagsVersion {
		return nil, fmt.Errorf("bzImage: boot protocol %s has no xloadflags (%s+), so no 64-bit entry point can be confirmed: %w",
			protocolString(version), protocolString(bzXLoadflagsVersion), ErrUnsupportedKernel)
	}
	if data[bzLoadflagsOff]&bzLoadflagLoadedHigh == 0 {
		return nil, fmt.Errorf("bzImage: loadflags LOADED_HIGH clear (a zImage loaded at 0x10000): %w", ErrUnsupportedKernel)
	}
	xloadflags := le.Uint16(data[bzXLoadflagsOff:])
	if xloadflags&xlfKernel64 == 0 {
		return nil, fmt.Errorf("bzImage: xloadflags %#x lack XLF_KERNEL_64 (no 64-bit entry point): %w", xloadflags, ErrUnsupportedKernel)
	}

	setupSects := uint64(data[bzSetupSectsOff])
	if setupSects == 0 {
		setupSects = bzDefaultSetupSects
	}
	setupSize := (setupSects + 1) * bzSectorSize
	if setupSize >= uint64(len(data)) {
		return nil, fmt.Errorf("bzImage: %d setup sectors reach past the end of the %d-byte file: no protected-mode kernel: %w", setupSects, len(data), ErrCorruptKernel)
	}
	if need := uint64(le.Uint32(data[bzSysSizeOff:])) * 16; need > uint64(len(data))-setupSize {
		return nil, fmt.Errorf("bzImage truncated: syssize says %d bytes of protected-mode code, the file has %d: %w", need, uint64(len(data))-setupSize, ErrCorruptKernel)
	}
	headerEnd := uint64(bzHeaderMagicOff) + uint64(data[bzJumpOff+1])
	if headerEnd < bzHeaderMinEnd {
		return nil, fmt.Errorf("bzImage: setup header ends at %#x, before the protocol %s fields: %w", headerEnd, protocolString(version), ErrCorruptKernel)
	}
	headerEnd = min(headerEnd, bzHeaderMaxEnd)

	bz := &bzImage{
		header:          data[bzSetupSectsOff:headerEnd],
		protected:       data[setupSize:],
		version:         version,
		relocatable:     data[bzRelocatableOff] != 0,
		kernelAlignment: uint64(le.Uint32(data[bzKernelAlignmentOff:])),
		prefAddress:     le.Uint64(data[bzPrefAddressOff:]),
		initSize:        uint64(le.Uint32(data[bzInitSizeOff:])),
	}
	if a := bz.kernelAlignment; a == 0 || a&(a-1) != 0 {
		return nil, fmt.Errorf("bzImage: kernel_alignment %#x is not a power of two: %w", a, ErrCorruptKernel)
	}
	return &kernelImage{
		format:        FormatBzImage,
		cmdlineMax:    min(uint64(le.Uint32(data[bzCmdlineSizeOff:])), CmdlineMax-1),
		initrdLimit:   uint64(le.Uint32(data[bzInitrdAddrMaxOff:])) + 1,
		initrdAbove4G: xloadflags&xlfCanBeLoadedAbove4 != 0,
		bz:            bz,
	}, nil
}

// place picks the load address: pref_address for a relocatable kernel (the
// decompressor then runs where it is and moves nothing), else 1 MiB, the
// classic address. The kernel owns everything from the load address to the
// end of the init_size bytes it decompresses into, so that whole span must
// be RAM: Linux's arch/x86/boot/compressed/head_64.S decompresses to
// max(load address aligned up to kernel_alignment, LOAD_PHYSICAL_ADDR) when
// relocatable and to LOAD_PHYSICAL_ADDR (= pref_address) otherwise.
func (bz *bzImage) place(k *kernelImage, ram []Region) error {
	var candidates []uint64
	if bz.relocatable && bz.prefAddress >= HighMemStart && bz.prefAddress%bz.kernelAlignment == 0 {
		candidates = append(candidates, bz.prefAddress)
	}
	candidates = append(candidates, HighMemStart)

	var lastErr error
	for _, load := range candidates {
		fp, err := bz.footprint(load)
		if err == nil && !inRAM(ram, fp.GuestAddr, fp.Size) {
			err = fmt.Errorf("bzImage loaded at %#x needs RAM at [%#x, %#x) (init_size %#x): %w", load, fp.GuestAddr, fp.End(), bz.initSize, ErrNoRoom)
		}
		if err == nil && fp.End() > IdentityMapSize {
			err = fmt.Errorf("bzImage loaded at %#x reaches %#x, past the %#x bytes the boot page tables map: %w", load, fp.End(), IdentityMapSize, ErrNoRoom)
		}
		if err != nil {
			lastErr = err
			continue
		}
		bz.loadAddr = load
		k.footprint = fp
		k.entry = load + bz64BitEntryOffset
		k.segments = []segment{{addr: load, data: bz.protected, memSize: uint64(len(bz.protected))}}
		return nil
	}
	return lastErr
}

// footprint is the memory a bzImage loaded at load occupies until it has
// read its memory map.
func (bz *bzImage) footprint(load uint64) (Region, error) {
	run := bz.prefAddress
	if bz.relocatable {
		aligned, ok := alignUp(load, bz.kernelAlignment)
		if !ok {
			return Region{}, fmt.Errorf("bzImage: load address %#x overflows when aligned: %w", load, ErrNoRoom)
		}
		run = max(aligned, bz.prefAddress)
	}
	imageEnd, c1 := bits.Add64(load, uint64(len(bz.protected)), 0)
	runEnd, c2 := bits.Add64(run, bz.initSize, 0)
	if c1 != 0 || c2 != 0 {
		return Region{}, fmt.Errorf("bzImage: pref_address %#x + init_size %#x overflows: %w", bz.prefAddress, bz.initSize, ErrCorruptKernel)
	}
	start := min(load, run)
	if start < HighMemStart {
		return Region{}, fmt.Errorf("bzImage runs at %#x, inside the boot data below %#x: %w", start, HighMemStart, ErrNoRoom)
	}
	return Region{GuestAddr: start, Size: max(imageEnd, runEnd) - start}, nil
}
