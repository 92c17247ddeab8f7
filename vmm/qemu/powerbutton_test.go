package qemu_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/test/fixtures"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/qemu"
)

// powerButtonGuard bounds one booted test so a broken guest fails it
// instead of hanging the suite. It is not a performance assertion.
const powerButtonGuard = 5 * time.Minute

// What init prints when the button ends the guest, and the kernel's last
// line (KERN_EMERG, shown even with quiet).
const (
	initShutdownLine = "wisp-init: power button pressed: ending all processes and powering off"
	kernelPowerDown  = "reboot: Power down"
)

// The default guest's shell prompt (busybox ash, host name wisp), and a
// command that says it runs and then waits (sleep dies of SIGTERM).
const (
	shellPrompt  = "wisp:/# "
	commandReady = "WISP-RUNNING"
	longRunning  = "echo " + commandReady + "; exec sleep 100000"
)

// waitConsole polls the console until it shows want, and fails the test if
// the VM ends first. Only the test's hang guard bounds the wait.
func waitConsole(t *testing.T, out *testutil.SyncBuffer, want string, ended <-chan struct{}) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), want) {
		select {
		case <-ended:
			t.Fatalf("the guest ended before its console showed %q", want)
		case <-tick.C:
		}
	}
}

// TestDefaultGuestPowerButton boots the default guest (wisp's initramfs
// with Debian's cloud kernel, whose ACPI button and evdev drivers are
// modules init loads, and with the minimal kernel, which has them built
// in) on TCG, presses the ACPI power button with a
// graceful Stop once init has written its boot marker, and checks how the
// guest ended: init ends the shell or command and powers off, unless
// wisp.powerbutton=ignore makes it a guest that ignores ACPI, whose
// graceful stop runs into its deadline and is forced.
func TestDefaultGuestPowerButton(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP (-short): boots Linux under QEMU TCG")
	}
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		t.Skipf("SKIP: %v", qemu.ErrNotInstalled)
	}
	kernels := []struct {
		name string
		kern func(testing.TB) *guest.Kernel
	}{
		{"debian", fixtures.DebianKernel},
		{"minimal", fixtures.MinimalKernel},
	}
	tests := []powerButtonCase{
		{
			name:       "the shell is ended and the guest powers off",
			ready:      shellPrompt,
			stopWithin: 60 * time.Second,
			detail:     "ACPI power button, guest powered off",
			console:    []string{initShutdownLine, kernelPowerDown},
		},
		{
			name:       "the command gets SIGTERM and its status is reported",
			argv:       []string{"sh", "-c", longRunning},
			ready:      commandReady,
			stopWithin: 60 * time.Second,
			detail:     "ACPI power button, guest powered off",
			status:     128 + 15,
			coded:      true,
			console:    []string{initShutdownLine},
		},
		{
			name:       "a guest told to ignore the button is forced off",
			argv:       []string{"sh", "-c", longRunning},
			ready:      commandReady,
			cmdline:    initproto.ParamPowerButton + "=ignore",
			stopWithin: 5 * time.Second,
			detail:     "forced off",
			notConsole: []string{initShutdownLine},
		},
	}
	for _, k := range kernels {
		t.Run(k.name, func(t *testing.T) {
			kern := k.kern(t)
			initrd := fixtures.DefaultInitramfs(t, kern)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { testPowerButton(t, kern, initrd, tc) })
			}
		})
	}
}

// powerButtonCase is one graceful stop of the default guest.
type powerButtonCase struct {
	name string
	// argv is the command init runs; nil: the interactive shell,
	// which ignores SIGTERM, so init must kill it.
	argv []string
	// ready is console output that says the shell or command runs:
	// the button is pressed only then.
	ready   string
	cmdline string // added to the kernel command line
	// stopWithin is the graceful Stop's deadline: generous where the
	// guest must power off by itself, short where Stop must force.
	stopWithin time.Duration
	detail     string // in the exit status's Detail
	status     int    // the command's exit status
	coded      bool   // the guest reported one
	console    []string
	notConsole []string
}

// testPowerButton boots kern with initrd, presses the power button once
// the shell or command runs, and checks how the guest ended.
func testPowerButton(t *testing.T, kern *guest.Kernel, initrd string, tc powerButtonCase) {
	cmdline := "console=ttyS0 reboot=k panic=-1 quiet " + tc.cmdline
	if tc.argv != nil {
		param, err := initproto.EncodeCmd(tc.argv)
		require.NoError(t, err)
		cmdline += " " + param
	}
	cfg := vmm.Config{
		Kernel:      kern.Image,
		Initrd:      initrd,
		Cmdline:     cmdline,
		CPUs:        1,
		MemoryBytes: 256 << 20,
		Console:     vmm.ConsoleStdio,
		Accel:       vmm.AccelTCG,
		OnReboot:    vmm.RebootExit,
	}
	// Socket paths are limited to 107 bytes: a short runtime directory.
	dir, err := os.MkdirTemp("", "wpb")
	require.NoError(t, err)
	defer os.RemoveAll(dir)

	out := &testutil.SyncBuffer{}
	filter := initproto.NewExitFilter(out)
	userspace := make(chan struct{}, 1)
	b, err := qemu.New(cfg, vmm.Console{Out: filter}, qemu.Options{
		RuntimeDir: dir,
		Log:        t.Output(),
		OnBootMarker: func(byte, time.Duration) {
			select {
			case userspace <- struct{}{}:
			default:
			}
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), powerButtonGuard)
	defer cancel()
	require.NoError(t, b.Start(ctx))
	ended := make(chan struct{})
	go func() { b.Wait(); close(ended) }()
	defer func() {
		// Whatever happened, the VM does not outlive the test.
		_ = b.Stop(context.Background(), vmm.StopForce)
		<-ended
		if t.Failed() || testing.Verbose() {
			filter.Flush()
			t.Logf("guest console:\n%s", out.String())
		}
	}()

	// init writes the marker once it listens to the button.
	select {
	case <-userspace:
	case <-ended:
		st, err := b.Wait()
		t.Fatalf("the guest ended before init's boot marker: %+v, %v", st, err)
	}
	waitConsole(t, out, tc.ready, ended)
	stopCtx, stopCancel := context.WithTimeout(context.Background(), tc.stopWithin)
	defer stopCancel()
	require.NoError(t, b.Stop(stopCtx, vmm.StopGraceful))
	st, err := b.Wait()
	require.NoError(t, err)
	require.NoError(t, filter.Flush())

	assert.Equal(t, vmm.ExitStopped, st.Reason, st.Detail)
	assert.Contains(t, st.Detail, tc.detail)
	status, coded := filter.Status()
	assert.Equal(t, tc.coded, coded, "exit record on the console")
	assert.Equal(t, tc.status, status)
	console := out.String()
	for _, s := range tc.console {
		assert.Contains(t, console, s)
	}
	for _, s := range tc.notConsole {
		assert.NotContains(t, console, s)
	}
}
