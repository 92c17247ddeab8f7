package qemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

// hangGuard bounds a whole integration test so a broken backend fails the
// test instead of hanging the suite. It is not a performance assertion:
// boots take seconds.
const hangGuard = 3 * time.Minute

// testCmdline keeps the guest quiet: every console byte costs emulated
// UART time under TCG.
const testCmdline = "console=ttyS0 reboot=k panic=-1 quiet"

// syncBuffer collects console output written by the relay goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testVM is one running test guest.
type testVM struct {
	b       *Backend
	out     *syncBuffer
	markers chan marker
	dir     string
	pid     int
}

// marker is one byte the guest wrote to the boot-marker port.
type marker struct {
	code  byte
	since time.Duration
}

type vmSpec struct {
	initramfs initramfsOptions
	start     time.Time // Options.Start
	onReboot  vmm.RebootPolicy
	in        io.Reader
	ctx       context.Context // for Start; default: the test's hang guard
}

func startVM(t *testing.T, spec vmSpec) *testVM {
	t.Helper()
	requireQEMU(t)
	k := testKernel(t)
	if k.BuiltinDrivers {
		spec.initramfs.Modules = nil
	}
	if len(spec.initramfs.Modules) > 0 {
		if k.Modules == "" {
			t.Skip("SKIP: the test kernel's modules tree is missing (Debian's kernel has pvpanic and the ACPI button as modules): set WISP_TEST_MODULES")
		}
		spec.initramfs.ModulesDir = k.Modules
	}
	initrd := buildInitramfs(t, spec.initramfs)

	onReboot := spec.onReboot
	if onReboot == "" {
		onReboot = vmm.RebootExit
	}
	cfg := vmm.Config{
		Kernel:      k.Image,
		Initrd:      initrd,
		Cmdline:     testCmdline,
		CPUs:        1,
		MemoryBytes: 256 << 20,
		Console:     vmm.ConsoleStdio,
		Accel:       vmm.AccelTCG,
		OnReboot:    onReboot,
	}
	v := &testVM{out: &syncBuffer{}, markers: make(chan marker, 16), dir: t.TempDir()}
	opts := Options{
		RuntimeDir: v.dir,
		Log:        t.Output(), // QEMU's own messages, shown when a test fails
		Start:      spec.start,
		OnBootMarker: func(code byte, since time.Duration) {
			select {
			case v.markers <- marker{code, since}:
			default:
			}
		},
	}
	b, err := New(cfg, vmm.Console{In: spec.in, Out: v.out}, opts)
	require.NoError(t, err)
	v.b = b

	ctx := spec.ctx
	if ctx == nil {
		c, cancel := context.WithTimeout(context.Background(), hangGuard)
		t.Cleanup(cancel)
		ctx = c
	}
	require.NoError(t, b.Start(ctx))
	b.mu.Lock()
	v.pid = b.proc.Pid
	b.mu.Unlock()
	t.Cleanup(func() {
		// Whatever the test did, nothing may stay behind.
		_ = b.Stop(context.Background(), vmm.StopForce)
		_, _ = b.Wait()
		v.requireClean(t)
		if t.Failed() {
			t.Logf("guest console:\n%s", v.out.String())
		}
	})
	return v
}

// waitMarker blocks until the guest wrote its boot marker, and returns
// when it came (from Options.Start).
func (v *testVM) waitMarker(t *testing.T) time.Duration {
	t.Helper()
	select {
	case m := <-v.markers:
		require.Equal(t, byte(markerCode), m.code)
		return m.since
	case <-v.b.done:
		// The marker reader ends before done closes: prefer a marker
		// that is already there.
		select {
		case m := <-v.markers:
			require.Equal(t, byte(markerCode), m.code)
			return m.since
		default:
		}
		st, err := v.b.Wait()
		t.Fatalf("VM ended before its boot marker: %+v, %v\nconsole:\n%s", st, err, v.out.String())
	}
	return 0
}

// requireClean checks that QEMU is gone and the runtime dir is empty.
func (v *testVM) requireClean(t *testing.T) {
	t.Helper()
	err := syscall.Kill(v.pid, 0)
	assert.True(t, errors.Is(err, syscall.ESRCH), "qemu pid %d still exists: kill(0) = %v", v.pid, err)
	entries, err := os.ReadDir(v.dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "runtime dir %s not cleaned", v.dir)
}

func TestBootPoweroff(t *testing.T) {
	inR, inW := io.Pipe()
	defer inW.Close()
	origin := time.Now().Add(-time.Hour) // a start time well before Start
	v := startVM(t, vmSpec{
		in:        inR,
		start:     origin,
		initramfs: initramfsOptions{Script: "read line\necho \"got:$line\"\npoweroff -f"},
	})
	since := v.waitMarker(t)
	assert.Greater(t, since, time.Hour, "marker time must be measured from Options.Start")
	// The console's input path: the guest echoes a line typed after boot.
	_, err := io.WriteString(inW, "ping\n")
	require.NoError(t, err)

	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitPoweroff, st.Reason, st.Detail)
	out := v.out.String()
	assert.Contains(t, out, "WISP-HELLO")
	assert.Contains(t, out, "got:ping")
	assert.Empty(t, v.markers, "exactly one marker expected")
	v.requireClean(t)
}

func TestGuestReset(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{Script: "reboot -f"}})
	// Wait is safe from several goroutines; all see the same status.
	var wg sync.WaitGroup
	results := make([]vmm.ExitStatus, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := v.b.Wait()
			assert.NoError(t, err)
			results[i] = st
		}()
	}
	wg.Wait()
	for _, st := range results {
		assert.Equal(t, vmm.ExitReset, st.Reason, st.Detail)
	}
	v.requireClean(t)
}

func TestGuestResetRestartsInPlace(t *testing.T) {
	v := startVM(t, vmSpec{
		onReboot:  vmm.RebootRestart,
		initramfs: initramfsOptions{Script: "reboot -f"},
	})
	// Two boot markers from one QEMU: the guest rebooted and came back.
	v.waitMarker(t)
	v.waitMarker(t)
	require.NoError(t, v.b.Stop(context.Background(), vmm.StopForce))
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	v.requireClean(t)
}

func TestGuestPanic(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{
		Modules: pvpanicModules,
		Script:  "echo c > /proc/sysrq-trigger",
	}})
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitPanic, st.Reason, st.Detail)
	assert.Contains(t, v.out.String(), "Kernel panic")
	v.requireClean(t)
}

// idleScript keeps the guest running until the host stops it.
const idleScript = "while true; do sleep 1; done"

func TestPauseResume(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{Script: idleScript}})
	v.waitMarker(t)
	ctx := context.Background()

	require.NoError(t, v.b.Pause())
	s, err := v.b.Status(ctx)
	require.NoError(t, err)
	assert.False(t, s.Running)
	assert.Equal(t, "paused", s.Status)

	require.NoError(t, v.b.Resume())
	s, err = v.b.Status(ctx)
	require.NoError(t, err)
	assert.True(t, s.Running)
	assert.Equal(t, "running", s.Status)

	require.NoError(t, v.b.Stop(ctx, vmm.StopForce))
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	v.requireClean(t)

	// A VM that ended refuses control commands and Stop is a no-op.
	require.ErrorIs(t, v.b.Pause(), ErrNotRunning)
	require.ErrorIs(t, v.b.Resume(), ErrNotRunning)
	require.NoError(t, v.b.Stop(ctx, vmm.StopForce))
}

// powerButtonSetup finds the ACPI power button's event device and opens it
// before the boot marker (evdev drops events nobody has open); the script
// then powers off on its first event, as a desktop's logind would.
const powerButtonSetup = `mount -t devtmpfs dev /dev
for e in /sys/class/input/event*; do
  grep -q "Power Button" $e/device/name && button=/dev/input/${e##*/}
done
[ -c "$button" ] || { echo WISP-NO-BUTTON; poweroff -f; }
exec 3<$button`

func TestStopGracefulGuestPowersOff(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{
		Modules: powerButtonModules,
		Setup:   powerButtonSetup,
		Script:  "dd of=/dev/null bs=24 count=1 <&3 && echo WISP-BUTTON\npoweroff -f",
	}})
	select {
	case <-v.markers:
	case <-v.b.done:
		if strings.Contains(v.out.String(), "WISP-NO-BUTTON") {
			t.Skip("SKIP: the test kernel has no ACPI power button event device (needs CONFIG_ACPI_BUTTON and CONFIG_INPUT_EVDEV)")
		}
		v.waitMarker(t) // reports the failure
	}
	// ctx is only a hang guard here: the guest powers off by itself.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	require.NoError(t, v.b.Stop(ctx, vmm.StopGraceful))
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	assert.Contains(t, st.Detail, "guest powered off")
	assert.Contains(t, v.out.String(), "WISP-BUTTON")
	v.requireClean(t)
}

func TestStopGracefulFallsBackToForce(t *testing.T) {
	// The test guest has no ACPI button driver (a module in Debian's
	// kernel), so the power button does nothing and Stop must force.
	v := startVM(t, vmSpec{initramfs: initramfsOptions{Script: idleScript}})
	v.waitMarker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, v.b.Stop(ctx, vmm.StopGraceful))
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	v.requireClean(t)
}

func TestStartContextCancelKills(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := startVM(t, vmSpec{ctx: ctx, initramfs: initramfsOptions{Script: idleScript}})
	v.waitMarker(t)
	cancel()
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	assert.Contains(t, st.Detail, "context")
	v.requireClean(t)
}

func TestQEMUDyingIsBackendFailure(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{Script: idleScript}})
	v.waitMarker(t)
	// Kill only the QEMU this test started, by its pid.
	require.NoError(t, syscall.Kill(v.pid, syscall.SIGKILL))
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitBackendFailure, st.Reason)
	assert.Contains(t, st.Detail, "killed")
	v.requireClean(t)
}

func TestStartFailureReportsQEMUError(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	notAKernel := dir + "/vmlinuz"
	require.NoError(t, os.WriteFile(notAKernel, []byte("this is not a kernel"), 0o644))
	rt := t.TempDir()
	b, err := New(vmm.Config{Kernel: notAKernel, CPUs: 1, MemoryBytes: 64 << 20},
		vmm.Console{Out: io.Discard}, Options{RuntimeDir: rt})
	require.NoError(t, err)
	err = b.Start(context.Background())
	require.ErrorIs(t, err, ErrStartFailed)
	// QEMU's own complaint reaches the user.
	assert.Contains(t, err.Error(), "kernel")
	st, werr := b.Wait()
	require.Error(t, werr)
	assert.Equal(t, vmm.ExitBackendFailure, st.Reason)
	entries, err := os.ReadDir(rt)
	require.NoError(t, err)
	assert.Empty(t, entries)
	require.ErrorIs(t, b.Start(context.Background()), ErrAlreadyStarted)
}

func TestLostQMPKillsQEMU(t *testing.T) {
	v := startVM(t, vmSpec{initramfs: initramfsOptions{Script: idleScript}})
	v.waitMarker(t)
	// Break wisp's control connection while QEMU runs on.
	v.b.mu.Lock()
	client := v.b.qmp
	v.b.mu.Unlock()
	require.NoError(t, client.Close())
	st, err := v.b.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitBackendFailure, st.Reason)
	assert.Contains(t, st.Detail, "lost the QMP connection")
	v.requireClean(t)
}
