package accel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

func fakeHost(t *testing.T, flags string, pvm bool) Host {
	dir := t.TempDir()
	cpuinfo := filepath.Join(dir, "cpuinfo")
	require.NoError(t, os.WriteFile(cpuinfo, []byte("processor\t: 0\nflags\t\t: fpu "+flags+" sse2\n"), 0o644))
	mods := filepath.Join(dir, "module")
	require.NoError(t, os.MkdirAll(mods, 0o755))
	if pvm {
		require.NoError(t, os.MkdirAll(filepath.Join(mods, "kvm_pvm"), 0o755))
	}
	return Host{KVMDevice: filepath.Join(dir, "kvm"), SysModule: mods, CPUInfo: cpuinfo}
}

func TestProbeMissingDevice(t *testing.T) {
	h := fakeHost(t, "svm", false)
	r := Probe(context.Background(), h, nil)
	assert.False(t, r.KVM)
	assert.Equal(t, "no "+h.KVMDevice, r.Reason)
	assert.Equal(t, vmm.AccelTCG, r.Choose(vmm.AccelAuto))
	assert.Equal(t, vmm.AccelKVM, r.Choose(vmm.AccelKVM), "an explicit choice is kept")
	assert.Contains(t, r.Findings, "CPU flag: svm")
}

func TestProbeNotAKVMDevice(t *testing.T) {
	h := fakeHost(t, "", true)
	require.NoError(t, os.WriteFile(h.KVMDevice, nil, 0o644))
	r := Probe(context.Background(), h, nil)
	assert.False(t, r.KVM)
	assert.Contains(t, r.Reason, "no KVM driver")
	assert.Contains(t, r.Findings[1], "PVM")
}

func TestProbePermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		// root opens anything; the errno mapping itself is tested in package kvm.
		t.Skip("running as root: a mode-000 file still opens, so permission denied cannot be provoked")
	}
	h := fakeHost(t, "vmx", false)
	require.NoError(t, os.WriteFile(h.KVMDevice, nil, 0o000))
	r := Probe(context.Background(), h, nil)
	assert.Equal(t, "permission denied on "+h.KVMDevice+" (add the user to group kvm)", r.Reason)
}

// TestProbeThisHost runs the real probe on this machine and checks that its
// verdict is consistent with what the machine is.
func TestProbeThisHost(t *testing.T) {
	h := DefaultHost("")
	failing := func(context.Context, string) error { return errors.New("emulation failure at xrstor") }
	r := Probe(context.Background(), h, failing)
	t.Logf("probe: kvm=%v reason=%q findings=%q took=%v", r.KVM, r.Reason, r.Findings, r.Took)
	assert.False(t, r.KVM, "a failing guest probe never yields KVM")
	if _, err := os.Stat(h.KVMDevice); err != nil {
		assert.Equal(t, "no /dev/kvm", r.Reason)
		return
	}
	if h.KVMIsPVM() {
		assert.Contains(t, r.Reason, "PVM")
	}
}
