package kvm_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
	"github.com/wisp-vmm/wisp/vmm/machine"
)

// TestMachineLifecycleOnKVM drives a Linux guest on wisp's KVM backend
// through the library a manager uses: start, pause (the spinning guest
// costs no CPU), resume (it spins again), a graceful stop that the guest
// answers by powering off, and the events of each step.
func TestMachineLifecycleOnKVM(t *testing.T) {
	sys, err := kvm.Open(vmm.DefaultKVM)
	if err != nil {
		t.Skipf("no usable /dev/kvm (%v): test/nested runs this test inside a VM with nested KVM", err)
	}
	sys.Close()
	if accel.DefaultHost("").KVMIsPVM() {
		t.Skip("SKIP: KVM here is PVM, which cannot run Linux to userspace (see TestMinimalLinuxOnKVM)")
	}
	vmlinux, initrd := minimalLinux(t)
	spin, err := initproto.EncodeCmd([]string{"sh", "-c", "echo wisp-spinning; while :; do :; done"})
	require.NoError(t, err)
	cfg := vmm.Config{
		Kernel:  vmlinux,
		Initrd:  initrd,
		Cmdline: "console=ttyS0 noxsave reboot=k panic=-1 " + spin,
		Accel:   vmm.AccelKVM,
	}
	var out testutil.SyncBuffer
	var mu sync.Mutex
	var states []string
	m, err := machine.New(context.Background(), cfg, machine.Options{
		ID:      "kvm1",
		Console: vmm.Console{Out: &out},
		OnEvent: func(e machine.Event) {
			mu.Lock()
			states = append(states, e.To.String())
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, vmm.AccelKVM, m.Info().Accel)
	require.NoError(t, m.Start(context.Background()))

	// A bound only a hung guest reaches: nested KVM under TCG is slow.
	deadline := time.Now().Add(5 * time.Minute)
	for !strings.Contains(out.String(), "wisp-spinning") {
		select {
		case <-m.Done():
			st, _ := m.Wait()
			t.Fatalf("guest ended before it spun (%s: %s); console:\n%s", st.Reason, st.Detail, out.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "the guest never spun; console:\n%s", out.String())
		time.Sleep(50 * time.Millisecond)
	}

	require.NoError(t, m.Pause())
	assert.Equal(t, vmm.StatePaused, m.State())
	before := ownCPUTicks(t)
	time.Sleep(time.Second)
	assert.LessOrEqual(t, ownCPUTicks(t)-before, uint64(20), "paused vCPUs do not run the spinning guest (ticks of 10 ms)")

	require.NoError(t, m.Resume())
	before = ownCPUTicks(t)
	time.Sleep(time.Second)
	assert.Greater(t, ownCPUTicks(t)-before, uint64(30), "the resumed guest spins again")

	require.NoError(t, m.Stop(context.Background(), 2*time.Minute))
	st, err := m.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, "the guest heard the power button and powered off: %s; console:\n%s", st.Detail, out.String())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"starting", "running", "paused", "running", "stopping", "stopped"}, states)
}

// ownCPUTicks is this process's user+system CPU time so far, vCPU threads
// included.
func ownCPUTicks(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	require.NoError(t, err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, err := strconv.ParseUint(f[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseUint(f[12], 10, 64)
	require.NoError(t, err)
	return utime + stime
}
