package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingRouter keeps a log of what happens to its routes.
type recordingRouter struct {
	mu     sync.Mutex
	log    []string
	next   int
	failOn string // a log prefix to fail with
}

type recordingRoute struct {
	r   *recordingRouter
	id  int
	msg MSIMessage
}

var errInjected = errors.New("injected")

func (r *recordingRouter) record(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
	if r.failOn != "" && len(s) >= len(r.failOn) && s[:len(r.failOn)] == r.failOn {
		return errInjected
	}
	return nil
}

func (r *recordingRouter) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log
	r.log = nil
	return l
}

func (r *recordingRouter) NewMSIRoute(msg MSIMessage) (MSIRoute, error) {
	r.mu.Lock()
	id := r.next
	r.next++
	r.mu.Unlock()
	if err := r.record(fmt.Sprintf("new %d %#x/%#x", id, msg.Address, msg.Data)); err != nil {
		return nil, err
	}
	return &recordingRoute{r: r, id: id, msg: msg}, nil
}

func (rt *recordingRoute) Update(msg MSIMessage) error {
	rt.msg = msg
	return rt.r.record(fmt.Sprintf("update %d %#x/%#x", rt.id, msg.Address, msg.Data))
}

func (rt *recordingRoute) Trigger() error {
	return rt.r.record(fmt.Sprintf("irq %#x/%#x", rt.msg.Address, rt.msg.Data))
}

func (rt *recordingRoute) Close() error { return rt.r.record(fmt.Sprintf("close %d", rt.id)) }

// msixFixture is a config space with a 16 KiB BAR 0 holding a 4-vector
// table at 0x2000 and its PBA at 0x3000.
type msixFixture struct {
	cfg    *Config
	m      *MSIX
	router *recordingRouter
}

func newMSIXFixture(t *testing.T) *msixFixture {
	t.Helper()
	cfg := NewConfig(Header{VendorID: 1})
	require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem32, Size: 0x4000}))
	r := &recordingRouter{}
	m, err := NewMSIX(cfg, 4, BARLocation{0, 0x2000}, BARLocation{0, 0x3000}, r)
	require.NoError(t, err)
	return &msixFixture{cfg: cfg, m: m, router: r}
}

func (f *msixFixture) control(t *testing.T, v uint16) {
	t.Helper()
	off := f.m.CapabilityOffset() + msixCapControl
	require.NoError(t, f.cfg.Write(off, leBytes(uint32(v), 2)))
	require.NoError(t, f.m.ConfigWritten(off, 2))
}

func (f *msixFixture) program(t *testing.T, vec int, addr uint64, data uint32) {
	t.Helper()
	base := uint64(vec) * msixEntrySize
	require.NoError(t, f.m.WriteTable(base, leBytes(uint32(addr), 4)))
	require.NoError(t, f.m.WriteTable(base+4, leBytes(uint32(addr>>32), 4)))
	require.NoError(t, f.m.WriteTable(base+8, leBytes(data, 4)))
}

func (f *msixFixture) mask(t *testing.T, vec int, masked bool) {
	t.Helper()
	var v uint32
	if masked {
		v = 1
	}
	require.NoError(t, f.m.WriteTable(uint64(vec)*msixEntrySize+12, leBytes(v, 4)))
}

func (f *msixFixture) pba(t *testing.T) uint64 {
	t.Helper()
	data := make([]byte, 8)
	require.NoError(t, f.m.ReadPBA(0, data))
	return binary.LittleEndian.Uint64(data)
}

func TestMSIXCapabilityLayout(t *testing.T) {
	f := newMSIXFixture(t)
	off := f.m.CapabilityOffset()
	assert.Equal(t, CapMSIX, f.cfg.Bytes(off, 1)[0])
	assert.Equal(t, uint16(3), f.cfg.Uint16(off+2), "table size N-1, disabled, unmasked")
	assert.Equal(t, uint32(0x2000), f.cfg.Uint32(off+4), "table offset, BIR 0")
	assert.Equal(t, uint32(0x3000), f.cfg.Uint32(off+8), "PBA offset, BIR 0")
	assert.Equal(t, uint64(64), f.m.TableSize())
	assert.Equal(t, uint64(8), f.m.PBASize())

	// Only enable and function mask are writable.
	require.NoError(t, f.cfg.Write(off+2, leBytes(0xffff, 2)))
	assert.Equal(t, uint16(0xc003), f.cfg.Uint16(off+2))
	require.NoError(t, f.cfg.Write(off+4, leBytes(0xffffffff, 4)))
	assert.Equal(t, uint32(0x2000), f.cfg.Uint32(off+4))

	// Vectors start masked with a zero message.
	data := make([]byte, 16)
	require.NoError(t, f.m.ReadTable(16, data[:8]))
	require.NoError(t, f.m.ReadTable(24, data[8:]))
	assert.Equal(t, make([]byte, 12), data[:12])
	assert.Equal(t, uint32(1), binary.LittleEndian.Uint32(data[12:]))
}

func TestNewMSIXRejectsBadLayouts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		table, pba BARLocation
		router     MSIRouter
	}{
		{"no vectors", 0, BARLocation{0, 0}, BARLocation{0, 0x800}, &recordingRouter{}},
		{"too many vectors", MaxMSIXVectors + 1, BARLocation{0, 0}, BARLocation{0, 0x800}, &recordingRouter{}},
		{"no router", 1, BARLocation{0, 0}, BARLocation{0, 0x800}, nil},
		{"table in an undeclared BAR", 1, BARLocation{1, 0}, BARLocation{0, 0x800}, &recordingRouter{}},
		{"table in the I/O BAR", 1, BARLocation{2, 0}, BARLocation{0, 0x800}, &recordingRouter{}},
		{"table past the BAR", 4, BARLocation{0, 0xff8}, BARLocation{0, 0x800}, &recordingRouter{}},
		{"misaligned PBA", 1, BARLocation{0, 0}, BARLocation{0, 0x804}, &recordingRouter{}},
		{"overlapping", 4, BARLocation{0, 0}, BARLocation{0, 0x10}, &recordingRouter{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig(Header{VendorID: 1})
			require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000}))
			require.NoError(t, cfg.AddBAR(2, BAR{Kind: BARIO, Size: 0x100}))
			_, err := NewMSIX(cfg, tc.n, tc.table, tc.pba, tc.router)
			assert.ErrorIs(t, err, ErrLayout)
		})
	}
}

// TestMSIXDelivery walks the states Linux takes a vector through: enable
// with the function masked, program the entry, unmask the function, then
// unmask the vector when the driver requests the interrupt.
func TestMSIXDelivery(t *testing.T) {
	f := newMSIXFixture(t)
	r := f.router

	require.NoError(t, f.m.Notify(1))
	assert.Empty(t, r.take(), "MSI-X disabled: nothing raised")
	assert.Equal(t, uint64(1), f.m.Dropped())
	assert.Zero(t, f.pba(t), "and nothing pending")

	f.control(t, msixEnable|msixFunctionMask)
	assert.True(t, f.m.Enabled())
	f.program(t, 1, 0xfee0_0000, 0x41)
	f.control(t, msixEnable)
	assert.Empty(t, r.take(), "vector still masked: no route yet")

	require.NoError(t, f.m.Notify(1))
	assert.Equal(t, uint64(1<<1), f.pba(t), "masked vector: pending bit")
	f.mask(t, 1, false)
	assert.Equal(t, []string{"new 0 0xfee00000/0x41", "irq 0xfee00000/0x41"}, r.take(), "unmask routes and delivers the pending interrupt")
	assert.Zero(t, f.pba(t))

	require.NoError(t, f.m.Notify(1))
	assert.Equal(t, []string{"irq 0xfee00000/0x41"}, r.take())

	// The function mask holds back every vector.
	f.control(t, msixEnable|msixFunctionMask)
	require.NoError(t, f.m.Notify(1))
	assert.Empty(t, r.take())
	assert.Equal(t, uint64(1<<1), f.pba(t))
	f.control(t, msixEnable)
	assert.Equal(t, []string{"irq 0xfee00000/0x41"}, r.take())

	// Reprogrammed while masked: the route follows on unmask.
	f.mask(t, 1, true)
	f.program(t, 1, 0xfee0_1000, 0x42)
	assert.Empty(t, r.take())
	f.mask(t, 1, false)
	assert.Equal(t, []string{"update 0 0xfee01000/0x42"}, r.take())
	require.NoError(t, f.m.Notify(1))
	assert.Equal(t, []string{"irq 0xfee01000/0x42"}, r.take())

	// Reprogrammed while unmasked (undefined by the spec): delivery uses
	// the new message.
	f.program(t, 1, 0xfee0_2000, 0x43)
	require.NoError(t, f.m.Notify(1))
	assert.Equal(t, []string{"update 0 0xfee02000/0x43", "irq 0xfee02000/0x43"}, r.take())

	// Disabled again: dropped, not pending.
	f.control(t, msixFunctionMask)
	require.NoError(t, f.m.Notify(1))
	assert.Empty(t, r.take())
	assert.Equal(t, uint64(2), f.m.Dropped())

	assert.ErrorIs(t, f.m.Notify(4), ErrNoVector)
	assert.ErrorIs(t, f.m.Notify(-1), ErrNoVector)

	require.NoError(t, f.m.Close())
	assert.Equal(t, []string{"close 0"}, r.take())
	f.control(t, msixEnable)
	require.NoError(t, f.m.Notify(1))
	assert.Empty(t, r.take(), "nothing after Close")
}

func TestMSIXTableAccess(t *testing.T) {
	f := newMSIXFixture(t)
	// A qword write fills address low and high at once.
	require.NoError(t, f.m.WriteTable(0, []byte{0x03, 0, 0xe0, 0xfe, 1, 0, 0, 0}))
	data := make([]byte, 8)
	require.NoError(t, f.m.ReadTable(0, data))
	assert.Equal(t, uint64(0x1_fee0_0000), binary.LittleEndian.Uint64(data), "low two address bits are 0")
	// Reserved vector-control bits read as 0.
	require.NoError(t, f.m.WriteTable(12, leBytes(0xffff_fffe, 4)))
	require.NoError(t, f.m.ReadTable(12, data[:4]))
	assert.Equal(t, uint32(0), binary.LittleEndian.Uint32(data))

	for _, tc := range []struct {
		name   string
		offset uint64
		n      int
	}{
		{"byte", 0, 1},
		{"word", 0, 2},
		{"misaligned dword", 2, 4},
		{"misaligned qword", 4, 8},
		{"past the table", 64, 4},
		{"qword over the end", 60, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.n)
			assert.ErrorIs(t, f.m.ReadTable(tc.offset, data), ErrBadAccess)
			assert.ErrorIs(t, f.m.WriteTable(tc.offset, data), ErrBadAccess)
		})
	}
	assert.ErrorIs(t, f.m.ReadPBA(8, make([]byte, 4)), ErrBadAccess)
	require.NoError(t, f.m.WritePBA(0, leBytes(0xffffffff, 4)), "read-only: ignored")
	assert.Zero(t, f.pba(t))
}

func TestMSIXRouterErrorsReachTheCaller(t *testing.T) {
	f := newMSIXFixture(t)
	f.router.failOn = "new"
	f.control(t, msixEnable)
	f.program(t, 0, 0xfee0_0000, 0x30)
	err := f.m.WriteTable(12, leBytes(0, 4))
	assert.ErrorIs(t, err, errInjected)
	err = f.m.Notify(0)
	assert.ErrorIs(t, err, errInjected)
	f.router.failOn = ""
	require.NoError(t, f.m.Notify(0))
	assert.Contains(t, f.router.take(), "irq 0xfee00000/0x30")
}
