package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices"
)

// testDevice is a function with a 4 KiB 32-bit memory BAR 0, a 1 MiB
// 64-bit memory BAR 2 and a 32-port I/O BAR 4. BAR accesses are recorded;
// reads return the offset.
type testDevice struct {
	cfg *Config

	mu     sync.Mutex
	events []string // BARMapped calls
	writes []string // BAR writes
}

func newTestDevice(t testing.TB, deviceID uint16) *testDevice {
	t.Helper()
	cfg := NewConfig(Header{VendorID: 0x1af4, DeviceID: deviceID, Class: 0xff0000, Revision: 1, SubsystemVendorID: 0x1af4, SubsystemID: 0x1100})
	require.NoError(t, cfg.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000}))
	require.NoError(t, cfg.AddBAR(2, BAR{Kind: BARMem64, Size: 0x100000, Prefetchable: true}))
	require.NoError(t, cfg.AddBAR(4, BAR{Kind: BARIO, Size: 0x20}))
	return &testDevice{cfg: cfg}
}

func (d *testDevice) Config() *Config                           { return d.cfg }
func (d *testDevice) ReadConfig(offset int, data []byte) error  { return d.cfg.Read(offset, data) }
func (d *testDevice) WriteConfig(offset int, data []byte) error { return d.cfg.Write(offset, data) }

// ReadBAR answers with the low 16 bits of offset, cut to the access's
// width (a guest may read a single byte).
func (d *testDevice) ReadBAR(bar int, offset uint64, data []byte) error {
	var v [2]byte
	binary.LittleEndian.PutUint16(v[:], uint16(offset))
	clear(data)
	copy(data, v[:])
	return nil
}

func (d *testDevice) WriteBAR(bar int, offset uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, fmt.Sprintf("bar%d+%#x=%x", bar, offset, data))
	return nil
}

func (d *testDevice) BARMapped(bar int, addr uint64, mapped bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, fmt.Sprintf("bar%d %v %#x", bar, mapped, addr))
	return nil
}

func (d *testDevice) takeEvents() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.events
	d.events = nil
	return e
}

// testBus is a Bus with both allocators and the buses it maps BARs on.
type testBus struct {
	*Bus
	pio, mmio *devices.Bus
}

const (
	testMemStart = 0xc000_0000
	testMemEnd   = 0xfec0_0000
	testIOStart  = 0xc000
	testIOEnd    = 0x10000
)

func newTestBus(t testing.TB) *testBus {
	t.Helper()
	mem, err := NewAllocator(testMemStart, testMemEnd)
	require.NoError(t, err)
	io, err := NewAllocator(testIOStart, testIOEnd)
	require.NoError(t, err)
	pio, mmio := devices.NewBus(), devices.NewBus()
	return &testBus{Bus: NewBus(pio, mmio, mem, io), pio: pio, mmio: mmio}
}

// type1 accesses configuration space the PC way.
func (b *testBus) type1Read(t testing.TB, devfn uint8, reg int, n int) uint32 {
	t.Helper()
	var addr [4]byte
	binary.LittleEndian.PutUint32(addr[:], 1<<31|uint32(devfn)<<8|uint32(reg&0xfc))
	require.NoError(t, b.ConfigIO().Write(0, addr[:]))
	data := make([]byte, n)
	require.NoError(t, b.ConfigIO().Read(uint64(4+reg&3), data))
	return leValue(data)
}

func (b *testBus) type1Write(t testing.TB, devfn uint8, reg int, n int, v uint32) error {
	t.Helper()
	var addr [4]byte
	binary.LittleEndian.PutUint32(addr[:], 1<<31|uint32(devfn)<<8|uint32(reg&0xfc))
	require.NoError(t, b.ConfigIO().Write(0, addr[:]))
	return b.ConfigIO().Write(uint64(4+reg&3), leBytes(v, n))
}

func (b *testBus) ecamRead(t testing.TB, devfn uint8, reg int, n int) uint32 {
	t.Helper()
	data := make([]byte, n)
	require.NoError(t, b.ECAM().Read(uint64(devfn)<<12|uint64(reg), data))
	return leValue(data)
}

func (b *testBus) ecamWrite(devfn uint8, reg int, n int, v uint32) error {
	return b.ECAM().Write(uint64(devfn)<<12|uint64(reg), leBytes(v, n))
}

func leValue(data []byte) uint32 {
	var v uint32
	for i := len(data) - 1; i >= 0; i-- {
		v = v<<8 | uint32(data[i])
	}
	return v
}

func leBytes(v uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

func devfn(slot int) uint8 { return uint8(slot << 3) }
