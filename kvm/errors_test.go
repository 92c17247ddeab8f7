package kvm

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestOpenErrorMapping(t *testing.T) {
	tests := []struct {
		errno    unix.Errno
		sentinel error
		hint     string
	}{
		{unix.ENOENT, ErrNoDevice, "kvm module"},
		{unix.ENODEV, ErrNoDevice, "kvm_intel or kvm_amd"},
		{unix.ENXIO, ErrNoDevice, "kvm_intel or kvm_amd"},
		{unix.EACCES, ErrPermission, "add the user to group kvm"},
		{unix.EPERM, ErrPermission, "add the user to group kvm"},
		{unix.ENOTTY, ErrNoDevice, "not a KVM device"},
		{unix.EBUSY, nil, "/dev/kvm"},
	}
	for _, tt := range tests {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			err := openError("/dev/kvm", tt.errno)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.errno, "the errno stays visible")
			if tt.sentinel != nil {
				assert.ErrorIs(t, err, tt.sentinel)
			} else {
				assert.False(t, errors.Is(err, ErrNoDevice) || errors.Is(err, ErrPermission))
			}
			assert.Contains(t, err.Error(), tt.hint)
			assert.Contains(t, err.Error(), "/dev/kvm")
		})
	}
}

// These two run anywhere: neither needs a KVM device.
func TestOpenMissingPath(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "no-kvm-here"))
	require.ErrorIs(t, err, ErrNoDevice)
	assert.ErrorIs(t, err, unix.ENOENT)
	t.Log(err)
}

func TestOpenNotKVM(t *testing.T) {
	// /dev/null opens read-write but answers KVM_GET_API_VERSION with ENOTTY.
	_, err := Open("/dev/null")
	require.ErrorIs(t, err, ErrNoDevice)
	assert.ErrorIs(t, err, unix.ENOTTY)
	assert.Contains(t, err.Error(), "not a KVM device")
	t.Log(err)
}
