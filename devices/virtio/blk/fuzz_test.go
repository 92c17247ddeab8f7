package blk

import (
	"encoding/binary"
	"testing"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// fuzzChain builds a chain from fuzzer input: ctl[0] picks read-only and how
// many pieces the readable bytes are cut into, ctl[1:3] the writable size,
// ctl[3] how many pieces the writable bytes are cut into.
func fuzzChain(in []byte) (c *virtio.Chain, readOnly bool) {
	var ctl [4]byte
	copy(ctl[:], in)
	body := []byte(nil)
	if len(in) > len(ctl) {
		body = in[len(ctl):]
	}
	readOnly = ctl[0]&1 != 0
	c = &virtio.Chain{
		Readable: split(body, int(ctl[0]>>1)%5+1),
		Writable: split(make([]byte, binary.LittleEndian.Uint16(ctl[1:])%(16<<10)), int(ctl[3])%4+1),
	}
	return c, readOnly
}

// split cuts b into up to n non-empty pieces of unequal sizes.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for i := n; i > 1 && len(b) > 1; i-- {
		cut := len(b) / (i + 1)
		if cut == 0 {
			cut = 1
		}
		out = append(out, b[:cut])
		b = b[cut:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

func fuzzRequest(typ uint32, sector uint64, data []byte) []byte {
	h := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return append(h, data...)
}

// FuzzRequest feeds arbitrary requests to a device over a 64 KiB image:
// whatever the header, data and buffer layout, handle returns with a valid
// status byte and never claims more bytes than the chain can hold.
func FuzzRequest(f *testing.F) {
	const sectors = 128
	seed := func(ro bool, pieces byte, writable uint16, wpieces byte, req []byte) {
		ctl := []byte{pieces << 1, byte(writable), byte(writable >> 8), wpieces}
		if ro {
			ctl[0] |= 1
		}
		f.Add(append(ctl, req...))
	}
	seed(false, 1, 1, 0, fuzzRequest(typeOut, 3, pattern(2*SectorSize, 1)))
	seed(false, 3, 2*SectorSize+1, 2, fuzzRequest(typeIn, 3, nil))
	seed(false, 0, SectorSize+1, 0, fuzzRequest(typeIn, sectors-1, nil))
	seed(false, 0, SectorSize+1, 0, fuzzRequest(typeIn, sectors, nil))
	seed(false, 0, 1, 0, fuzzRequest(typeFlush, 0, nil))
	seed(false, 0, 21, 1, fuzzRequest(typeGetID, 0, nil))
	seed(false, 2, 1, 0, fuzzRequest(typeDiscard, 0, zeroSegs(zeroSeg{off: 8, n: 16}, zeroSeg{off: 64, n: 8})))
	seed(false, 1, 1, 0, fuzzRequest(typeWriteZeroes, 0, zeroSegs(zeroSeg{off: 0, n: 16, unmap: true})))
	seed(false, 1, 1, 0, fuzzRequest(typeWriteZeroes, 0, zeroSegs(zeroSeg{off: sectors - 1, n: 2})))
	seed(true, 1, 1, 0, fuzzRequest(typeOut, 0, pattern(SectorSize, 2)))
	seed(true, 0, 1, 0, fuzzRequest(typeDiscard, 0, zeroSegs(zeroSeg{off: 0, n: 8})))
	seed(false, 0, 0, 0, fuzzRequest(typeIn, 0, nil))
	seed(false, 0, 1, 0, fuzzRequest(typeIn, ^uint64(0), nil)[:10])
	seed(false, 0, 1, 0, fuzzRequest(0xdeadbeef, ^uint64(0), nil))

	dir := f.TempDir()
	open := func(name string, ro bool) *Device {
		path := dir + "/" + name
		if err := writeSparse(path, sectors*SectorSize); err != nil {
			f.Fatal(err)
		}
		d, err := Open(Options{Path: path, ReadOnly: ro, Serial: "fuzz"})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { d.Close() })
		return d
	}
	rw, ro := open("rw.img", false), open("ro.img", true)

	f.Fuzz(func(t *testing.T, in []byte) {
		c, readOnly := fuzzChain(in)
		d := rw
		if readOnly {
			d = ro
		}
		n, err := d.handle(c)
		if c.WritableLen() == 0 {
			if err == nil || n != 0 {
				t.Fatalf("request without a status byte: got %d, %v", n, err)
			}
			return
		}
		if uint64(n) > c.WritableLen() {
			t.Fatalf("claims %d bytes written of %d writable", n, c.WritableLen())
		}
		if s := status(c); s > statusUnsupp {
			t.Fatalf("status %d", s)
		}
	})
}
