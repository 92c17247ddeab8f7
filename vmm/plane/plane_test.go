package plane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/vmm"
)

func image(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	require.NoError(t, os.Truncate(p, 1<<20))
	return p
}

// Devices come in guest order (disks, NICs, RNG), a writable image stays
// locked until Close, and a second plane on it is refused with a
// configuration error that names the image.
func TestOpenOrderLockAndClose(t *testing.T) {
	a, b := image(t), image(t)
	cfg := vmm.Config{Disks: []vmm.Disk{{Path: a}, {Path: b, ReadOnly: true}}, RNG: true}
	p, err := Open(t.Context(), cfg, nil)
	require.NoError(t, err)
	var types []virtio.DeviceType
	for _, d := range p.Devices() {
		types = append(types, d.Type())
	}
	assert.Equal(t, []virtio.DeviceType{virtio.TypeBlock, virtio.TypeBlock, virtio.TypeRNG}, types)

	_, err = Open(t.Context(), vmm.Config{Disks: []vmm.Disk{{Path: a}}}, nil)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.ErrorContains(t, err, a)
	assert.ErrorContains(t, err, "in use")

	require.NoError(t, p.Close())
	again, err := Open(t.Context(), vmm.Config{Disks: []vmm.Disk{{Path: a}}}, nil)
	require.NoError(t, err, "Close released the lock")
	require.NoError(t, again.Close())
}

// When a later device fails, the earlier ones are closed: the first image
// is unlocked again.
func TestOpenFailureReleasesEarlierDevices(t *testing.T) {
	a := image(t)
	missing := filepath.Join(t.TempDir(), "missing.img")
	_, err := Open(t.Context(), vmm.Config{Disks: []vmm.Disk{{Path: a}, {Path: missing}}}, nil)
	require.Error(t, err)
	assert.ErrorContains(t, err, missing)
	p, err := Open(t.Context(), vmm.Config{Disks: []vmm.Disk{{Path: a}}}, nil)
	require.NoError(t, err, "the first image was released")
	require.NoError(t, p.Close())
}

// The user-mode network needs no privileges; its NIC sits after the disks.
func TestOpenUserNetwork(t *testing.T) {
	mac, err := vmm.RandomMAC()
	require.NoError(t, err)
	cfg := vmm.Config{Disks: []vmm.Disk{{Path: image(t)}}, Nets: []vmm.Net{{Mode: vmm.NetUser, MAC: mac}}}
	p, err := Open(t.Context(), cfg, nil)
	require.NoError(t, err)
	devs := p.Devices()
	require.Len(t, devs, 2)
	assert.Equal(t, virtio.TypeNet, devs[1].Type())
	require.NoError(t, p.Close())
}
