package boot

import (
	"bytes"
	"fmt"
)

// kernelImage is a parsed kernel: what to write where, how to enter it, and
// the limits it sets for the command line and the initrd.
type kernelImage struct {
	format Format
	// segments are written in order; for a bzImage there is one, whose
	// address is chosen by place.
	segments []segment
	entry    uint64
	// footprint is the memory the kernel owns at entry (set by place).
	footprint Region
	// cmdlineMax is the longest command line (without NUL) it accepts.
	cmdlineMax uint64
	// initrdLimit is the first address an initrd may not reach below
	// 4 GiB; initrdAbove4G allows RAM above 4 GiB as well.
	initrdLimit   uint64
	initrdAbove4G bool
	// bz is set for a bzImage.
	bz *bzImage
}

// segment is data to copy to guest address addr, followed by zeros up to
// memSize bytes (an ELF segment's .bss).
type segment struct {
	addr    uint64
	data    []byte
	memSize uint64
}

// parseKernel recognises the kernel format and parses its headers.
func parseKernel(data []byte) (*kernelImage, error) {
	switch {
	case len(data) >= len(elfMagic) && bytes.Equal(data[:len(elfMagic)], elfMagic):
		return parseELF(data)
	case len(data) >= bzHeaderMagicOff+4 && string(data[bzHeaderMagicOff:bzHeaderMagicOff+4]) == bzHeaderMagic:
		return parseBzImage(data)
	}
	return nil, fmt.Errorf("no bzImage header (\"HdrS\" at %#x) and no ELF magic in %d bytes: %w", bzHeaderMagicOff, len(data), ErrNotKernel)
}

// place fixes where the kernel goes in ram and checks that it fits there
// without touching the boot data below 1 MiB.
func (k *kernelImage) place(ram []Region) error {
	if k.bz != nil {
		return k.bz.place(k, ram)
	}
	return placeELF(k, ram)
}

// write copies the kernel's segments into guest memory.
func (k *kernelImage) write(mem Memory) error {
	for i, s := range k.segments {
		if err := mem.WriteAt(s.data, s.addr); err != nil {
			return fmt.Errorf("write kernel segment %d (%#x bytes at %#x): %w", i, len(s.data), s.addr, err)
		}
		if err := zeroFill(mem, s.addr+uint64(len(s.data)), s.memSize-uint64(len(s.data))); err != nil {
			return fmt.Errorf("clear kernel segment %d's tail: %w", i, err)
		}
	}
	return nil
}

// zeroFill writes n zero bytes at gpa, a chunk at a time so a large .bss
// does not need a buffer as large.
func zeroFill(mem Memory, gpa, n uint64) error {
	const chunk = 1 << 20
	if n == 0 {
		return nil
	}
	zeros := make([]byte, min(n, chunk))
	for n > 0 {
		c := min(n, chunk)
		if err := mem.WriteAt(zeros[:c], gpa); err != nil {
			return fmt.Errorf("zero %#x bytes at %#x: %w", c, gpa, err)
		}
		gpa += c
		n -= c
	}
	return nil
}

// inRAM reports whether [addr, addr+size) lies within a single RAM region.
func inRAM(ram []Region, addr, size uint64) bool {
	for _, r := range ram {
		if r.contains(addr, size) {
			return true
		}
	}
	return false
}
