package kvm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/client"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
)

// wispBinary is the wisp the agent's VMM processes run: from
// $WISP_TEST_FILES inside the nested VM (no toolchain there), built here
// elsewhere.
func wispBinary(t *testing.T) string {
	if dir := os.Getenv("WISP_TEST_FILES"); dir != "" {
		bin := filepath.Join(dir, "bin", "wisp")
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("WISP_TEST_FILES=%s has no bin/wisp", dir)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "wisp")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/wisp-vmm/wisp/cmd/wisp").CombinedOutput()
	require.NoError(t, err, "build wisp: %s", out)
	return bin
}

// TestAgentOnKVM runs the host agent with wisp's KVM backend: a Linux
// guest started, paused, resumed and stopped through the API, each VM in
// its own `wisp run --accel kvm` process.
func TestAgentOnKVM(t *testing.T) {
	sys, err := kvm.Open(vmm.DefaultKVM)
	if err != nil {
		t.Skipf("no usable /dev/kvm (%v): test/nested runs this test inside a VM with nested KVM", err)
	}
	sys.Close()
	if accel.DefaultHost("").KVMIsPVM() {
		t.Skip("SKIP: KVM here is PVM, which cannot run Linux to userspace (see TestMinimalLinuxOnKVM)")
	}
	vmlinux, initrd := minimalLinux(t)
	run, err := os.MkdirTemp("", "wk")
	require.NoError(t, err)
	defer os.RemoveAll(run)
	a, err := agent.New(agent.Config{
		StateDir: t.TempDir(), RunDir: run, Wisp: wispBinary(t),
		Interval: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	c := client.New(filepath.Join(run, "agent.sock"))
	require.Eventually(t, func() bool { _, err := c.Host(ctx); return err == nil }, time.Minute, 20*time.Millisecond, "the agent answers")

	// A bound only a hung VMM reaches: nested KVM under TCG is slow.
	op, opCancel := context.WithTimeout(ctx, 5*time.Minute)
	defer opCancel()
	_, err = c.Create(op, agent.CreateRequest{Name: "kvm1", Spec: model.Spec{
		Kernel: vmlinux, Initrd: initrd, Cmdline: "console=ttyS0 noxsave reboot=k panic=-1",
		CPUs: 1, MemoryBytes: 128 << 20, Accel: "kvm",
	}})
	require.NoError(t, err)
	var vm agent.VMInfo
	for attempt := 1; ; attempt++ {
		vm, err = c.Start(op, "kvm1", agent.OpOptions{})
		require.NoError(t, err)
		require.Equal(t, model.ObservedRunning, vm.Observed, vm.Reason)
		assert.Equal(t, "kvm", vm.Runtime.Backend)
		out, ok := shellAnswers(t, op, c, "kvm1")
		if ok {
			break
		}
		// The console ended: wait for the agent to see how the VM did.
		for range 200 {
			vm, err = c.Get(op, "kvm1")
			require.NoError(t, err)
			if vm.Runtime == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Under nested SVM emulated by QEMU's TCG a guest now and then
		// resets early (see TestMinimalLinuxOnKVM): one more boot there.
		if attempt == 1 && os.Getenv("WISP_NESTED_INSIDE") == "1" && strings.Contains(vm.Reason, "reset") {
			t.Logf("nested KVM: the guest reset before its shell answered (%s); booting once more. Its console:\n%s", vm.Reason, out)
			continue
		}
		t.Fatalf("the guest's shell never answered; vm %s (%s); console:\n%s", vm.Observed, vm.Reason, out)
	}

	vm, err = c.Pause(op, "kvm1", agent.OpOptions{})
	require.NoError(t, err)
	assert.Equal(t, model.ObservedPaused, vm.Observed)
	vm, err = c.Resume(op, "kvm1", agent.OpOptions{})
	require.NoError(t, err)
	assert.Equal(t, model.ObservedRunning, vm.Observed)
	vm, err = c.Stop(op, "kvm1", agent.OpOptions{Timeout: 2 * time.Minute})
	require.NoError(t, err)
	assert.Equal(t, model.ObservedStopped, vm.Observed)
	assert.Contains(t, vm.Reason, "guest powered off", "the guest heard the power button")
	require.NoError(t, c.Delete(op, "kvm1", false))
}

// shellAnswers types a command into name's console until the guest's shell
// answers, and reports whether it did (the console ends if the VM does).
func shellAnswers(t *testing.T, ctx context.Context, c *client.Client, name string) (string, bool) {
	t.Helper()
	conn, err := c.Console(ctx, name, true)
	require.NoError(t, err)
	defer conn.Close()
	seen := make(chan string, 1)
	go func() {
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			all.Write(buf[:n])
			if strings.Contains(all.String(), "kvm-ok-42") || err != nil {
				seen <- all.String()
				return
			}
		}
	}()
	for {
		if _, err := conn.Write([]byte("echo kvm-ok-$((6*7))\n")); err != nil {
			return <-seen, false
		}
		select {
		case out := <-seen:
			return out, strings.Contains(out, "kvm-ok-42")
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return "", false
		}
	}
}
