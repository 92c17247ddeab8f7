package boot_test

import (
	"testing"

	"github.com/wisp-vmm/wisp/boot"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	kernel := readKernel(t)
	ram := func(size uint64) []boot.Region { return []boot.Region{{GuestAddr: 0, Size: size}} }
	require.NoError(t, boot.Check(boot.Config{Kernel: kernel, CPUs: 1, RAM: ram(256 << 20)}, 256<<20))

	err := boot.Check(boot.Config{Kernel: []byte("not a kernel at all, just some text"), CPUs: 1, RAM: ram(256 << 20)}, 256<<20)
	assert.ErrorIs(t, err, boot.ErrNotKernel)

	err = boot.Check(boot.Config{Kernel: kernel, Initrd: make([]byte, 200<<20), CPUs: 1, RAM: ram(128 << 20)}, 128<<20)
	assert.ErrorIs(t, err, boot.ErrInitrdTooLarge)
}
