package boot

import "fmt"

// fourGiB is where 32-bit boot_params fields stop reaching.
const fourGiB uint64 = 1 << 32

// placeInitrd finds the highest page-aligned spot for an initrd of size
// bytes in RAM at or above 1 MiB that the kernel accepts and that does not
// overlap the kernel. Below 4 GiB it must end by the kernel's initrd limit
// (initrd_addr_max + 1); above 4 GiB is used only if nothing fits below and
// the kernel allows it (XLF_CAN_BE_LOADED_ABOVE_4G).
func placeInitrd(size uint64, e820 []E820Entry, k *kernelImage) (Region, error) {
	if size == 0 {
		return Region{}, nil
	}
	if addr, ok := highestFit(size, e820, k.footprint, HighMemStart, min(k.initrdLimit, fourGiB)); ok {
		return Region{GuestAddr: addr, Size: size}, nil
	}
	if k.initrdAbove4G {
		if addr, ok := highestFit(size, e820, k.footprint, fourGiB, ^uint64(0)); ok {
			return Region{GuestAddr: addr, Size: size}, nil
		}
	}
	where := fmt.Sprintf("below %#x", k.initrdLimit)
	if k.initrdAbove4G {
		where += " or above 4 GiB"
	}
	return Region{}, fmt.Errorf("%d-byte initrd: no free RAM %s outside the kernel at [%#x, %#x): %w",
		size, where, k.footprint.GuestAddr, k.footprint.End(), ErrInitrdTooLarge)
}

// highestFit returns the highest page-aligned address a in usable RAM with
// [a, a+size) inside [lo, hi) and clear of avoid.
func highestFit(size uint64, e820 []E820Entry, avoid Region, lo, hi uint64) (uint64, bool) {
	best, found := uint64(0), false
	for _, e := range e820 {
		if e.Type != E820RAM {
			continue
		}
		start, end := max(e.Addr, lo), min(e.End(), hi)
		if start >= end {
			continue
		}
		// The free parts of [start, end): above and below the kernel.
		pieces := [][2]uint64{{start, end}}
		if avoid.overlaps(start, end-start) {
			pieces = [][2]uint64{{max(start, avoid.End()), end}, {start, min(end, avoid.GuestAddr)}}
		}
		for _, p := range pieces {
			if p[0] >= p[1] || p[1]-p[0] < size {
				continue
			}
			a := alignDown(p[1]-size, pageSize)
			if a >= p[0] && (!found || a > best) {
				best, found = a, true
			}
		}
	}
	return best, found
}
