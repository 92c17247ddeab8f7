package kvmvm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/test/guests"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
)

// TestVirtioBlkGuest boots the freestanding virtio driver against a real
// virtio-blk device on a temporary image: PCI discovery through both
// configuration mechanisms, a BAR the guest moves (so the ioeventfds must
// follow), the modern handshake, one queue, MSI-X through a KVM irqfd and
// GSI route, a sector written and read back, and a sector the host wrote
// read by the guest. The host then finds the guest's sector in the file,
// and the image is unlocked because the VM closed the device.
func TestVirtioBlkGuest(t *testing.T) {
	requireKVM(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	image := make([]byte, guests.VirtioBlkMinSectors*guests.SectorSize)
	copy(image[guests.VirtioBlkReadSector*guests.SectorSize:], guests.VirtioBlkPattern(guests.VirtioBlkReadSeed))
	require.NoError(t, os.WriteFile(img, image, 0o600))

	var mu sync.Mutex
	var diskErrs []error
	disk, err := blk.Open(blk.Options{Path: img, OnError: func(_ int, err error) {
		mu.Lock()
		diskErrs = append(diskErrs, err)
		mu.Unlock()
	}})
	require.NoError(t, err)

	var log, console testutil.SyncBuffer
	var markers []byte
	cfg := vmm.Config{Kernel: guests.Build(t, guests.VirtioBlk)}.WithDefaults()
	vm, err := New(cfg, vmm.Console{Out: &console}, Options{
		Virtio: []virtio.Device{disk},
		Log:    &log,
		OnBootMarker: func(code byte, _ time.Duration) {
			mu.Lock()
			markers = append(markers, code)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, vm.Start(ctx))
	st, err := vm.Wait()
	require.NoError(t, err)
	out := console.String()
	t.Logf("guest console:\n%s\nwisp log:\n%s", out, log.String())
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	assert.NotContains(t, out, guests.VirtioBlkFailPrefix)
	assert.Contains(t, out, guests.VirtioBlkOutput)
	assert.Contains(t, log.String(), "virtio-block at PCI 00:01.0", "the first device sits in slot 1")
	transports := vm.instance().transports
	require.Len(t, transports, 1)
	assert.Zero(t, transports[0].NotifyExits(), "every notify went through the ioeventfd at the BAR's new address")
	mu.Lock()
	assert.Equal(t, []byte{guests.BootMarker}, markers)
	assert.Empty(t, diskErrs)
	mu.Unlock()

	got, err := os.ReadFile(img)
	require.NoError(t, err)
	off := guests.VirtioBlkWriteSector * guests.SectorSize
	assert.Equal(t, guests.VirtioBlkPattern(guests.VirtioBlkWriteSeed), got[off:off+guests.SectorSize], "the guest's sector reached the image")

	require.NoError(t, disk.Close())
	again, err := blk.Open(blk.Options{Path: img})
	require.NoError(t, err, "closing the disk released its lock")
	require.NoError(t, again.Close())
}

// closeCounter is a virtio device that never does anything but count how
// often it is closed.
type closeCounter struct {
	mu     sync.Mutex
	closes int
}

func (d *closeCounter) Type() virtio.DeviceType          { return virtio.TypeRNG }
func (d *closeCounter) Features() uint64                 { return virtio.FeatureVersion1 }
func (d *closeCounter) QueueSizes() []uint16             { return []uint16{8} }
func (d *closeCounter) ReadConfig(uint64, []byte) error  { return virtio.ErrBadConfig }
func (d *closeCounter) WriteConfig(uint64, []byte) error { return virtio.ErrBadConfig }
func (d *closeCounter) Activate(virtio.Activation) error { return nil }
func (d *closeCounter) Reset() error                     { return nil }

func (d *closeCounter) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closes++
	return nil
}

func (d *closeCounter) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closes
}

func TestVirtioDevicesLeftToTheCallerWhenStartFails(t *testing.T) {
	dev := &closeCounter{}
	cfg := vmm.Config{Kernel: "/nonexistent", KVMDevice: t.TempDir() + "/kvm"}.WithDefaults()
	vm, err := New(cfg, vmm.Console{}, Options{Virtio: []virtio.Device{dev}})
	require.NoError(t, err)
	require.Error(t, vm.Start(context.Background()))
	assert.Zero(t, dev.count(), "the caller owns the devices and closes them")
}

// TestVirtioDevicesSurviveRestarts: under the restart policy each boot
// gets a new PCI bus around the same device, which the VM never closes:
// its owner does.
func TestVirtioDevicesSurviveRestarts(t *testing.T) {
	requireKVM(t)
	dev := &closeCounter{}
	var out testutil.SyncBuffer
	cfg := vmm.Config{Kernel: guests.Build(t, guests.TripleFault), OnReboot: vmm.RebootRestart}.WithDefaults()
	vm, err := New(cfg, vmm.Console{Out: &out}, Options{Virtio: []virtio.Device{dev}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, vm.Start(ctx))
	deadline := time.Now().Add(2 * time.Minute)
	for strings.Count(out.String(), guests.TripleFaultOutput) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.Zero(t, dev.count(), "not closed while the VM restarts")
	require.NoError(t, vm.Stop(context.Background(), vmm.StopForce))
	_, err = vm.Wait()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, strings.Count(out.String(), guests.TripleFaultOutput), 2)
	assert.Zero(t, dev.count(), "the caller owns the devices and closes them")
}
