package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/fixtures"
	"github.com/wisp-vmm/wisp/vmm"
)

// runCLI runs wisp in process with stdin from /dev/null.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	devnull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devnull.Close()
	var out, errOut bytes.Buffer
	code = run(args, devnull, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestBadInput checks that every mistake a user can make gets one line
// naming the problem and the fix, a non-zero exit, and no Go stack trace.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notKernel, []byte("this is not a kernel\n"), 0o644))
	hugeInitrd := filepath.Join(dir, "huge.img")
	f, err := os.Create(hugeInitrd)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<20)) // sparse: costs no disk
	require.NoError(t, f.Close())

	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"missing kernel file", nil, []string{"run", "--kernel", filepath.Join(dir, "vmlinuz")}, vmm.CodeUsage, "no such file"},
		{"zero memory", nil, []string{"run", "--kernel", notKernel, "--memory", "0"}, vmm.CodeUsage, "--memory 0: give the guest at least 16M"},
		{"memory beyond host", nil, []string{"run", "--kernel", notKernel, "--memory", "64T"}, vmm.CodeUsage, "more than the host's"},
		{"bad memory unit", nil, []string{"run", "--kernel", notKernel, "--memory", "1Q"}, vmm.CodeUsage, "unknown unit"},
		{"zero cpus", nil, []string{"run", "--kernel", notKernel, "--cpus", "0"}, vmm.CodeUsage, "--cpus 0: want 1 to 64"},
		{"too many cpus", nil, []string{"run", "--kernel", notKernel, "--cpus", "65"}, vmm.CodeUsage, "--cpus 65: want 1 to 64"},
		{"bad console", nil, []string{"run", "--kernel", notKernel, "--console", "tty"}, vmm.CodeUsage, "use stdio, file:PATH or none"},
		{"bad accel", nil, []string{"run", "--kernel", notKernel, "--accel", "hvf"}, vmm.CodeUsage, "use auto, kvm or tcg"},
		{"initrd without kernel", nil, []string{"run", "--initrd", notKernel}, vmm.CodeUsage, "--initrd needs --kernel"},
		{"argument without dash", nil, []string{"run", "uname"}, vmm.CodeUsage, "put the command to run in the guest after --"},
		{"unknown flag", nil, []string{"run", "--kernal", notKernel}, vmm.CodeUsage, "unknown flag: --kernal"},
		{"not a kernel", nil, []string{"run", "--kernel", notKernel}, vmm.CodeUsage, "not a Linux kernel"},
		{"initrd does not fit", nil, []string{"run", "--kernel", debianKernel(t), "--initrd", hugeInitrd, "--memory", "96M"}, vmm.CodeUsage, "--initrd " + hugeInitrd + ": its 64M does not fit in 96M of memory next to the kernel"},
		{"kernel does not fit", nil, []string{"run", "--kernel", debianKernel(t), "--memory", "16M"}, vmm.CodeUsage, "--kernel " + debianKernel(t) + ": does not fit in 16M of memory"},
		{"memory not a multiple of 2M", nil, []string{"run", "--kernel", notKernel, "--memory", "17M"}, vmm.CodeUsage, "--memory 17M: use a multiple of 2M"},
		{"bad reboot policy", nil, []string{"run", "--kernel", notKernel, "--on-reboot", "halt"}, vmm.CodeUsage, "--on-reboot halt: use exit or restart"},
		{"kvm device missing", map[string]string{"WISP_KVM_DEVICE": filepath.Join(dir, "kvm")}, []string{"run", "--kernel", debianKernel(t), "--accel", "kvm"}, vmm.CodeError, "is the kvm module loaded"},
		{"kvm device not a device", map[string]string{"WISP_KVM_DEVICE": notKernel}, []string{"run", "--kernel", debianKernel(t), "--accel", "kvm"}, vmm.CodeError, "not a KVM device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.env, tt.args...)
			assert.Equal(t, tt.code, code, "stderr: %s", stderr)
			assert.Contains(t, stderr, tt.want)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			assert.NotContains(t, stderr, "goroutine", "no Go stack trace")
		})
	}
}

// TestCLIMessage checks that the library's field errors read in flags.
func TestCLIMessage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"cpus", &vmm.FieldError{Field: "CPUs", Value: "0", Msg: "want 1 to 64"}, "--cpus 0: want 1 to 64"},
		{"memory as a size", &vmm.FieldError{Field: "MemoryBytes", Value: "68719476736", Msg: "more than the host's 7.7G"}, "--memory 64G: more than the host's 7.7G"},
		{"memory not a number", &vmm.FieldError{Field: "MemoryBytes", Value: "lots", Msg: "m"}, "--memory lots: m"},
		{"kernel", &vmm.FieldError{Field: "Kernel", Value: "/k", Msg: "no such file"}, "--kernel /k: no such file"},
		{"initrd", &vmm.FieldError{Field: "Initrd", Value: "/i", Msg: "no such file"}, "--initrd /i: no such file"},
		{"no value", &vmm.FieldError{Field: "Cmdline", Msg: "contains a NUL byte: remove it"}, "--cmdline: contains a NUL byte: remove it"},
		{"console", &vmm.FieldError{Field: "Console", Value: "tty", Msg: "use stdio, file:PATH or none"}, "--console tty: use stdio, file:PATH or none"},
		{"console path", &vmm.FieldError{Field: "ConsolePath", Msg: "m"}, "--console: m"},
		{"accel", &vmm.FieldError{Field: "Accel", Value: "hvf", Msg: "use auto, kvm or tcg"}, "--accel hvf: use auto, kvm or tcg"},
		{"on reboot", &vmm.FieldError{Field: "OnReboot", Value: "halt", Msg: "m"}, "--on-reboot halt: m"},
		{"boot", &vmm.FieldError{Field: "Boot", Value: "firmware", Msg: "needs a disk with a bootloader: add one"}, "--boot firmware: needs a disk with a bootloader: add one"},
		{"a disk", &vmm.FieldError{Field: "Disks[1]", Value: "/b.img", Msg: "no such file"}, "--disk /b.img: no such file"},
		{"a disk's field", &vmm.FieldError{Field: "Disks[0].BackingDir", Value: "/d", Msg: "m"}, "--disk /d: m"},
		{"a nic", &vmm.FieldError{Field: "Nets[0]", Msg: "tap t0 is given twice"}, "--net: tap t0 is given twice"},
		{"state dir", &vmm.FieldError{Field: "StateDir", Value: "/s", Msg: "m"}, "--state-dir /s: m"},
		{"context kept", fmt.Errorf("boot: %w", &vmm.FieldError{Field: "CPUs", Value: "65", Msg: "want 1 to 64"}), "boot: --cpus 65: want 1 to 64"},
		{"inside an exit error", &exitError{code: 1, err: &vmm.FieldError{Field: "Accel", Value: "kvm", Msg: "m"}}, "--accel kvm: m"},
		{"a field no flag sets", &vmm.FieldError{Field: "KVMDevice", Value: "/x", Msg: "m"}, "Config.KVMDevice /x: m"},
		{"a wrapper that hides its cause", &hidingError{&vmm.FieldError{Field: "CPUs", Value: "0", Msg: "m"}}, "could not start"},
		{"not a field error", vmm.Invalidf("--disk x: unknown option"), "--disk x: unknown option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, cliMessage(tt.err))
		})
	}
}

// hidingError wraps an error without printing it.
type hidingError struct{ err error }

func (h *hidingError) Error() string { return "could not start" }
func (h *hidingError) Unwrap() error { return h.err }

func debianKernel(t *testing.T) string { return fixtures.DebianKernel(t).Image }

func TestKernelCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP (-short): may fetch Debian's kernel or build the minimal one")
	}
	fixtures.DebianKernel(t) // fetched once, shared through the cache
	code, stdout, stderr := runCLI(t, nil, "kernel", "fetch")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "image:   ")
	assert.Contains(t, stdout, "modules: ")

	fixtures.MinimalKernel(t)
	code, stdout, stderr = runCLI(t, nil, "kernel", "build")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "vmlinux: ")
}
