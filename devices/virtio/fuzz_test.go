package virtio

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// Fuzz layout: 4 KiB of guest memory at fuzzBase holding a ring of up to 32
// entries and the buffers; the fuzzer controls every byte of it.
const (
	fuzzBase    = 0x1000
	fuzzMemSize = 0x1000
	fuzzDesc    = fuzzBase
	fuzzAvail   = fuzzBase + 0x200
	fuzzUsed    = fuzzBase + 0x300
	fuzzData    = fuzzBase + 0x500
)

// fuzzSeed builds an input: control bytes (ring size exponent, features,
// starting index) followed by a memory image edited by build.
func fuzzSeed(sizeExp, features byte, start uint16, build func(mem []byte)) []byte {
	mem := make([]byte, fuzzMemSize)
	build(mem)
	in := []byte{sizeExp, features, byte(start), byte(start >> 8)}
	return append(in, mem...)
}

func seedDesc(mem []byte, table uint64, i int, addr uint64, n uint32, flags, next uint16) {
	b := mem[table-fuzzBase+uint64(i)*descSize:]
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func seedAvail(mem []byte, size int, start uint16, heads ...uint16) {
	for i, h := range heads {
		slot := (int(start) + i) % size
		binary.LittleEndian.PutUint16(mem[fuzzAvail-fuzzBase+4+2*slot:], h)
	}
	binary.LittleEndian.PutUint16(mem[fuzzAvail-fuzzBase+2:], start+uint16(len(heads)))
	binary.LittleEndian.PutUint16(mem[fuzzUsed-fuzzBase+2:], start)
}

// FuzzQueue serves fuzzer-built rings: whatever the memory holds, Next,
// Complete, NeedsInterrupt and SetNotify return (errors are fine), never
// panic, and every error is ErrBadChain or ErrBadRing.
func FuzzQueue(f *testing.F) {
	const ind, evt = 1, 2
	f.Add(fuzzSeed(3, 0, 0, func(mem []byte) {
		seedDesc(mem, fuzzDesc, 0, fuzzData, 16, descFNext, 1)
		seedDesc(mem, fuzzDesc, 1, fuzzData+0x100, 64, descFWrite, 0)
		seedDesc(mem, fuzzDesc, 2, fuzzData+0x200, 8, 0, 0)
		seedAvail(mem, 8, 0, 0, 2, 0)
	}))
	f.Add(fuzzSeed(2, ind|evt, 0xfffe, func(mem []byte) {
		const table = fuzzData + 0x400
		seedDesc(mem, table, 0, fuzzData, 16, descFNext, 1)
		seedDesc(mem, table, 1, fuzzData+0x100, 512, descFWrite|descFNext, 2)
		seedDesc(mem, table, 2, fuzzData+0x300, 1, descFWrite, 0)
		seedDesc(mem, fuzzDesc, 3, table, 3*descSize, descFIndir, 0)
		seedDesc(mem, fuzzDesc, 1, fuzzData, 4, 0, 0)
		seedAvail(mem, 4, 0xfffe, 3, 1, 3)
	}))
	f.Add(fuzzSeed(3, ind, 0, func(mem []byte) { // loops
		seedDesc(mem, fuzzDesc, 0, fuzzData, 1, descFNext, 1)
		seedDesc(mem, fuzzDesc, 1, fuzzData, 1, descFNext, 0)
		const table = fuzzData + 0x400
		seedDesc(mem, table, 0, fuzzData, 1, descFNext, 0)
		seedDesc(mem, fuzzDesc, 2, table, descSize, descFIndir, 0)
		seedAvail(mem, 8, 0, 0, 2)
	}))
	f.Add(fuzzSeed(3, ind, 0, func(mem []byte) { // nested indirect, bad sizes
		const table = fuzzData + 0x400
		seedDesc(mem, table, 0, table, descSize, descFIndir, 0)
		seedDesc(mem, fuzzDesc, 0, table, descSize, descFIndir, 0)
		seedDesc(mem, fuzzDesc, 1, table, 0, descFIndir, 0)
		seedDesc(mem, fuzzDesc, 2, table, 9, descFIndir, 0)
		seedDesc(mem, fuzzDesc, 3, 0xffff_ffff_ffff_fff0, 0x20, 0, 0)
		seedDesc(mem, fuzzDesc, 4, fuzzData, 4, descFWrite|descFNext, 5)
		seedDesc(mem, fuzzDesc, 5, fuzzData, 4, 0, 0)
		seedAvail(mem, 8, 0, 0, 1, 2, 3, 4, 7, 9)
	}))
	f.Add(fuzzSeed(5, evt, 7, func(mem []byte) { // too far ahead
		seedAvail(mem, 32, 7)
		binary.LittleEndian.PutUint16(mem[fuzzAvail-fuzzBase+2:], 7+33)
	}))
	f.Add([]byte{})
	f.Add([]byte{9, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, in []byte) {
		var ctl [4]byte
		copy(ctl[:], in)
		mem := &fakeMemory{base: fuzzBase, buf: make([]byte, fuzzMemSize)}
		if len(in) > len(ctl) {
			copy(mem.buf, in[len(ctl):])
		}
		// Sizes 1..32 are valid; 6 and 7 give sizes that do not fit the
		// layout's slots but are still checked by NewQueue (64 fits memory,
		// 128 overlaps the used ring, both legal for the queue).
		size := uint16(1) << (ctl[0] % 8)
		var features uint64
		if ctl[1]&1 != 0 {
			features |= FeatureRingIndirectDesc
		}
		if ctl[1]&2 != 0 {
			features |= FeatureRingEventIdx
		}
		start := binary.LittleEndian.Uint16(ctl[2:])
		cfg := QueueConfig{Size: size, DescAddr: fuzzDesc, AvailAddr: fuzzAvail, UsedAddr: fuzzUsed}
		q, err := NewQueue(mem, cfg, features, start)
		if err != nil {
			if !errors.Is(err, ErrBadRing) {
				t.Fatalf("NewQueue: unexpected error %v", err)
			}
			return
		}
		for i := 0; i < 2*int(size)+2; i++ {
			q.SetNotify(i%2 == 0)
			c, err := q.Next()
			if err != nil && !errors.Is(err, ErrBadChain) && !errors.Is(err, ErrBadRing) {
				t.Fatalf("Next: unexpected error %v", err)
			}
			if c == nil {
				if err == nil && q.HasAvailable() {
					t.Fatal("Next returned nothing while HasAvailable")
				}
				break
			}
			if err != nil && (len(c.Readable) != 0 || len(c.Writable) != 0) {
				t.Fatal("bad chain returned with buffers")
			}
			// Act as a device would, cheaply (a chain may name megabytes
			// through aliased buffers): read and write a little, skip the rest.
			rd := c.Reader()
			if rd.Remaining() != c.ReadableLen() {
				t.Fatal("reader does not cover the readable buffers")
			}
			if _, err := rd.Read(make([]byte, 64)); err != nil && err != io.EOF {
				t.Fatalf("read chain: %v", err)
			}
			w := c.Writer()
			_, _ = w.Write(make([]byte, 64))
			if err := w.Skip(w.Remaining()); err != nil {
				t.Fatalf("skip: %v", err)
			}
			if w.Written() != c.WritableLen() {
				t.Fatalf("wrote %d of %d writable bytes", w.Written(), c.WritableLen())
			}
			if err := q.Complete(c, uint32(w.Written())); err != nil {
				t.Fatalf("Complete(head %d): %v", c.Head, err)
			}
			q.NeedsInterrupt()
		}
	})
}
