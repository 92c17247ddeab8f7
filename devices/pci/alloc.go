package pci

import (
	"fmt"
	"sort"
)

// Range is [Base, Base+Size).
type Range struct{ Base, Size uint64 }

// End is the first address past r.
func (r Range) End() uint64 { return r.Base + r.Size }

// Allocator hands out naturally aligned blocks of an address window
// ([start, end)), for assigning BARs before the guest runs. It is not safe
// for concurrent use (the VMM builds a machine on one goroutine).
type Allocator struct {
	start, end uint64
	used       []Range // sorted by Base, disjoint
}

// NewAllocator makes an allocator for [start, end).
func NewAllocator(start, end uint64) (*Allocator, error) {
	if start >= end {
		return nil, fmt.Errorf("window [%#x, %#x): %w", start, end, ErrLayout)
	}
	return &Allocator{start: start, end: end}, nil
}

// Reserve takes [base, base+size) out of the window (another device's
// range, ECAM). Parts outside the window are ignored; reserving a range
// twice is fine.
func (a *Allocator) Reserve(base, size uint64) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("reserve [%#x, +%#x): %w", base, size, ErrLayout)
	}
	lo, hi := max(base, a.start), min(base+size, a.end)
	if lo >= hi {
		return nil
	}
	a.insert(Range{Base: lo, Size: hi - lo})
	return nil
}

// insert adds r and merges it with the ranges it touches.
func (a *Allocator) insert(r Range) {
	var out []Range
	for _, u := range a.used {
		if u.End() < r.Base || r.End() < u.Base {
			out = append(out, u)
			continue
		}
		lo, hi := min(u.Base, r.Base), max(u.End(), r.End())
		r = Range{Base: lo, Size: hi - lo}
	}
	out = append(out, r)
	sort.Slice(out, func(i, j int) bool { return out[i].Base < out[j].Base })
	a.used = out
}

// Alloc returns the lowest free block of size bytes aligned to align (a
// power of two) and marks it used.
func (a *Allocator) Alloc(size, align uint64) (uint64, error) {
	if size == 0 || align == 0 || align&(align-1) != 0 {
		return 0, fmt.Errorf("alloc %#x bytes aligned %#x: %w", size, align, ErrLayout)
	}
	cand, ok := alignUp(a.start, align)
	for _, u := range a.used {
		if !ok || (cand+size >= cand && cand+size <= u.Base) {
			break
		}
		if u.End() > cand {
			cand, ok = alignUp(u.End(), align)
		}
	}
	if !ok || cand+size < cand || cand+size > a.end {
		return 0, fmt.Errorf("%#x bytes aligned %#x in [%#x, %#x): %w", size, align, a.start, a.end, ErrNoSpace)
	}
	a.insert(Range{Base: cand, Size: size})
	return cand, nil
}

// alignUp rounds v up to a multiple of align (a power of two); ok is false
// when that overflows.
func alignUp(v, align uint64) (uint64, bool) {
	r := (v + align - 1) &^ (align - 1)
	return r, r >= v
}
