package vhostdevs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/qemu"
)

// fakeDevice is a device that never runs: enough to render and serve.
type fakeDevice struct {
	typ      virtio.DeviceType
	sizes    []uint16
	features uint64
	config   []byte
}

func (d *fakeDevice) Type() virtio.DeviceType { return d.typ }
func (d *fakeDevice) Features() uint64        { return d.features | virtio.FeatureVersion1 }
func (d *fakeDevice) QueueSizes() []uint16    { return d.sizes }
func (d *fakeDevice) ReadConfig(off uint64, data []byte) error {
	if off > uint64(len(d.config)) || uint64(len(data)) > uint64(len(d.config))-off {
		return fmt.Errorf("config [%d, +%d): %w", off, len(data), virtio.ErrBadConfig)
	}
	copy(data, d.config[off:])
	return nil
}
func (d *fakeDevice) WriteConfig(uint64, []byte) error { return virtio.ErrBadConfig }
func (d *fakeDevice) Activate(virtio.Activation) error { return nil }
func (d *fakeDevice) Reset() error                     { return nil }
func (d *fakeDevice) Close() error                     { return nil }

func TestFrontEnd(t *testing.T) {
	mac := []byte{0x52, 0x54, 0, 1, 2, 3}
	for _, tc := range []struct {
		name string
		dev  *fakeDevice
		want qemu.Device
		err  error
	}{
		{
			name: "disk with one queue",
			dev:  &fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{256}},
			want: qemu.Device{Device: "vhost-user-blk-pci,id=x0,chardev=wispx0,num-queues=1,queue-size=256"},
		},
		{
			name: "disk with four queues, one smaller and not a power of two",
			dev:  &fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{256, 256, 100, 256}},
			want: qemu.Device{Device: "vhost-user-blk-pci,id=x0,chardev=wispx0,num-queues=4,queue-size=64"},
		},
		{
			name: "disk with huge queues",
			dev:  &fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{32768}},
			want: qemu.Device{Device: "vhost-user-blk-pci,id=x0,chardev=wispx0,num-queues=1,queue-size=1024"},
		},
		{
			name: "rng",
			dev:  &fakeDevice{typ: virtio.TypeRNG, sizes: []uint16{64}},
			want: qemu.Device{Device: "vhost-user-rng-pci,id=x0,chardev=wispx0"},
		},
		{
			name: "rng queue smaller than QEMU's",
			dev:  &fakeDevice{typ: virtio.TypeRNG, sizes: []uint16{2}},
			err:  ErrUnsupported,
		},
		{
			name: "net with a MAC address and a control queue",
			dev:  &fakeDevice{typ: virtio.TypeNet, sizes: []uint16{256, 512, 64}, features: netFeatureMAC, config: mac},
			want: qemu.Device{
				Netdev: "vhost-user,id=x0nd,chardev=wispx0",
				Device: "virtio-net-pci,id=x0,netdev=x0nd,vectors=0,rx_queue_size=256,tx_queue_size=512,mac=52:54:00:01:02:03",
			},
		},
		{
			name: "net without a MAC address",
			dev:  &fakeDevice{typ: virtio.TypeNet, sizes: []uint16{4096, 300}},
			want: qemu.Device{
				Netdev: "vhost-user,id=x0nd,chardev=wispx0",
				Device: "virtio-net-pci,id=x0,netdev=x0nd,vectors=0,rx_queue_size=1024,tx_queue_size=256",
			},
		},
		{
			name: "net queues below QEMU's minimum",
			dev:  &fakeDevice{typ: virtio.TypeNet, sizes: []uint16{128, 256}},
			err:  ErrUnsupported,
		},
		{
			name: "net with one queue",
			dev:  &fakeDevice{typ: virtio.TypeNet, sizes: []uint16{256}},
			err:  ErrUnsupported,
		},
		{
			name: "net whose MAC cannot be read",
			dev:  &fakeDevice{typ: virtio.TypeNet, sizes: []uint16{256, 256}, features: netFeatureMAC},
			err:  virtio.ErrBadConfig,
		},
		{
			name: "no queues",
			dev:  &fakeDevice{typ: virtio.TypeBlock},
			err:  ErrUnsupported,
		},
		{
			name: "a type QEMU has no vhost-user front end for",
			dev:  &fakeDevice{typ: 3, sizes: []uint16{64}},
			err:  ErrUnsupported,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := frontEnd(tc.dev, "x0")
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestAttach: every device gets a listening socket in the runtime
// directory and a chardev naming it; Close stops the server and removes
// the socket.
func TestAttach(t *testing.T) {
	dir := shortTempDir(t)
	devs := []virtio.Device{
		&fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{128}},
		&fakeDevice{typ: virtio.TypeRNG, sizes: []uint16{8}},
		&fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{128, 128}},
		&fakeDevice{typ: virtio.TypeNet, sizes: []uint16{256, 256}},
	}
	got, err := Attach(devs, Options{})(dir)
	require.NoError(t, err)
	require.Len(t, got, 4)
	for i, id := range []string{"blk0", "rng0", "blk1", "net0"} {
		path := filepath.Join(dir, id+".sock")
		assert.Equal(t, "socket,id=wisp"+id+",path="+path, got[i].Chardev)
		assert.Contains(t, got[i].Device, "id="+id+",")
		// QEMU's side: the server answers.
		c, err := net.Dial("unix", path)
		require.NoError(t, err, id)
		require.NoError(t, c.Close())
	}
	assert.Equal(t, "vhost-user,id=net0nd,chardev=wispnet0", got[3].Netdev)
	for _, d := range got {
		require.NoError(t, d.Close())
		require.NoError(t, d.Close(), "a second Close is harmless")
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "sockets removed")
	requireNoGoroutine(t, "vhostuser.")
}

// TestAttachFailure: a device that cannot be attached fails the whole
// set, and the servers already started are stopped.
func TestAttachFailure(t *testing.T) {
	dir := shortTempDir(t)
	devs := []virtio.Device{
		&fakeDevice{typ: virtio.TypeBlock, sizes: []uint16{128}},
		&fakeDevice{typ: 3, sizes: []uint16{64}},
	}
	_, err := Attach(devs, Options{})(dir)
	require.ErrorIs(t, err, ErrUnsupported)
	assert.Contains(t, err.Error(), "device 1")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
	requireNoGoroutine(t, "vhostuser.")

	long := filepath.Join(dir, "a-directory-name-long-enough-to-push-the-socket-path-past-the-limit-of-unix-addresses")
	require.NoError(t, os.Mkdir(long, 0o700))
	_, err = Attach(devs[:1], Options{})(long)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "longer than")
}

// TestStartFailureStopsServers: when QEMU cannot start the VM, the backend
// still stops the servers it was given.
func TestStartFailureStopsServers(t *testing.T) {
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		t.Skipf("SKIP: %v", qemu.ErrNotInstalled)
	}
	dir := shortTempDir(t)
	bogus := filepath.Join(dir, "not-a-kernel")
	require.NoError(t, os.WriteFile(bogus, []byte("no kernel here"), 0o600))
	cfg := vmm.Config{Kernel: bogus, CPUs: 1, MemoryBytes: 64 << 20, Accel: vmm.AccelTCG, OnReboot: vmm.RebootExit}
	b, err := qemu.New(cfg, vmm.Console{}, qemu.Options{
		RuntimeDir: dir,
		Devices:    Attach([]virtio.Device{&fakeDevice{typ: virtio.TypeRNG, sizes: []uint16{8}}}, Options{}),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = b.Start(ctx)
	require.Error(t, err)
	assert.True(t, errors.Is(err, qemu.ErrStartFailed), "%v", err)
	_, _ = b.Wait()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "only the bogus kernel is left: %v", entries)
	requireNoGoroutine(t, "vhostuser.")
}

// shortTempDir is a temporary directory with a short path: unix socket
// paths are limited to 107 bytes and t.TempDir's can be long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wvu")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
