package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Shared ring fields and how they are accessed.
//
// The driver (the guest, on other CPUs) and the device share five 16-bit
// fields of a split ring: the available ring's flags, idx and used_event,
// written by the driver, and the used ring's flags, idx and avail_event,
// written by the device. A plain Go load or store of them may be merged,
// repeated, hoisted out of a loop or moved past other accesses by the
// compiler, so every access to them here is atomic.
//
// sync/atomic has no 16-bit operations. Each field is accessed through the
// naturally aligned 4-byte word that contains it: the spec aligns the
// available ring to 2 and the used ring to 4 bytes, so a field never
// straddles two words. A load is a 32-bit atomic load of the word and a
// shift; a store must leave the word's other half as it is, because that
// half can belong to the driver (the bytes before a 2-aligned available
// ring, the two after avail_event: another queue's available flags may
// sit there), so it is a compare-and-swap loop on the word. The loop only
// repeats when the driver wrote the other half in between; a driver that
// keeps doing so delays its own device, nothing else. The used ring's
// flags and idx share the word at the used ring's start and the device is
// their only writer (the driver must not write the used ring), so the
// queue stores that word whole, with no loop (storeHeader).
//
// To keep those words inside checked guest memory, NewQueue asks the
// GuestMemory for the ring areas rounded out to whole words (ringWords):
// the 2 bytes before a 2-aligned available ring and the 2 after the end
// of a ring that ends mid-word. With the spec's alignments (and power-of-
// two sizes) a ring that lies in a region with 4-aligned bounds has its
// words in it too; both GuestMemory implementations map guest RAM in page
// aligned regions, so no legal ring is refused for this. The words are
// the real shared mapping (the memfd both wisp and the guest or QEMU
// map), not a copy, and their host addresses must be 4-aligned for the
// atomics: a guest-physical address aligned as the spec demands is, since
// regions are mapped at page-aligned host addresses; a vhost-user memory
// table whose regions shift the alignment is refused with ErrBadRing
// rather than accessed unaligned.
//
// Go's atomics are sequentially consistent: on amd64 a load is a MOV
// (x86 never reorders loads with loads, so it has acquire semantics) and a
// store or compare-and-swap is a locked instruction (a full barrier); the
// compiler moves no memory access across either. What that buys, and
// where Queue adds a full fence on top, is described at Queue.fence.

// ringField is one 16-bit field of a ring shared with the driver.
type ringField struct {
	word *uint32 // the aligned 4-byte word holding the field, in guest memory
	off  int     // the field's byte offset in the word: 0 or 2
}

// ringWords is a ring area rounded out to whole 4-byte words, and where the
// ring itself starts in it.
type ringWords struct {
	words []byte // 4-aligned host address, a multiple of 4 bytes long
	start uint64 // offset of the ring's first byte in words
}

// mapRingWords asks mem for the n bytes of ring at gpa rounded out to whole
// words. gpa must be 2-aligned (NewQueue checks the spec's alignment
// first).
func mapRingWords(mem GuestMemory, gpa, n uint64) (ringWords, error) {
	start := gpa % 4
	words, err := mem.Slice(gpa-start, (start+n+3)&^3)
	if err != nil {
		return ringWords{}, err
	}
	if len(words) == 0 || uintptr(unsafe.Pointer(&words[0]))%4 != 0 {
		return ringWords{}, fmt.Errorf("guest address %#x is not 4-aligned in wisp's mapping of guest memory", gpa-start)
	}
	return ringWords{words: words, start: start}, nil
}

// ring returns the ring's own bytes, for the plain accesses to its entries.
func (r ringWords) ring(n uint64) []byte { return r.words[r.start : r.start+n : r.start+n] }

// field returns the shared field at byte off of the ring. off must be even
// and the field inside the ring (NewQueue's layout guarantees both).
func (r ringWords) field(off uint64) ringField {
	at := r.start + off
	w := at &^ 3
	// words[w:w+4] is in bounds and 4-aligned (mapRingWords), which is what
	// makes the conversion valid.
	return ringField{word: (*uint32)(unsafe.Pointer(&r.words[w : w+4][0])), off: int(at - w)}
}

// load reads the field atomically.
func (f ringField) load() uint16 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32(f.word))
	return binary.LittleEndian.Uint16(b[f.off:]) // rings are little-endian (virtio 1.x)
}

// store writes the field atomically, leaving the other half of its word
// as the driver last wrote it.
func (f ringField) store(v uint16) {
	for {
		old := atomic.LoadUint32(f.word)
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], old)
		binary.LittleEndian.PutUint16(b[f.off:], v)
		if atomic.CompareAndSwapUint32(f.word, old, binary.NativeEndian.Uint32(b[:])) {
			return
		}
	}
}

// loadHeader reads a ring's flags and idx (its first word) at once.
func (f ringField) loadHeader() (flags, idx uint16) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32(f.word))
	return binary.LittleEndian.Uint16(b[0:]), binary.LittleEndian.Uint16(b[2:])
}

// storeHeader writes a ring's flags and idx at once; f must be the field at
// offset 0 of a 4-aligned ring (the used ring).
func (f ringField) storeHeader(flags, idx uint16) {
	var b [4]byte
	binary.LittleEndian.PutUint16(b[0:], flags)
	binary.LittleEndian.PutUint16(b[2:], idx)
	atomic.StoreUint32(f.word, binary.NativeEndian.Uint32(b[:]))
}
