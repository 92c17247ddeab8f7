package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The label and UUID init matches root=LABEL=/UUID= against are read from a
// real ext4 superblock made by mkfs.ext4.
func TestExtSuperblockLabelAndUUID(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("SKIP: no mkfs.ext4 (install e2fsprogs): cannot make a filesystem to read")
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	const uuid = "3f0c2a4e-9b1d-4c6a-8e2f-0123456789ab"
	out, err := exec.Command(mkfs, "-q", "-F", "-L", "wisp-root", "-U", uuid, img, "8M").CombinedOutput()
	require.NoError(t, err, "%s", out)

	sb, err := readSuperblock(img)
	require.NoError(t, err)
	assert.Equal(t, "wisp-root", extLabel(sb))
	assert.Equal(t, uuid, extUUID(sb))

	_, err = readSuperblock("/proc/self/cmdline")
	assert.Error(t, err, "not a filesystem")
}

func TestResolveRootSpecs(t *testing.T) {
	_, err := resolveRoot("vda")
	assert.ErrorContains(t, err, "want /dev/NAME")
	_, err = resolveRoot("/dev/does-not-exist")
	assert.ErrorIs(t, err, errNoRoot)
	dev, err := resolveRoot("/dev/null")
	require.NoError(t, err)
	assert.Equal(t, "/dev/null", dev)
}
