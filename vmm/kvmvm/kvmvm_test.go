package kvmvm

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/test/guests"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
)

// requireKVM skips, saying why, when this machine cannot run KVM guests.
func requireKVM(t *testing.T) {
	t.Helper()
	sys, err := kvm.Open(vmm.DefaultKVM)
	if err != nil {
		t.Skipf("no usable /dev/kvm (%v): test/nested runs these tests inside a VM with nested KVM", err)
	}
	sys.Close()
}

// boot runs a guest to its end (bounded by a generous deadline that only a
// hung VMM reaches) and returns its console output and exit status.
func runGuest(t *testing.T, cfg vmm.Config, opts Options) (string, vmm.ExitStatus) {
	t.Helper()
	var out testutil.SyncBuffer
	cfg = cfg.WithDefaults()
	vm, err := New(cfg, vmm.Console{Out: &out}, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, vm.Start(ctx))
	st, err := vm.Wait()
	require.NoError(t, err)
	require.NotEqual(t, vmm.ExitStopped, st.Reason, "the guest did not end by itself: %s; output:\n%s", st.Detail, out.String())
	return out.String(), st
}

func TestLongModeGuestPowersOff(t *testing.T) {
	requireKVM(t)
	var mu sync.Mutex
	var markers []byte
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.LongMode)}, Options{
		OnBootMarker: func(code byte, _ time.Duration) {
			mu.Lock()
			markers = append(markers, code)
			mu.Unlock()
		},
	})
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	assert.Contains(t, out, guests.LongModeOutput)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []byte{guests.BootMarker}, markers)
}

func TestPVHGuestPowersOff(t *testing.T) {
	requireKVM(t)
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.PVH)}, Options{})
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	assert.Contains(t, out, guests.PVHOutput)
}

// mmioRecorder answers the MMIO guest: it keeps what is written and returns
// it, byte-swapped, from the next word so the guest proves the round trip.
type mmioRecorder struct {
	mu      sync.Mutex
	written uint32
	writes  int
}

func (m *mmioRecorder) Read(offset uint64, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if offset == 4 && len(data) == 4 {
		binary.LittleEndian.PutUint32(data, m.written^0xffffffff)
	}
	return nil
}

func (m *mmioRecorder) Write(offset uint64, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if offset == 0 && len(data) == 4 {
		m.written = binary.LittleEndian.Uint32(data)
		m.writes++
	}
	return nil
}

func TestMMIOReachesDevice(t *testing.T) {
	requireKVM(t)
	dev := &mmioRecorder{}
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.MMIO)}, Options{
		MMIO: []MMIODevice{{Base: guests.MMIOWriteAddr, Length: 8, Device: dev}},
	})
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	assert.Equal(t, 1, dev.writes)
	assert.Equal(t, uint32(guests.MMIOWriteValue), dev.written)
	assert.Contains(t, out, guests.MMIOOutput(guests.MMIOWriteValue^0xffffffff))
}

func TestTripleFaultIsReset(t *testing.T) {
	requireKVM(t)
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.TripleFault)}, Options{})
	assert.Equal(t, vmm.ExitReset, st.Reason, st.Detail)
	assert.Contains(t, out, guests.TripleFaultOutput)
	assert.Equal(t, vmm.CodeReset, vmm.ExitCode(st))
}

func TestResetRestartsUnderRestartPolicy(t *testing.T) {
	requireKVM(t)
	var out testutil.SyncBuffer
	cfg := vmm.Config{Kernel: guests.Build(t, guests.TripleFault), OnReboot: vmm.RebootRestart}.WithDefaults()
	vm, err := New(cfg, vmm.Console{Out: &out}, Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, vm.Start(ctx))
	// The guest triple-faults each boot; wait until it has booted three times.
	deadline := time.Now().Add(2 * time.Minute)
	for bytes.Count([]byte(out.String()), []byte(guests.TripleFaultOutput)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, vm.Stop(context.Background(), vmm.StopForce))
	st, err := vm.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason)
	assert.GreaterOrEqual(t, bytes.Count([]byte(out.String()), []byte(guests.TripleFaultOutput)), 3)
}

func TestSMPEachVCPUReports(t *testing.T) {
	requireKVM(t)
	const cpus = 2
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.SMP), CPUs: cpus}, Options{
		StartAllCPUs: true,
		AfterLoad: func(mem GuestMemory) error {
			var n [4]byte
			binary.LittleEndian.PutUint32(n[:], cpus)
			return mem.WriteAt(n[:], guests.SMPExpectedAddr)
		},
	})
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	for id := 0; id < cpus; id++ {
		assert.Contains(t, out, guests.SMPCPUOutput(id))
	}
	assert.Contains(t, out, guests.SMPOutput(cpus))
}

func TestRealModePauseResumeStop(t *testing.T) {
	requireKVM(t)
	var out testutil.SyncBuffer
	cfg := vmm.Config{Kernel: guests.Build(t, guests.RealMode)}.WithDefaults()
	vm, err := New(cfg, vmm.Console{Out: &out}, Options{FlatBinary: true})
	require.NoError(t, err)
	require.NoError(t, vm.Start(context.Background()))
	deadline := time.Now().Add(time.Minute)
	for out.String() != guests.RealModeOutput && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	assert.Equal(t, guests.RealModeOutput, out.String())
	// The guest now sits in HLT inside KVM: pause must still get every
	// vCPU out, and stop must end a paused VM.
	require.NoError(t, vm.Pause())
	require.NoError(t, vm.Resume())
	require.NoError(t, vm.Pause())
	require.NoError(t, vm.Stop(context.Background(), vmm.StopForce))
	st, err := vm.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason)
	assert.ErrorIs(t, vm.Pause(), ErrNotRunning)
}

func TestCancelStopsVM(t *testing.T) {
	requireKVM(t)
	cfg := vmm.Config{Kernel: guests.Build(t, guests.RealMode)}.WithDefaults()
	vm, err := New(cfg, vmm.Console{}, Options{FlatBinary: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, vm.Start(ctx))
	cancel()
	st, err := vm.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason)
}

func TestMissingKVMDevice(t *testing.T) {
	cfg := vmm.Config{Kernel: "/nonexistent", KVMDevice: t.TempDir() + "/kvm"}.WithDefaults()
	vm, err := New(cfg, vmm.Console{}, Options{})
	require.NoError(t, err)
	err = vm.Start(context.Background())
	require.ErrorIs(t, err, kvm.ErrNoDevice)
}

func TestGSIRoutes(t *testing.T) {
	routes := gsiRoutes()
	ioapic := map[uint32]uint32{}
	for _, r := range routes {
		if r.IRQChip == kvm.IRQChipIOAPIC {
			ioapic[r.GSI] = r.Pin
		}
	}
	assert.Equal(t, uint32(2), ioapic[0], "the PIT's IRQ 0 arrives on IOAPIC pin 2")
	_, cascade := ioapic[2]
	assert.False(t, cascade, "GSI 2 is the PIC cascade, not routed")
	assert.Equal(t, uint32(4), ioapic[4])
	assert.Equal(t, uint32(23), ioapic[23])
	assert.Len(t, ioapic, ioapicPins-1)
}

func TestProbeGuest(t *testing.T) {
	requireKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := RunProbe(ctx, vmm.DefaultKVM, probe.Image())
	if accel.DefaultHost("").KVMIsPVM() {
		require.ErrorIs(t, err, ErrProbeFailed)
		assert.Contains(t, err.Error(), "emulation failure")
		return
	}
	require.NoError(t, err, "KVM that runs unmodified guests passes every probe step")

	r := accel.Probe(ctx, accel.DefaultHost(vmm.DefaultKVM), func(ctx context.Context, dev string) error {
		return RunProbe(ctx, dev, probe.Image())
	})
	assert.True(t, r.KVM, "reason: %s, findings: %q", r.Reason, r.Findings)
	assert.Equal(t, vmm.AccelKVM, r.Choose(vmm.AccelAuto))
}

func TestProbeRejectsBrokenImage(t *testing.T) {
	requireKVM(t)
	err := RunProbe(context.Background(), vmm.DefaultKVM, []byte("not an ELF"))
	require.Error(t, err)
	assert.ErrorIs(t, err, boot.ErrNotKernel)
}

func TestEmulationFailureIsReportedInOneLine(t *testing.T) {
	requireKVM(t)
	out, st := runGuest(t, vmm.Config{Kernel: guests.Build(t, guests.EmuFail)}, Options{})
	assert.Contains(t, out, guests.EmuFailOutput)
	require.Equal(t, vmm.ExitEmulationFailure, st.Reason, st.Detail)
	assert.Equal(t, vmm.CodeEmulationFailure, vmm.ExitCode(st))
	assert.Regexp(t, fmt.Sprintf(`^vCPU 0: KVM internal error \(.+\) at RIP %#x`, guests.EmuFailTarget), st.Detail)
	assert.NotContains(t, st.Detail, "\n")
}
