package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeMemory is guest RAM as one byte slice at guest-physical base, checked
// the way a real GuestMemory must be (no overflow of gpa+n).
type fakeMemory struct {
	base uint64
	buf  []byte
}

var errOutside = errors.New("outside fake guest memory")

func (m *fakeMemory) Slice(gpa, n uint64) ([]byte, error) {
	size := uint64(len(m.buf))
	if gpa < m.base || gpa-m.base > size || n > size-(gpa-m.base) {
		return nil, fmt.Errorf("[%#x, +%#x): %w", gpa, n, errOutside)
	}
	off := gpa - m.base
	return m.buf[off : off+n : off+n], nil
}

// Layout of the test ring inside fakeMemory; addresses are guest-physical.
const (
	testBase     = 0x10000
	testDesc     = testBase          // 16 * 256 = 0x1000
	testAvail    = testBase + 0x1000 // 6 + 2*256
	testUsed     = testBase + 0x2000 // 6 + 8*256
	testData     = testBase + 0x3000 // buffers and indirect tables
	testMemSize  = 0x10000           // guest memory ends at testBase+testMemSize
	testMemLimit = testBase + testMemSize
)

// testRing plays the driver side of a split virtqueue over fakeMemory.
type testRing struct {
	t        *testing.T
	mem      *fakeMemory
	cfg      QueueConfig
	availIdx uint16
}

func newTestRing(t *testing.T, size uint16) *testRing {
	t.Helper()
	require.LessOrEqual(t, size, uint16(256), "test layout holds rings up to 256")
	return &testRing{
		t:   t,
		mem: &fakeMemory{base: testBase, buf: make([]byte, testMemSize)},
		cfg: QueueConfig{Size: size, DescAddr: testDesc, AvailAddr: testAvail, UsedAddr: testUsed},
	}
}

func (r *testRing) queue(features uint64) *Queue {
	r.t.Helper()
	q, err := NewQueue(r.mem, r.cfg, features, r.availIdx)
	require.NoError(r.t, err)
	return q
}

func (r *testRing) at(gpa uint64) []byte { return r.mem.buf[gpa-r.mem.base:] }

// putDesc writes descriptor i of the table at tableGPA.
func (r *testRing) putDesc(tableGPA uint64, i int, addr uint64, n uint32, flags, next uint16) {
	b := r.at(tableGPA + uint64(i)*descSize)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func (r *testRing) desc(i int, addr uint64, n uint32, flags, next uint16) {
	r.putDesc(r.cfg.DescAddr, i, addr, n, flags, next)
}

// push makes head available and publishes the new available index.
func (r *testRing) push(head uint16) {
	slot := uint64(r.availIdx % r.cfg.Size)
	binary.LittleEndian.PutUint16(r.at(r.cfg.AvailAddr+4+2*slot), head)
	r.availIdx++
	r.setAvailIdx(r.availIdx)
}

func (r *testRing) setAvailIdx(v uint16) { binary.LittleEndian.PutUint16(r.at(r.cfg.AvailAddr+2), v) }

func (r *testRing) setAvailFlags(v uint16) { binary.LittleEndian.PutUint16(r.at(r.cfg.AvailAddr), v) }

func (r *testRing) setUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(r.at(r.cfg.AvailAddr+4+2*uint64(r.cfg.Size)), v)
}

func (r *testRing) usedIdx() uint16 { return binary.LittleEndian.Uint16(r.at(r.cfg.UsedAddr + 2)) }

func (r *testRing) setUsedIdx(v uint16) { binary.LittleEndian.PutUint16(r.at(r.cfg.UsedAddr+2), v) }

func (r *testRing) usedFlags() uint16 { return binary.LittleEndian.Uint16(r.at(r.cfg.UsedAddr)) }

func (r *testRing) availEvent() uint16 {
	return binary.LittleEndian.Uint16(r.at(r.cfg.UsedAddr + 4 + usedElemSize*uint64(r.cfg.Size)))
}

// usedElem returns the (id, len) in used-ring slot idx%size.
func (r *testRing) usedElem(idx uint16) (uint32, uint32) {
	b := r.at(r.cfg.UsedAddr + 4 + usedElemSize*uint64(idx%r.cfg.Size))
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
}
