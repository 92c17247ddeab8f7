package pci

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices"
	pcibus "github.com/wisp-vmm/wisp/devices/pci"
	"github.com/wisp-vmm/wisp/devices/virtio"
)

const allStatus = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK

func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		typ      virtio.DeviceType
		deviceID uint16
		class    uint32
	}{
		{virtio.TypeNet, 0x1041, 0x020000},
		{virtio.TypeBlock, 0x1042, 0x018000},
		{virtio.TypeRNG, 0x1044, 0xff0000},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			dev := newEchoDevice()
			dev.typ = tc.typ
			cfg := newFixture(t, dev).t.Config()
			assert.Equal(t, uint16(0x1af4), cfg.Uint16(pcibus.RegVendorID))
			assert.Equal(t, tc.deviceID, cfg.Uint16(pcibus.RegDeviceID))
			assert.Equal(t, tc.class, cfg.Uint32(pcibus.RegRevision)>>8)
			assert.Equal(t, uint8(1), cfg.Bytes(pcibus.RegRevision, 1)[0], "non-transitional: revision 1")
			assert.Equal(t, uint16(0x1af4), cfg.Uint16(pcibus.RegSubsystemVendorID))
			assert.Equal(t, uint16(0x1100), cfg.Uint16(pcibus.RegSubsystemID))
			assert.Zero(t, cfg.Bytes(pcibus.RegInterruptPin, 1)[0], "no INTx")
			bar, ok := cfg.BAR(BARIndex)
			require.True(t, ok)
			assert.Equal(t, pcibus.BAR{Kind: pcibus.BARMem32, Size: BARSize}, bar)
		})
	}
}

// virtioCap is one virtio vendor capability as a driver parses it.
type virtioCap struct {
	typ, bar       uint8
	offset, length uint32
	extra          uint32
}

func capabilities(t *testing.T, cfg *pcibus.Config) (map[uint8]virtioCap, int) {
	t.Helper()
	caps := map[uint8]virtioCap{}
	msix := 0
	for off := int(cfg.Bytes(pcibus.RegCapabilities, 1)[0]); off != 0; off = int(cfg.Bytes(off+1, 1)[0]) {
		switch cfg.Bytes(off, 1)[0] {
		case pcibus.CapMSIX:
			msix = off
		case pcibus.CapVendor:
			b := cfg.Bytes(off, 20)
			c := virtioCap{typ: b[3], bar: b[4], offset: binary.LittleEndian.Uint32(b[8:]), length: binary.LittleEndian.Uint32(b[12:])}
			if b[2] >= 20 {
				c.extra = binary.LittleEndian.Uint32(b[16:])
			}
			caps[c.typ] = c
		}
	}
	return caps, msix
}

func TestCapabilities(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	caps, msix := capabilities(t, f.t.Config())
	assert.Equal(t, map[uint8]virtioCap{
		capCommon: {typ: capCommon, offset: CommonOffset, length: commonCfgLen},
		capNotify: {typ: capNotify, offset: NotifyOffset, length: 2 * NotifyOffMultiplier, extra: NotifyOffMultiplier},
		capISR:    {typ: capISR, offset: ISROffset, length: 1},
		capDevice: {typ: capDevice, offset: DeviceOffset, length: regionSize},
		capPCI:    {typ: capPCI},
	}, caps)
	for _, c := range caps {
		assert.LessOrEqual(t, uint64(c.offset)+uint64(c.length), uint64(BARSize))
	}
	require.NotZero(t, msix)
	cfg := f.t.Config()
	assert.Equal(t, uint16(2), cfg.Uint16(msix+2)&0x7ff, "3 vectors: 2 queues and config")
	assert.Equal(t, uint32(MSIXTableOffset), cfg.Uint32(msix+4))
	assert.Equal(t, uint32(MSIXPBAOffset), cfg.Uint32(msix+8))
}

func TestNewRejectsDevices(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*echoDevice)
		opts   func(*Options)
	}{
		{"no VERSION_1", func(d *echoDevice) { d.features = virtio.FeatureRingEventIdx }, nil},
		{"no queues", func(d *echoDevice) { d.sizes = nil }, nil},
		{"too many queues", func(d *echoDevice) { d.sizes = make([]uint16, MaxQueues+1) }, nil},
		{"queue size 0", func(d *echoDevice) { d.sizes = []uint16{0} }, nil},
		{"queue size not a power of two", func(d *echoDevice) { d.sizes = []uint16{100} }, nil},
		{"no memory", func(*echoDevice) {}, func(o *Options) { o.Memory = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newEchoDevice()
			tc.modify(d)
			o := Options{Memory: make(sliceMemory, 4096), MSI: newMSIRouter()}
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, err := New(d, o)
			assert.ErrorIs(t, err, ErrDevice)
		})
	}
}

// TestDriverHandshake runs the sequence Linux's virtio_pci_modern does and
// then one request through the real virtqueue code, interrupt included.
func TestDriverHandshake(t *testing.T) {
	f := newFixture(t, newEchoDevice())

	assert.Equal(t, uint64(2), f.read(t, regNumQueues, 2))
	f.write(t, regDeviceFeatureSelect, 4, 0)
	low := f.read(t, regDeviceFeature, 4)
	f.write(t, regDeviceFeatureSelect, 4, 1)
	high := f.read(t, regDeviceFeature, 4)
	offered := high<<32 | low
	assert.Equal(t, virtio.FeatureVersion1|virtio.FeatureRingEventIdx|1, offered, "packed ring never offered")
	f.write(t, regDeviceFeatureSelect, 4, 2)
	assert.Zero(t, f.read(t, regDeviceFeature, 4))

	assert.Equal(t, allStatus, f.negotiate(t, virtio.FeatureVersion1|virtio.FeatureRingEventIdx))
	f.enableMSIX(t, 0, 1)
	f.write(t, regConfigMSIXVector, 2, 0)
	assert.Equal(t, uint64(0), f.read(t, regConfigMSIXVector, 2))

	f.write(t, regQueueSelect, 2, 0)
	assert.Equal(t, uint64(256), f.read(t, regQueueSize, 2), "max size after reset")
	assert.Equal(t, uint64(NoVector), f.read(t, regQueueMSIXVector, 2))
	assert.Equal(t, uint64(0), f.read(t, regQueueNotifyOff, 2))
	f.setupQueue0(t, 1)
	assert.Equal(t, uint64(descAddr), f.read(t, regQueueDesc, 8))
	assert.Equal(t, uint64(1), f.read(t, regQueueMSIXVector, 2))
	f.write(t, regQueueSelect, 2, 1)
	assert.Equal(t, uint64(1), f.read(t, regQueueNotifyOff, 2))
	assert.Equal(t, uint64(0), f.read(t, regQueueEnable, 2), "queue 1 left disabled")

	// The first request is on the ring before DRIVER_OK; the device finds
	// it when it starts, fills the buffer, completes it and raises vector 1.
	f.submit(t, 0, 64)
	f.write(t, regDeviceStatus, 1, uint64(allStatus|virtio.StatusDriverOK))
	assert.Equal(t, allStatus|virtio.StatusDriverOK, f.status(t))
	a := f.dev.lastActivation(t)
	assert.Equal(t, virtio.FeatureVersion1|virtio.FeatureRingEventIdx, a.Features)
	require.Len(t, a.Queues, 2)
	require.NotNil(t, a.Queues[0].Queue)
	assert.Equal(t, uint16(ringSize), a.Queues[0].Queue.Size())
	assert.Nil(t, a.Queues[1].Queue, "not enabled")
	assert.NotNil(t, a.ConfigInterrupt)

	msg := <-f.router.fired
	assert.Equal(t, pcibus.MSIMessage{Address: 0xfee00000, Data: 0x41}, msg)
	assert.Equal(t, uint16(1), f.usedIdx())
	assert.Equal(t, uint32(64), binary.LittleEndian.Uint32(f.mem[usedAddr+8:]), "bytes written")
	assert.Equal(t, byte(0xab), f.mem[bufAddr+63])

	// Queue registers are frozen while the device runs.
	f.write(t, regQueueSelect, 2, 0)
	f.write(t, regQueueDesc, 8, 0x5000)
	assert.Equal(t, uint64(descAddr), f.read(t, regQueueDesc, 8))

	if !raceEnabled {
		// The second one is kicked through the BAR (the MMIO-exit path).
		f.submit(t, 1, 32)
		f.write(t, NotifyOffset, 2, 0)
		assert.Equal(t, pcibus.MSIMessage{Address: 0xfee00000, Data: 0x41}, <-f.router.fired)
		assert.Equal(t, uint16(2), f.usedIdx())
	}

	// A configuration change: generation moves, vector 0 fires, ISR says
	// config.
	gen := f.read(t, regConfigGeneration, 1)
	require.NoError(t, a.ConfigInterrupt.Trigger())
	assert.Equal(t, pcibus.MSIMessage{Address: 0xfee00000, Data: 0x40}, <-f.router.fired)
	assert.Equal(t, gen+1, f.read(t, regConfigGeneration, 1))
	assert.Equal(t, uint64(isrQueue|isrConfig), f.read(t, ISROffset, 1))
	assert.Zero(t, f.read(t, ISROffset, 1), "reading the ISR clears it")

	// Reset: the device stops, the registers return to their defaults.
	f.write(t, regDeviceStatus, 1, 0)
	assert.Zero(t, f.status(t))
	assert.Equal(t, 1, f.dev.resets)
	assert.Equal(t, uint64(NoVector), f.read(t, regConfigMSIXVector, 2))
	f.write(t, regQueueSelect, 2, 0)
	assert.Equal(t, uint64(256), f.read(t, regQueueSize, 2))
	assert.Zero(t, f.read(t, regQueueEnable, 2))
	assert.Zero(t, f.read(t, regQueueDesc, 8))
	f.write(t, regDriverFeatureSelect, 4, 1)
	assert.Zero(t, f.read(t, regDriverFeature, 4))
}

func TestFeatureNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		accepted bool
	}{
		{"VERSION_1 only", virtio.FeatureVersion1, true},
		{"a subset", virtio.FeatureVersion1 | 1, true},
		{"everything offered", virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | 1, true},
		{"no VERSION_1", virtio.FeatureRingEventIdx, false},
		{"not offered", virtio.FeatureVersion1 | 1<<5, false},
		{"packed ring, filtered from the offer", virtio.FeatureVersion1 | virtio.FeatureRingPacked, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, newEchoDevice())
			st := f.negotiate(t, tc.features)
			assert.Equal(t, tc.accepted, st&virtio.StatusFeaturesOK != 0, "status %#x", st)
		})
	}

	f := newFixture(t, newEchoDevice())
	require.Equal(t, allStatus, f.negotiate(t, virtio.FeatureVersion1))
	f.write(t, regDriverFeatureSelect, 4, 0)
	f.write(t, regDriverFeature, 4, 1)
	assert.Zero(t, f.read(t, regDriverFeature, 4), "features are fixed after FEATURES_OK")
}

func TestActivationFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f *fixture)
	}{
		{"DRIVER_OK without FEATURES_OK", func(t *testing.T, f *fixture) {
			f.negotiate(t, 1) // refused: no VERSION_1
			f.setupQueue0(t, NoVector)
		}},
		{"ring outside guest memory", func(t *testing.T, f *fixture) {
			f.negotiate(t, virtio.FeatureVersion1)
			f.setupQueue0(t, NoVector)
			f.write(t, regQueueSelect, 2, 0)
			f.write(t, regQueueEnable, 2, 1)
			// Too late to move it (enabled): start over with a bad one.
			f.write(t, regDeviceStatus, 1, 0)
			f.negotiate(t, virtio.FeatureVersion1)
			f.write(t, regQueueSelect, 2, 0)
			f.write(t, regQueueDesc, 8, 1<<40)
			f.write(t, regQueueEnable, 2, 1)
		}},
		{"queue size not a power of two", func(t *testing.T, f *fixture) {
			f.negotiate(t, virtio.FeatureVersion1)
			f.setupQueue0(t, NoVector)
			f.write(t, regDeviceStatus, 1, 0)
			f.negotiate(t, virtio.FeatureVersion1)
			f.write(t, regQueueSelect, 2, 0)
			f.write(t, regQueueSize, 2, 12)
			f.write(t, regQueueDesc, 8, descAddr)
			f.write(t, regQueueEnable, 2, 1)
		}},
		{"the device refuses", func(t *testing.T, f *fixture) {
			f.dev.activateErr = errors.New("no")
			f.negotiate(t, virtio.FeatureVersion1)
			f.setupQueue0(t, NoVector)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, newEchoDevice())
			tc.setup(t, f)
			f.enableMSIX(t, 2)
			f.write(t, regConfigMSIXVector, 2, 2)
			st := f.status(t) | virtio.StatusDriverOK
			err := f.t.WriteBAR(BARIndex, regDeviceStatus, []byte{st})
			require.ErrorIs(t, err, ErrActivate)
			assert.NotZero(t, f.status(t)&virtio.StatusDeviceNeedsReset)
			assert.Equal(t, pcibus.MSIMessage{Address: 0xfee00000, Data: 0x42}, <-f.router.fired, "config interrupt")
			assert.Empty(t, f.dev.activations)
			// Only a reset clears it.
			f.write(t, regDeviceStatus, 1, uint64(f.status(t)))
			assert.NotZero(t, f.status(t)&virtio.StatusDeviceNeedsReset)
			f.write(t, regDeviceStatus, 1, 0)
			assert.Zero(t, f.status(t))
		})
	}
}

func TestCommonConfigAccesses(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	f.write(t, regQueueSelect, 2, 1)
	f.write(t, regQueueDesc, 8, 0x1122_3344_5566_7780)
	assert.Equal(t, uint64(0x5566_7780), f.read(t, regQueueDesc, 4))
	assert.Equal(t, uint64(0x1122_3344), f.read(t, regQueueDesc+4, 4))
	f.write(t, regQueueDesc+4, 4, 0)
	assert.Equal(t, uint64(0x5566_7780), f.read(t, regQueueDesc, 8))
	assert.Equal(t, uint64(0x77), f.read(t, regQueueDesc+1, 1))

	for _, tc := range []struct {
		name string
		off  uint64
		n    int
	}{
		{"dword across two words", regConfigMSIXVector + 1, 2},
		{"dword over status and generation", regDeviceStatus, 4},
		{"qword over two dwords", regDeviceFeatureSelect, 8},
		{"qword unaligned", regQueueDesc + 4, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.n)
			assert.ErrorIs(t, f.t.ReadBAR(BARIndex, tc.off, data), ErrBadAccess)
			assert.ErrorIs(t, f.t.WriteBAR(BARIndex, tc.off, data), ErrBadAccess)
		})
	}
	assert.Zero(t, f.read(t, commonCfgLen, 4), "past the structure")
	assert.Zero(t, f.read(t, regQueueReset, 2))

	// A queue that does not exist.
	f.write(t, regQueueSelect, 2, 7)
	assert.Zero(t, f.read(t, regQueueSize, 2))
	f.write(t, regQueueSize, 2, 4)
	f.write(t, regQueueEnable, 2, 1)
	assert.Zero(t, f.read(t, regQueueEnable, 2))

	// Sizes beyond the maximum and vectors beyond the table.
	f.write(t, regQueueSelect, 2, 1)
	f.write(t, regQueueSize, 2, 32)
	assert.Equal(t, uint64(16), f.read(t, regQueueSize, 2))
	f.write(t, regQueueSize, 2, 0)
	assert.Equal(t, uint64(16), f.read(t, regQueueSize, 2))
	f.write(t, regQueueMSIXVector, 2, 3)
	assert.Equal(t, uint64(NoVector), f.read(t, regQueueMSIXVector, 2))
	f.write(t, regQueueMSIXVector, 2, 2)
	assert.Equal(t, uint64(2), f.read(t, regQueueMSIXVector, 2))

	// Read-only registers.
	f.write(t, regNumQueues, 2, 9)
	assert.Equal(t, uint64(2), f.read(t, regNumQueues, 2))
	f.write(t, regQueueNotifyOff, 2, 9)
	assert.Equal(t, uint64(1), f.read(t, regQueueNotifyOff, 2))

	// Other BARs and widths.
	assert.ErrorIs(t, f.t.ReadBAR(1, 0, make([]byte, 4)), ErrBadAccess)
	assert.ErrorIs(t, f.t.WriteBAR(BARIndex, 0, make([]byte, 3)), ErrBadAccess)
	assert.ErrorIs(t, f.t.ReadBAR(BARIndex, BARSize-2, make([]byte, 4)), ErrBadAccess)
}

func TestDeviceConfigRegion(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	assert.Equal(t, uint64(0x04030201), f.read(t, DeviceOffset, 4))
	f.write(t, DeviceOffset+4, 2, 0xbeef)
	assert.Equal(t, []byte{0xef, 0xbe}, f.dev.config[4:6])
	data := []byte{9, 9, 9, 9}
	assert.ErrorIs(t, f.t.ReadBAR(BARIndex, DeviceOffset+6, data), virtio.ErrBadConfig)
	assert.Equal(t, []byte{0, 0, 0, 0}, data)
}

func TestNotifyRegistrationFollowsTheBAR(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	require.NoError(t, f.t.BARMapped(BARIndex, 0xc000_0000, true))
	assert.Equal(t, []string{"+0xc0003000", "+0xc0003004"}, f.notify.take())
	require.NoError(t, f.t.BARMapped(BARIndex, 0xc000_0000, false))
	assert.Equal(t, []string{"-0xc0003000", "-0xc0003004"}, f.notify.take())
	require.NoError(t, f.t.BARMapped(BARIndex, 0xd000_0000, true))
	assert.Equal(t, []string{"+0xd0003000", "+0xd0003004"}, f.notify.take())
	require.NoError(t, f.t.BARMapped(1, 0xe000_0000, true), "not our BAR")
	assert.Empty(t, f.notify.take())

	// The kick registered for queue 1 is the one its notify signals.
	f.notify.mu.Lock()
	kick := f.notify.live[0xd0003004]
	f.notify.mu.Unlock()
	f.write(t, NotifyOffset+4, 2, 1)
	n, err := kick.Drain()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), n)
	assert.Equal(t, uint64(1), f.t.NotifyExits())
	assert.ErrorIs(t, f.t.WriteBAR(BARIndex, NotifyOffset+8, []byte{2, 0}), ErrBadAccess, "no queue 2")
	assert.ErrorIs(t, f.t.WriteBAR(BARIndex, NotifyOffset+2, []byte{0, 0}), ErrBadAccess, "between queues")

	require.NoError(t, f.t.Close())
	assert.Equal(t, []string{"-0xd0003000", "-0xd0003004"}, f.notify.take())
	assert.Equal(t, 0, f.router.closed)
	require.NoError(t, f.t.WriteBAR(BARIndex, NotifyOffset, []byte{0, 0}), "after Close a notify is dropped")
}

func TestNotifyRegistrationFailureLeavesTheExitPath(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	f.notify.fail = true
	assert.Error(t, f.t.BARMapped(BARIndex, 0xc000_0000, true))
	f.notify.fail = false
	require.NoError(t, f.t.BARMapped(BARIndex, 0xc000_0000, false), "nothing to unregister")
}

func TestPCICfgCapability(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	var capOff int
	cfg := f.t.Config()
	for off := int(cfg.Bytes(pcibus.RegCapabilities, 1)[0]); off != 0; off = int(cfg.Bytes(off+1, 1)[0]) {
		if cfg.Bytes(off, 1)[0] == pcibus.CapVendor && cfg.Bytes(off+3, 1)[0] == capPCI {
			capOff = off
		}
	}
	require.NotZero(t, capOff)
	put := func(off int, v uint32, n int) {
		data := make([]byte, n)
		putBytes(data, uint64(v))
		require.NoError(t, f.t.WriteConfig(off, data))
	}
	get := func(off int, n int) uint32 {
		data := make([]byte, n)
		require.NoError(t, f.t.ReadConfig(off, data))
		return uint32(getBytes(data))
	}
	// Read num_queues (2 bytes at 0x12) through the window.
	put(capOff+4, 0, 1)
	put(capOff+8, regNumQueues, 4)
	put(capOff+12, 2, 4)
	assert.Equal(t, uint32(2), get(capOff+16, 4)&0xffff)
	// Write queue_select through it.
	put(capOff+8, regQueueSelect, 4)
	put(capOff+16, 1, 4)
	assert.Equal(t, uint64(1), f.read(t, regQueueSelect, 2))
	// A length the window does not serve leaves the BAR alone.
	put(capOff+12, 3, 4)
	put(capOff+16, 0, 4)
	assert.Equal(t, uint64(1), f.read(t, regQueueSelect, 2))
	// Header fields are still read-only through WriteConfig.
	put(pcibus.RegDeviceID, 0, 2)
	assert.Equal(t, uint32(0x1044), get(pcibus.RegDeviceID, 2))
}

// TestOnTheBus puts the transport on a real pcibus.Bus: the guest enables
// memory decode through ECAM and then reaches the common configuration and
// the notify area through the MMIO bus at the BAR the bus assigned.
func TestOnTheBus(t *testing.T) {
	f := newFixture(t, newEchoDevice())
	mmio := devices.NewBus()
	alloc, err := pcibus.NewAllocator(0xc000_0000, 0xfec0_0000)
	require.NoError(t, err)
	bus := pcibus.NewBus(devices.NewBus(), mmio, alloc, nil)
	slot, err := bus.Add(f.t)
	require.NoError(t, err)
	require.Equal(t, 1, slot)
	base := f.t.Config().BARAddress(BARIndex)
	assert.Equal(t, uint64(0xc000_0000), base)

	ecam := bus.ECAM()
	require.NoError(t, ecam.Write(1<<15|pcibus.RegCommand, []byte{byte(pcibus.CommandMemory | pcibus.CommandBusMaster), 0}))
	assert.Equal(t, []string{"+0xc0003000", "+0xc0003004"}, f.notify.take())
	data := make([]byte, 2)
	require.NoError(t, mmio.Read(base+regNumQueues, data))
	assert.Equal(t, uint16(2), binary.LittleEndian.Uint16(data))

	// The guest moves the BAR; the notify addresses move with it.
	require.NoError(t, ecam.Write(1<<15|pcibus.RegBAR0, []byte{0, 0, 0, 0xd0}))
	assert.Equal(t, []string{"-0xc0003000", "-0xc0003004", "+0xd0003000", "+0xd0003004"}, f.notify.take())
	require.NoError(t, mmio.Read(0xd000_0000+regNumQueues, data))
	assert.Equal(t, uint16(2), binary.LittleEndian.Uint16(data))

	// MSI-X enable through the configuration space reaches the transport.
	msix := f.t.MSIX().CapabilityOffset()
	require.NoError(t, ecam.Write(1<<15|uint64(msix)+2, []byte{0, 0x80}))
	assert.True(t, f.t.MSIX().Enabled())
}
