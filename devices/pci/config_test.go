package pci

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHeaderFieldsAreReadOnly(t *testing.T) {
	cfg := newTestDevice(t, 0x1042).cfg
	for _, tc := range []struct {
		name string
		reg  int
		n    int
		want uint32
	}{
		{"vendor", RegVendorID, 2, 0x1af4},
		{"device", RegDeviceID, 2, 0x1042},
		{"revision", RegRevision, 1, 1},
		{"class", RegClass, 1, 0x00},
		{"subclass", RegClass + 1, 1, 0x00},
		{"base class", RegClass + 2, 1, 0xff},
		{"header type", RegHeaderType, 1, 0},
		{"subsystem vendor", RegSubsystemVendorID, 2, 0x1af4},
		{"subsystem", RegSubsystemID, 2, 0x1100},
		{"ROM BAR", RegROM, 4, 0},
		{"interrupt pin", RegInterruptPin, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, cfg.Write(tc.reg, leBytes(0xffffffff, tc.n)))
			data := make([]byte, tc.n)
			require.NoError(t, cfg.Read(tc.reg, data))
			assert.Equal(t, tc.want, leValue(data))
		})
	}
}

func TestWritableHeaderFields(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reg   int
		n     int
		write uint32
		want  uint32
	}{
		{"command keeps decode and bus master bits", RegCommand, 2, 0xffff,
			uint32(CommandIO | CommandMemory | CommandBusMaster | CommandParity | CommandSERR | CommandINTxDisable)},
		{"cache line size", RegCacheLineSize, 1, 0x10, 0x10},
		{"latency timer is read-only", RegLatencyTimer, 1, 0x40, 0},
		{"interrupt line", RegInterruptLine, 1, 0x0b, 0x0b},
		{"status ignores writes of 0", RegStatus, 2, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newTestDevice(t, 0x1042).cfg
			require.NoError(t, cfg.Write(tc.reg, leBytes(tc.write, tc.n)))
			data := make([]byte, tc.n)
			require.NoError(t, cfg.Read(tc.reg, data))
			assert.Equal(t, tc.want, leValue(data))
		})
	}
}

func TestCommandDecodeBitsFollowBARs(t *testing.T) {
	cfg := NewConfig(Header{VendorID: 1})
	require.NoError(t, cfg.Write(RegCommand, leBytes(0xffff, 2)))
	assert.Zero(t, cfg.Command()&(CommandIO|CommandMemory), "no BARs: nothing to decode")
	require.NoError(t, cfg.AddBAR(1, BAR{Kind: BARMem32, Size: 0x100}))
	require.NoError(t, cfg.Write(RegCommand, leBytes(0xffff, 2)))
	assert.Equal(t, CommandMemory, cfg.Command()&(CommandIO|CommandMemory))
}

func TestStatusErrorBitsAreWriteOneToClear(t *testing.T) {
	cfg := NewConfig(Header{VendorID: 1})
	_, err := cfg.AddCapability(CapVendor, []byte{2, 0})
	require.NoError(t, err)
	require.NoError(t, cfg.Put(RegStatus, leBytes(uint32(StatusCapList)|1<<13|1<<14, 2)))
	require.NoError(t, cfg.Write(RegStatus, leBytes(1<<13|uint32(StatusCapList), 2)))
	assert.Equal(t, StatusCapList|1<<14, cfg.Uint16(RegStatus), "bit 13 cleared, bit 14 kept, cap list read-only")
}

// TestBARSizing writes all-ones to each BAR register the way an OS sizes
// a BAR and checks the size mask and flag bits that read back.
func TestBARSizing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bar      BAR
		wantLow  uint32
		wantHigh uint32 // the upper register of a 64-bit BAR
	}{
		{"mem32 4K", BAR{Kind: BARMem32, Size: 0x1000}, 0xfffff000, 0},
		{"mem32 32K prefetchable", BAR{Kind: BARMem32, Size: 0x8000, Prefetchable: true}, 0xffff8008, 0},
		{"mem64 1M", BAR{Kind: BARMem64, Size: 0x100000}, 0xfff00004, 0xffffffff},
		{"mem64 8G prefetchable", BAR{Kind: BARMem64, Size: 8 << 30, Prefetchable: true}, 0x0000000c, 0xfffffffe},
		{"io 32", BAR{Kind: BARIO, Size: 0x20}, 0xffffffe1, 0},
		{"mem32 16 bytes", BAR{Kind: BARMem32, Size: 16}, 0xfffffff0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig(Header{VendorID: 1})
			require.NoError(t, cfg.AddBAR(2, tc.bar))
			require.NoError(t, cfg.Write(RegBAR0+8, leBytes(0xffffffff, 4)))
			assert.Equal(t, tc.wantLow, cfg.Uint32(RegBAR0+8))
			require.NoError(t, cfg.Write(RegBAR0+12, leBytes(0xffffffff, 4)))
			assert.Equal(t, tc.wantHigh, cfg.Uint32(RegBAR0+12))
			// Restoring an aligned address keeps the flags.
			require.NoError(t, cfg.Write(RegBAR0+8, leBytes(0, 4)))
			require.NoError(t, cfg.Write(RegBAR0+12, leBytes(0, 4)))
			require.NoError(t, cfg.SetBARAddress(2, 0))
			flags := tc.wantLow & 0xf
			if tc.bar.Kind == BARIO {
				flags &= 0x3
			}
			assert.Equal(t, flags, cfg.Uint32(RegBAR0+8), "only the flag bits remain")
		})
	}
}

func TestBARAddress(t *testing.T) {
	cfg := NewConfig(Header{VendorID: 1})
	require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem64, Size: 0x4000, Prefetchable: true}))
	require.NoError(t, cfg.AddBAR(2, BAR{Kind: BARIO, Size: 0x10}))
	require.NoError(t, cfg.Write(RegBAR0, leBytes(0xdead_4000, 4)))
	require.NoError(t, cfg.Write(RegBAR0+4, leBytes(0x12, 4)))
	assert.Equal(t, uint64(0x12_dead_4000), cfg.BARAddress(0))
	require.NoError(t, cfg.Write(RegBAR0+8, leBytes(0xc010, 4)))
	assert.Equal(t, uint64(0xc010), cfg.BARAddress(2))
	assert.Equal(t, uint32(0xc011), cfg.Uint32(RegBAR0+8), "I/O space indicator stays")
	assert.Zero(t, cfg.BARAddress(1), "upper half of a 64-bit BAR is no BAR")
	_, ok := cfg.BAR(1)
	assert.False(t, ok)
	require.NoError(t, cfg.SetBARAddress(0, 0x1_0000_0000))
	assert.Equal(t, uint64(0x1_0000_0000), cfg.BARAddress(0))
	assert.Equal(t, uint32(0xc), cfg.Uint32(RegBAR0), "64-bit prefetchable flags kept")
}

func TestAddBARRejectsBadLayouts(t *testing.T) {
	for _, tc := range []struct {
		name string
		i    int
		bar  BAR
	}{
		{"index past the header", 6, BAR{Kind: BARMem32, Size: 0x1000}},
		{"negative index", -1, BAR{Kind: BARMem32, Size: 0x1000}},
		{"64-bit in the last register", 5, BAR{Kind: BARMem64, Size: 0x1000}},
		{"size not a power of two", 0, BAR{Kind: BARMem32, Size: 0x3000}},
		{"memory smaller than 16", 0, BAR{Kind: BARMem32, Size: 8}},
		{"I/O larger than 256", 0, BAR{Kind: BARIO, Size: 0x200}},
		{"prefetchable I/O", 0, BAR{Kind: BARIO, Size: 0x10, Prefetchable: true}},
		{"no kind", 0, BAR{Size: 0x1000}},
		{"mem32 of 4G", 0, BAR{Kind: BARMem32, Size: 1 << 32}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig(Header{VendorID: 1})
			assert.ErrorIs(t, cfg.AddBAR(tc.i, tc.bar), ErrLayout)
		})
	}
	cfg := NewConfig(Header{VendorID: 1})
	require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem64, Size: 0x1000}))
	assert.ErrorIs(t, cfg.AddBAR(1, BAR{Kind: BARMem32, Size: 0x1000}), ErrLayout, "upper half of BAR 0")
	assert.ErrorIs(t, cfg.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000}), ErrLayout, "taken")
	require.NoError(t, cfg.AddBAR(3, BAR{Kind: BARMem32, Size: 0x1000}))
	assert.ErrorIs(t, cfg.AddBAR(2, BAR{Kind: BARMem64, Size: 0x1000}), ErrLayout, "its upper half is BAR 3")
	assert.ErrorIs(t, cfg.SetBARAddress(3, 0x1800), ErrLayout, "misaligned")
	assert.ErrorIs(t, cfg.SetBARAddress(5, 0x1000), ErrLayout, "not declared")
}

func TestCapabilityList(t *testing.T) {
	cfg := NewConfig(Header{VendorID: 1})
	assert.Zero(t, cfg.Uint16(RegStatus)&StatusCapList)
	a, err := cfg.AddCapability(CapVendor, []byte{3, 0xaa})
	require.NoError(t, err)
	b, err := cfg.AddCapability(CapMSIX, make([]byte, 10))
	require.NoError(t, err)
	c, err := cfg.AddCapability(CapVendor, []byte{3})
	require.NoError(t, err)
	assert.NotZero(t, cfg.Uint16(RegStatus)&StatusCapList)

	// Walk the list as an OS does.
	var ids []uint8
	var offs []int
	for off := int(cfg.Bytes(RegCapabilities, 1)[0]); off != 0; off = int(cfg.Bytes(off+1, 1)[0]) {
		require.Zero(t, off%4, "dword aligned")
		require.GreaterOrEqual(t, off, 0x40)
		ids = append(ids, cfg.Bytes(off, 1)[0])
		offs = append(offs, off)
	}
	assert.Equal(t, []uint8{CapVendor, CapMSIX, CapVendor}, ids)
	assert.Equal(t, []int{a, b, c}, offs)
	assert.Equal(t, []byte{3, 0xaa}, cfg.Bytes(a+2, 2))

	// Read-only unless made writable.
	require.NoError(t, cfg.Write(a+2, []byte{0x55}))
	assert.Equal(t, byte(3), cfg.Bytes(a+2, 1)[0])
	require.NoError(t, cfg.SetWritable(a+3, []byte{0x0f}))
	require.NoError(t, cfg.Write(a+2, []byte{0x55, 0x55}))
	assert.Equal(t, []byte{3, 0xa5}, cfg.Bytes(a+2, 2))

	// The first 256 bytes run out.
	_, err = cfg.AddCapability(CapVendor, make([]byte, 200))
	assert.ErrorIs(t, err, ErrLayout)
	assert.ErrorIs(t, cfg.SetWritable(250, make([]byte, 10)), ErrLayout)
}

func TestConfigAccessRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset int
		n      int
		ok     bool
	}{
		{"byte", 3, 1, true},
		{"word in dword", 2, 2, true},
		{"word at byte 1", 1, 2, true},
		{"dword", 0x10, 4, true},
		{"word crossing a dword", 3, 2, false},
		{"unaligned dword", 2, 4, false},
		{"3 bytes", 0, 3, false},
		{"8 bytes", 0, 8, false},
		{"extended space of a conventional function", 0x100, 4, true},
		{"past 4 KiB", 0x1000, 4, false},
		{"negative", -4, 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig(Header{VendorID: 0x1234, DeviceID: 0x5678})
			data := make([]byte, tc.n)
			err := cfg.Read(tc.offset, data)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrBadAccess)
			}
			assert.ErrorIs(t, cfg.Write(tc.offset, data), map[bool]error{true: nil, false: ErrBadAccess}[tc.ok])
		})
	}
	cfg := NewConfig(Header{VendorID: 0x1234, DeviceID: 0x5678, Extended: true})
	assert.Equal(t, ExtendedConfigSize, cfg.Size())
	data := make([]byte, 4)
	require.NoError(t, cfg.Read(0, data))
	assert.Equal(t, uint32(0x56781234), binary.LittleEndian.Uint32(data))
}
