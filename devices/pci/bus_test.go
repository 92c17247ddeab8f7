package pci

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices"
)

// accessor reads configuration space one way or the other.
type accessor struct {
	name  string
	read  func(t testing.TB, b *testBus, devfn uint8, reg, n int) uint32
	write func(t testing.TB, b *testBus, devfn uint8, reg, n int, v uint32) error
}

func accessors() []accessor {
	return []accessor{
		{"type1",
			func(t testing.TB, b *testBus, devfn uint8, reg, n int) uint32 { return b.type1Read(t, devfn, reg, n) },
			func(t testing.TB, b *testBus, devfn uint8, reg, n int, v uint32) error {
				return b.type1Write(t, devfn, reg, n, v)
			}},
		{"ECAM",
			func(t testing.TB, b *testBus, devfn uint8, reg, n int) uint32 { return b.ecamRead(t, devfn, reg, n) },
			func(t testing.TB, b *testBus, devfn uint8, reg, n int, v uint32) error {
				return b.ecamWrite(devfn, reg, n, v)
			}},
	}
}

func TestBusScan(t *testing.T) {
	for _, acc := range accessors() {
		t.Run(acc.name, func(t *testing.T) {
			b := newTestBus(t)
			slot, err := b.Add(newTestDevice(t, 0x1042))
			require.NoError(t, err)
			require.Equal(t, 1, slot, "the first device goes right after the host bridge")
			for _, tc := range []struct {
				name  string
				devfn uint8
				reg   int
				n     int
				want  uint32
			}{
				{"host bridge ids", devfn(0), RegVendorID, 4, 0x0008_1b36},
				{"host bridge class", devfn(0), RegRevision, 4, 0x0600_0000},
				{"device ids", devfn(1), RegVendorID, 4, 0x1042_1af4},
				{"device id as a word at byte 2", devfn(1), RegDeviceID, 2, 0x1042},
				{"vendor's high byte", devfn(1), 1, 1, 0x1a},
				{"word at byte 1", devfn(1), 1, 2, 0x421a},
				{"empty slot", devfn(2), RegVendorID, 4, 0xffffffff},
				{"function 1", devfn(1) | 1, RegVendorID, 4, 0xffffffff},
				{"last slot", devfn(31), RegVendorID, 2, 0xffff},
			} {
				t.Run(tc.name, func(t *testing.T) {
					assert.Equal(t, tc.want, acc.read(t, b, tc.devfn, tc.reg, tc.n))
				})
			}
		})
	}
}

func TestType1AddressRegister(t *testing.T) {
	b := newTestBus(t)
	_, err := b.Add(newTestDevice(t, 0x1042))
	require.NoError(t, err)
	io := b.ConfigIO()
	read := func(off uint64, n int) uint32 {
		data := make([]byte, n)
		require.NoError(t, io.Read(off, data))
		return leValue(data)
	}
	// Linux's pci_check_type1: a byte write to 0xcfb, then the dword
	// register must read back what was written.
	require.NoError(t, io.Write(3, []byte{1}))
	require.NoError(t, io.Write(0, leBytes(0x8000_0000, 4)))
	assert.Equal(t, uint32(0x8000_0000), read(0, 4))
	// Reserved bits (30:24) and the low two bits read as 0.
	require.NoError(t, io.Write(0, leBytes(0xffff_ffff, 4)))
	assert.Equal(t, uint32(0x80ff_fffc), read(0, 4))
	assert.Equal(t, uint32(0xff), read(1, 1), "byte reads of 0xcf8-0xcfb are not the register")

	for _, tc := range []struct {
		name string
		addr uint32
		want uint32
	}{
		{"enabled", 0x8000_0800, 0x1042_1af4},
		{"enable bit clear", 0x0000_0800, 0xffff_ffff},
		{"bus 1", 0x8001_0800, 0xffff_ffff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, io.Write(0, leBytes(tc.addr, 4)))
			assert.Equal(t, tc.want, read(4, 4))
		})
	}
	// A write with the enable bit clear goes nowhere.
	require.NoError(t, io.Write(0, leBytes(0x0000_0800|RegCommand, 4)))
	require.NoError(t, io.Write(4, leBytes(0xffff, 2)))
	assert.Zero(t, b.type1Read(t, devfn(1), RegCommand, 2))
}

func TestECAMExtendedSpaceAndBadAccesses(t *testing.T) {
	b := newTestBus(t)
	_, err := b.Add(newTestDevice(t, 0x1042))
	require.NoError(t, err)
	assert.Zero(t, b.ecamRead(t, devfn(1), 0x100, 4), "a conventional function's extended space reads 0")
	data := make([]byte, 2)
	assert.ErrorIs(t, b.ECAM().Read(uint64(devfn(1))<<12|3, data), ErrBadAccess, "word across a dword")
	assert.Equal(t, []byte{0xff, 0xff}, data)
	assert.ErrorIs(t, b.ECAM().Write(uint64(devfn(1))<<12|RegCommand, make([]byte, 8)), ErrBadAccess)
	assert.ErrorIs(t, b.ECAM().Read(1<<20, make([]byte, 4)), ErrBadAccess, "past bus 0")
	require.NoError(t, b.ECAM().Read(uint64(devfn(7))<<12|2, data), "an absent function is no error")
	assert.Equal(t, []byte{0xff, 0xff}, data)
}

func TestAddAssignsBARsAndFillsSlots(t *testing.T) {
	b := newTestBus(t)
	d := newTestDevice(t, 0x1042)
	_, err := b.Add(d)
	require.NoError(t, err)
	assert.Equal(t, uint64(testMemStart), d.cfg.BARAddress(0))
	assert.Equal(t, uint64(testMemStart+0x100000), d.cfg.BARAddress(2), "1 MiB aligned after the 4 KiB BAR")
	assert.Equal(t, uint64(testIOStart), d.cfg.BARAddress(4))
	assert.Empty(t, d.takeEvents(), "decode stays off until the guest enables it")

	for slot := 2; slot < NumSlots; slot++ {
		n, err := b.Add(newTestDevice(t, 0x1042))
		require.NoError(t, err)
		assert.Equal(t, slot, n)
	}
	_, err = b.Add(newTestDevice(t, 0x1042))
	assert.ErrorIs(t, err, ErrBusFull)
	_, err = b.Add(nil)
	assert.ErrorIs(t, err, ErrLayout)
}

func TestAddFailsWhenTheWindowIsFull(t *testing.T) {
	mem, err := NewAllocator(0xc000_0000, 0xc000_2000)
	require.NoError(t, err)
	b := NewBus(devices.NewBus(), devices.NewBus(), mem, nil)
	_, err = b.Add(newTestDevice(t, 0x1042))
	assert.ErrorIs(t, err, ErrNoSpace)
}

// mmioRead reads 2 bytes at addr on bus, the BAR offset testDevice
// answers with.
func busRead(t *testing.T, bus *devices.Bus, addr uint64) (uint16, error) {
	t.Helper()
	data := make([]byte, 2)
	err := bus.Read(addr, data)
	return binary.LittleEndian.Uint16(data), err
}

func TestBARsDecodeWhereAndWhenTheGuestSays(t *testing.T) {
	for _, acc := range accessors() {
		t.Run(acc.name, func(t *testing.T) {
			b := newTestBus(t)
			d := newTestDevice(t, 0x1042)
			_, err := b.Add(d)
			require.NoError(t, err)
			fn := devfn(1)
			bar0 := d.cfg.BARAddress(0)
			bar2 := d.cfg.BARAddress(2)
			io := d.cfg.BARAddress(4)

			_, err = busRead(t, b.mmio, bar0+4)
			require.ErrorIs(t, err, devices.ErrNoDevice, "memory decode off")

			require.NoError(t, acc.write(t, b, fn, RegCommand, 2, uint32(CommandMemory)))
			v, err := busRead(t, b.mmio, bar0+4)
			require.NoError(t, err)
			assert.Equal(t, uint16(4), v)
			_, err = busRead(t, b.mmio, bar2+0x10)
			require.NoError(t, err)
			_, err = busRead(t, b.pio, io)
			require.ErrorIs(t, err, devices.ErrNoDevice, "I/O decode still off")
			assert.Equal(t, []string{"bar0 true 0xc0000000", "bar2 true 0xc0100000"}, d.takeEvents())

			require.NoError(t, acc.write(t, b, fn, RegCommand, 2, uint32(CommandMemory|CommandIO)))
			_, err = busRead(t, b.pio, io+2)
			require.NoError(t, err)
			assert.Equal(t, []string{"bar4 true 0xc000"}, d.takeEvents())

			// Sizing with decode on: all-ones unmaps, the old value maps again.
			require.NoError(t, acc.write(t, b, fn, RegBAR0, 4, 0xffffffff))
			assert.Equal(t, uint32(0xfffff000), acc.read(t, b, fn, RegBAR0, 4))
			_, err = busRead(t, b.mmio, bar0)
			require.ErrorIs(t, err, devices.ErrNoDevice)
			require.NoError(t, acc.write(t, b, fn, RegBAR0, 4, uint32(bar0)))
			assert.Equal(t, []string{"bar0 false 0xc0000000", "bar0 true 0xc0000000"}, d.takeEvents())

			// Relocation: the old address goes dark, the new one answers.
			const moved = 0xd000_0000
			require.NoError(t, acc.write(t, b, fn, RegBAR0, 4, moved))
			_, err = busRead(t, b.mmio, bar0)
			require.ErrorIs(t, err, devices.ErrNoDevice)
			v, err = busRead(t, b.mmio, moved+0x20)
			require.NoError(t, err)
			assert.Equal(t, uint16(0x20), v)
			assert.Equal(t, []string{"bar0 false 0xc0000000", "bar0 true 0xd0000000"}, d.takeEvents())

			// A 64-bit BAR moves above 4 GiB, one half at a time.
			require.NoError(t, acc.write(t, b, fn, RegBAR0+12, 4, 0x2))
			require.NoError(t, acc.write(t, b, fn, RegBAR0+8, 4, 0x0))
			_, err = busRead(t, b.mmio, 0x2_0000_0000)
			require.NoError(t, err)
			assert.Equal(t, []string{"bar2 false 0xc0100000", "bar2 true 0x2c0100000", "bar2 false 0x2c0100000", "bar2 true 0x200000000"}, d.takeEvents())

			// Writes reach the device at the BAR offset.
			require.NoError(t, b.mmio.Write(moved+8, []byte{1, 2}))
			assert.Equal(t, []string{"bar0+0x8=0102"}, d.writes)

			// Decode off unmaps everything.
			require.NoError(t, acc.write(t, b, fn, RegCommand, 2, 0))
			assert.ElementsMatch(t, []string{"bar0 false 0xd0000000", "bar2 false 0x200000000", "bar4 false 0xc000"}, d.takeEvents())
			_, err = busRead(t, b.mmio, moved)
			require.ErrorIs(t, err, devices.ErrNoDevice)
		})
	}
}

func TestBARNeverDecodesAtZeroOrOverAnotherDevice(t *testing.T) {
	b := newTestBus(t)
	d1, d2 := newTestDevice(t, 0x1041), newTestDevice(t, 0x1042)
	_, err := b.Add(d1)
	require.NoError(t, err)
	_, err = b.Add(d2)
	require.NoError(t, err)
	require.NoError(t, b.ecamWrite(devfn(1), RegCommand, 2, uint32(CommandMemory)))
	require.NoError(t, b.ecamWrite(devfn(2), RegCommand, 2, uint32(CommandMemory)))
	d1.takeEvents()
	d2.takeEvents()

	// Onto d1's BAR 0: refused, d2's BAR 0 stays dark, d1 keeps working.
	err = b.ecamWrite(devfn(2), RegBAR0, 4, uint32(d1.cfg.BARAddress(0)))
	require.ErrorIs(t, err, devices.ErrOverlap)
	assert.Equal(t, []string{"bar0 false 0xc0001000"}, d2.takeEvents())
	_, err = busRead(t, b.mmio, d1.cfg.BARAddress(0))
	require.NoError(t, err)

	// At 0: no decode, no error.
	require.NoError(t, b.ecamWrite(devfn(2), RegBAR0, 4, 0))
	assert.Empty(t, d2.takeEvents())
	// Somewhere free: decodes again.
	require.NoError(t, b.ecamWrite(devfn(2), RegBAR0, 4, 0xd000_0000))
	assert.Equal(t, []string{"bar0 true 0xd0000000"}, d2.takeEvents())

	require.NoError(t, b.Close())
	_, err = busRead(t, b.mmio, 0xd000_0000)
	assert.ErrorIs(t, err, devices.ErrNoDevice, "Close unmaps")
}

func TestDecodes(t *testing.T) {
	cfg := NewConfig(Header{VendorID: 1})
	require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000}))
	require.NoError(t, cfg.AddBAR(1, BAR{Kind: BARMem64, Size: 0x1000}))
	require.NoError(t, cfg.AddBAR(3, BAR{Kind: BARIO, Size: 0x10}))
	require.NoError(t, cfg.Write(RegCommand, leBytes(uint32(CommandMemory|CommandIO), 2)))
	for _, tc := range []struct {
		name string
		bar  int
		addr uint64
		want bool
	}{
		{"mem32 in the hole", 0, 0xc000_0000, true},
		{"mem32 at 0", 0, 0, false},
		{"mem32 sizing pattern", 0, 0xffff_f000, false},
		{"mem32 just below the top", 0, 0xffff_e000, true},
		{"mem64 above 4G", 1, 0x10_0000_0000, true},
		{"mem64 sizing pattern", 1, 0xffff_ffff_ffff_f000, false},
		{"mem64 beyond 52 bits", 1, 1 << 52, false},
		{"io", 3, 0xc000, true},
		{"io beyond 64K", 3, 0x1_0000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := RegBAR0 + 4*tc.bar
			require.NoError(t, cfg.Write(reg, leBytes(uint32(tc.addr), 4)))
			if tc.bar == 1 {
				require.NoError(t, cfg.Write(reg+4, leBytes(uint32(tc.addr>>32), 4)))
			}
			addr, ok := decodes(cfg, tc.bar)
			assert.Equal(t, tc.want, ok)
			if ok {
				assert.Equal(t, tc.addr, addr)
			}
		})
	}
	require.NoError(t, cfg.Write(RegCommand, leBytes(0, 2)))
	_, ok := decodes(cfg, 3)
	assert.False(t, ok, "decode off")
	_, ok = decodes(cfg, 2)
	assert.False(t, ok, "no BAR")
}
