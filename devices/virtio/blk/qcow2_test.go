package blk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newQcow2 converts a 4 MiB raw disk holding a pattern into a compressed
// qcow2 image with qemu-img (Debian package qemu-utils).
func newQcow2(t *testing.T) (path string, contents []byte) {
	t.Helper()
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not found (apt-get install qemu-utils): cannot build qcow2 test images")
	}
	dir := t.TempDir()
	contents = make([]byte, testDiskSize)
	copy(contents, pattern(1<<20, 3))
	copy(contents[3<<20:], bytes.Repeat([]byte("wisp"), 1<<18))
	raw := filepath.Join(dir, "ref.raw")
	require.NoError(t, os.WriteFile(raw, contents, 0o644))
	path = filepath.Join(dir, "disk.qcow2")
	out, err := exec.Command(qemuImg, "convert", "-c", "-f", "raw", "-O", "qcow2", raw, path).CombinedOutput()
	require.NoError(t, err, "qemu-img: %s", out)
	return path, contents
}

func readDisk(t *testing.T, d *Device, sector uint64, n int) []byte {
	t.Helper()
	c := request(typeIn, sector, nil, 0)
	half := make([]byte, n/2)
	rest := make([]byte, n-n/2+1)
	c.Writable = [][]byte{half, rest}
	_, err := d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	return append(half, rest[:len(rest)-1]...)
}

func TestQcow2Disk(t *testing.T) {
	path, want := newQcow2(t)
	orig := bytes.Clone(want)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	d, err := Open(Options{Path: path, Format: "qcow2", OverlayDir: t.TempDir()})
	require.NoError(t, err)
	assert.Equal(t, uint64(testDiskSize/SectorSize), d.Capacity())
	assert.Zero(t, d.Features()&FeatureRO, "writable, through the overlay")
	assert.True(t, bytes.Equal(want, readDisk(t, d, 0, testDiskSize)))

	// Writes land in the overlay; reads mix both layers.
	c := request(typeOut, 7, pattern(3*SectorSize, 9), 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	copy(want[7*SectorSize:], pattern(3*SectorSize, 9))
	c = request(typeWriteZeroes, 0, zeroSegs(zeroSeg{off: 6000, n: 16}), 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	clear(want[6000*SectorSize : 6016*SectorSize])
	c = request(typeDiscard, 0, zeroSegs(zeroSeg{off: 100, n: 8}), 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	c = request(typeFlush, 0, nil, 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want[:8*SectorSize], readDisk(t, d, 0, 8*SectorSize)), "straddles both layers")
	assert.True(t, bytes.Equal(want, readDisk(t, d, 0, testDiskSize)))

	// The image is shared-locked: readers may join, writers may not.
	other, err := Open(Options{Path: path, Format: "qcow2", ReadOnly: true})
	require.NoError(t, err)
	require.NoError(t, other.Close())
	_, err = Open(Options{Path: path, Format: FormatRaw})
	require.ErrorIs(t, err, ErrLocked)

	require.NoError(t, d.Close())
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the image itself never changes")

	// The overlay went away with the device.
	d, err = Open(Options{Path: path, Format: "qcow2"})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, orig[7*SectorSize:8*SectorSize], readDisk(t, d, 7, SectorSize))
}

func TestQcow2ReadOnly(t *testing.T) {
	path, want := newQcow2(t)
	d := openDisk(t, Options{Path: path, Format: "qcow2", ReadOnly: true})
	assert.NotZero(t, d.Features()&FeatureRO)
	assert.True(t, bytes.Equal(want[:1<<20], readDisk(t, d, 0, 1<<20)))
	c := request(typeOut, 0, pattern(SectorSize, 1), 0)
	_, err := d.handle(c)
	require.Error(t, err)
	assert.Equal(t, byte(statusIOErr), status(c))
}

func TestOpenFormatErrors(t *testing.T) {
	raw := newImage(t, testDiskSize)
	_, err := Open(Options{Path: raw, Format: "vmdk"})
	require.ErrorIs(t, err, ErrFormat)
	require.ErrorContains(t, err, `format "vmdk"`)
	_, err = Open(Options{Path: raw, Format: "qcow2"})
	require.ErrorIs(t, err, ErrFormatMismatch)
	_, err = Open(Options{Path: raw + ".missing", Format: "qcow2"})
	require.ErrorIs(t, err, os.ErrNotExist)
}
