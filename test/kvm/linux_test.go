// Package kvm_test boots real Linux on wisp's KVM backend. Where KVM runs
// unmodified guests (hardware KVM, or nested KVM inside test/nested) the
// minimal kernel must boot to its initramfs and run a command; where KVM is
// PVM it must print its first lines and then wisp must report the
// emulation failure in one line instead of hanging.
package kvm_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/test/fixtures"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
	"github.com/wisp-vmm/wisp/vmm/kvmvm"
)

// Names of the files test/nested copies into $WISP_TEST_FILES.
const (
	filesVmlinux   = "minimal/vmlinux"
	filesInitramfs = "minimal/initramfs.cpio.gz"
)

// minimalLinux returns the minimal kernel's ELF vmlinux and the default
// initramfs built for it: from $WISP_TEST_FILES inside the nested VM (no
// toolchain there), from the guest kit elsewhere.
func minimalLinux(t *testing.T) (vmlinux, initrd string) {
	if dir := os.Getenv("WISP_TEST_FILES"); dir != "" {
		vmlinux, initrd = filepath.Join(dir, filesVmlinux), filepath.Join(dir, filesInitramfs)
		if _, err := os.Stat(vmlinux); err == nil {
			return vmlinux, initrd
		}
		t.Fatalf("WISP_TEST_FILES=%s has no %s", dir, filesVmlinux)
	}
	k := fixtures.MinimalKernel(t)
	require.NotEmpty(t, k.ELF, "the minimal kernel has an ELF vmlinux")
	return k.ELF, fixtures.DefaultInitramfs(t, k)
}

func TestMinimalLinuxOnKVM(t *testing.T) {
	sys, err := kvm.Open(vmm.DefaultKVM)
	if err != nil {
		t.Skipf("no usable /dev/kvm (%v): test/nested runs this test inside a VM with nested KVM", err)
	}
	sys.Close()
	vmlinux, initrd := minimalLinux(t)

	const cpus = 2
	cmd, err := initproto.EncodeCmd([]string{"sh", "-c", "echo wisp-linux-ok; nproc"})
	require.NoError(t, err)
	cfg := vmm.Config{
		Kernel:  vmlinux,
		Initrd:  initrd,
		Cmdline: "console=ttyS0 noxsave reboot=k panic=-1 " + cmd,
		CPUs:    cpus,
	}.WithDefaults()

	console, st, markers := bootLinux(t, cfg)
	if st.Reason == vmm.ExitReset && os.Getenv("WISP_NESTED_INSIDE") == "1" && !strings.Contains(console, "wisp-linux-ok") {
		// Under nested SVM emulated by QEMU's TCG a guest now and then
		// resets early, on QEMU's microvm as well as on wisp: the emulated
		// CPU, not the VMM. One retry there; on real KVM a reset fails.
		t.Logf("nested KVM: the guest reset before userspace (%s); booting once more. Its console:\n%s", st.Detail, console)
		console, st, markers = bootLinux(t, cfg)
	}

	// The first lines any KVM must get to: the kernel ran wisp's PVH
	// entry, found the e820 map, the command line and the ACPI tables.
	for _, want := range []string{
		"Linux version",
		"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
		"Kernel command line: console=ttyS0 noxsave",
		"ACPI: RSDP 0x",
		"ACPI: XSDT 0x",
		"ACPI: FACP 0x",
		"ACPI: APIC 0x",
		"ACPI: DSDT 0x",
	} {
		assert.Contains(t, console, want)
	}
	if accel.DefaultHost("").KVMIsPVM() {
		require.Equal(t, vmm.ExitEmulationFailure, st.Reason, "PVM cannot run Linux to the end; console:\n%s", console)
		assert.Regexp(t, `KVM internal error \(.*\) at RIP 0x[0-9a-f]+, instruction bytes ([0-9a-f]{2} ?)+`, st.Detail)
		return
	}
	require.Equal(t, vmm.ExitPoweroff, st.Reason, "console:\n%s", console)
	assert.Regexp(t, `smpboot: Allowing 2 CPUs|Allowing 2 present CPUs|ACPI: Using ACPI`, console)
	assert.Contains(t, console, "wisp-linux-ok")
	status, ok := exitStatus(console)
	require.True(t, ok, "init reported the command's exit status")
	assert.Equal(t, 0, status)
	assert.Contains(t, markers, byte(0x7f), "init wrote the userspace boot marker")
	assert.Contains(t, console, "\n2", "nproc inside the guest sees both vCPUs")
}

// bootLinux boots cfg on wisp's KVM backend to its end and returns the
// console, how it ended and the boot markers written.
func bootLinux(t *testing.T, cfg vmm.Config, devs ...virtio.Device) (string, vmm.ExitStatus, []byte) {
	t.Helper()
	var out, log testutil.SyncBuffer
	var markers []byte
	var mu sync.Mutex
	t.Cleanup(func() {
		for _, d := range devs {
			assert.NoError(t, d.Close(), "close %v", d.Type())
		}
	})
	vm, err := kvmvm.New(cfg, vmm.Console{Out: &out}, kvmvm.Options{
		Virtio: devs,
		Log:    &log,
		OnBootMarker: func(code byte, _ time.Duration) {
			mu.Lock()
			markers = append(markers, code)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	// A bound only a hung VMM reaches: nested KVM under TCG is slow.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	require.NoError(t, vm.Start(ctx))
	st, err := vm.Wait()
	require.NoError(t, err)
	t.Logf("guest ended: %s (%s); wisp log:\n%s", st.Reason, st.Detail, log.String())
	mu.Lock()
	defer mu.Unlock()
	return out.String(), st, append([]byte(nil), markers...)
}

func exitStatus(console string) (int, bool) {
	f := initproto.NewExitFilter(&bytes.Buffer{})
	_, _ = f.Write([]byte(console))
	return f.Status()
}
