package kconfig

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sampleConfig = `#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_64BIT=y
CONFIG_SMP=y
# CONFIG_MODULES is not set
CONFIG_NR_CPUS=64
CONFIG_VIRTIO=y
CONFIG_VIRTIO_NET=m
`

func TestParse(t *testing.T) {
	c, err := Parse(sampleConfig)
	require.NoError(t, err)
	assert.Equal(t, Config{
		"CONFIG_CC_VERSION_TEXT": `"gcc (Debian 12.2.0-14) 12.2.0"`,
		"CONFIG_64BIT":           "y",
		"CONFIG_SMP":             "y",
		"CONFIG_MODULES":         "n",
		"CONFIG_NR_CPUS":         "64",
		"CONFIG_VIRTIO":          "y",
		"CONFIG_VIRTIO_NET":      "m",
	}, c)
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, text := range []string{"CONFIG_X", "FOO=y", "CONFIG_A-B=y"} {
		_, err := Parse(text)
		require.Error(t, err, text)
	}
}

func TestVerify(t *testing.T) {
	got, err := Parse(sampleConfig)
	require.NoError(t, err)
	tests := []struct {
		name     string
		fragment string
		errParts []string
	}{
		{"all match", "CONFIG_64BIT=y\nCONFIG_SMP=y\n# CONFIG_MODULES is not set\n", nil},
		{"absent means not set", "# CONFIG_PVH is not set\n", nil},
		{"dropped option", "CONFIG_PVH=y\n", []string{"CONFIG_PVH: want y, got absent"}},
		{"module instead of built in", "CONFIG_VIRTIO_NET=y\n", []string{"CONFIG_VIRTIO_NET: want y, got m"}},
		{"set but should not be", "# CONFIG_SMP is not set\n", []string{"CONFIG_SMP: want n, got y"}},
		{"value differs", "CONFIG_NR_CPUS=8\n", []string{"CONFIG_NR_CPUS: want 8, got 64"}},
		{"several, sorted", "CONFIG_ZZZ=y\nCONFIG_AAA=y\n", []string{"CONFIG_AAA: want y, got absent; CONFIG_ZZZ: want y, got absent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := Parse(tc.fragment)
			require.NoError(t, err)
			err = Verify(want, got)
			if tc.errParts == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrMismatch)
			for _, p := range tc.errParts {
				assert.Contains(t, err.Error(), p)
			}
		})
	}
}

func TestMicroVMFragment(t *testing.T) {
	c, err := Parse(MicroVM())
	require.NoError(t, err)
	for _, name := range []string{
		"CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_CONSOLE",
		"CONFIG_HW_RANDOM_VIRTIO", "CONFIG_VIRTIO_VSOCKETS", "CONFIG_VIRTIO_BALLOON",
		"CONFIG_PVH", "CONFIG_KVM_GUEST", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_DEVTMPFS_MOUNT",
		"CONFIG_EXT4_FS", "CONFIG_RD_GZIP", "CONFIG_PVPANIC", "CONFIG_RTC_DRV_CMOS",
	} {
		assert.Equal(t, "y", c[name], name)
	}
	assert.Equal(t, "n", c["CONFIG_MODULES"])
}
