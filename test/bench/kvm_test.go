package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

func TestKVMCmdline(t *testing.T) {
	c, err := kvmCmdline()
	require.NoError(t, err)
	assert.Contains(t, c, "console=ttyS0 ")
	assert.NotContains(t, c, "quiet", "the bench times console lines the kernel prints only without quiet")
	param, err := initproto.EncodeCmd([]string{"true"})
	require.NoError(t, err)
	assert.Contains(t, c, param)
}

func TestIsNestedNoise(t *testing.T) {
	for line, noise := range map[string]bool{
		"kvmcompare: wisp --accel kvm run 1/5: m0 1ms": true,
		"kernel: kvm: SMP vm created":                  true,
		"kvmbench: kvmcompare: bad config":             true,
		"KVM: wisp vs qemu-system-x86_64":              false,
		"  wisp --accel kvm      12ms":                 false,
	} {
		assert.Equal(t, noise, isNestedNoise(line), line)
	}
}
