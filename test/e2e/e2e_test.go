// Package e2e drives the wisp binary the way users do and checks what they
// see: exit codes, output, the console, signals, and what is left behind.
// On a host without usable KVM these boots run on the TCG backend with real
// Linux kernels.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/fixtures"
	"github.com/wisp-vmm/wisp/test/testutil"
	"github.com/wisp-vmm/wisp/vmm"
)

// wispBin is the wisp binary under test, built once by TestMain.
var wispBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := testutil.BuildWisp()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wispBin = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func requireQEMU(t *testing.T) { testutil.RequireQEMU(t) }

type result struct {
	code           int
	stdout, stderr string
}

// wisp runs the binary with args and stdin, bounded by a deadline only a
// hung wisp reaches.
func wisp(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wispBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, out.String(), errOut.String()}
}

// tcg pins the backend so the tests mean the same on every host.
var tcg = []string{"run", "--accel", "tcg"}

func args(extra ...string) []string { return append(append([]string(nil), tcg...), extra...) }

func TestCommandExitStatus(t *testing.T) {
	requireQEMU(t)
	tests := []struct {
		name    string
		cmd     []string
		code    int
		wantOut string
	}{
		{"true", []string{"true"}, 0, ""},
		{"exit 3 with output", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, 3, "out\nerr\n"},
		{"missing command", []string{"no-such-command"}, 127, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wisp(t, "", args(append([]string{"--"}, tt.cmd...)...)...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			if tt.wantOut != "" {
				assert.Equal(t, tt.wantOut, r.stdout)
			}
		})
	}
}

func TestCPUsAndMemoryVisible(t *testing.T) {
	requireQEMU(t)
	r := wisp(t, "", args("--cpus", "2", "--memory", "1G", "--", "sh", "-c", "nproc; grep MemTotal /proc/meminfo")...)
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	assert.Equal(t, "2", lines[0])
	var kb int
	_, err := fmt.Sscanf(lines[1], "MemTotal: %d kB", &kb)
	require.NoError(t, err, lines[1])
	assert.InDelta(t, 1<<20, kb, 120<<10, "MemTotal close to 1 GiB (the kernel keeps some)")
}

func TestShellPoweroff(t *testing.T) {
	requireQEMU(t)
	// No command: the default guest starts a shell on the console; it reads
	// what we type from stdin.
	r := wisp(t, "echo shell-was-here; poweroff -f\n", args()...)
	assert.Equal(t, vmm.CodePoweroff, r.code, r.stderr)
	assert.Contains(t, r.stdout, "shell-was-here")
}

func TestRebootIsResetCode(t *testing.T) {
	requireQEMU(t)
	r := wisp(t, "", args("--", "reboot", "-f")...)
	assert.Equal(t, vmm.CodeReset, r.code, r.stderr)
	assert.Contains(t, r.stderr, "guest reset")
}

func TestPanicIsPanicCode(t *testing.T) {
	requireQEMU(t)
	r := wisp(t, "", args("--", "sh", "-c", "echo c > /proc/sysrq-trigger")...)
	assert.Equal(t, vmm.CodePanic, r.code, r.stderr)
	assert.Contains(t, r.stderr, "guest panic")
}

func TestConsoleToFile(t *testing.T) {
	requireQEMU(t)
	log := filepath.Join(t.TempDir(), "console.log")
	r := wisp(t, "", args("--console", "file:"+log, "--", "echo", "into-the-file")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "nothing on stdout when the console goes to a file")
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Contains(t, string(data), "into-the-file")
}

func TestMinimalKernel(t *testing.T) {
	requireQEMU(t)
	k := fixtures.MinimalKernel(t)
	initrd := fixtures.DefaultInitramfs(t, k)
	for _, image := range []string{k.Image, k.ELF} {
		t.Run(filepath.Base(image), func(t *testing.T) {
			r := wisp(t, "", args("--kernel", image, "--initrd", initrd, "--", "sh", "-c", "uname -r; exit 7")...)
			assert.Equal(t, 7, r.code, r.stderr)
			assert.Contains(t, r.stdout, k.Version)
		})
	}
}

// qemuChildren finds the QEMU processes wisp (pid) started and the runtime
// directories their command lines name. Other tests boot QEMU at the same
// time, so only this wisp's children count.
func qemuChildren(t *testing.T, pid int) (pids []string, dirs []string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	dirRE := regexp.MustCompile(`/[^ ,]*wisp-qemu-[0-9]+`)
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ")".
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != fmt.Sprint(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if !bytes.Contains(cmdline, []byte("qemu-system")) {
			continue
		}
		pids = append(pids, e.Name())
		if d := dirRE.FindString(strings.ReplaceAll(string(cmdline), "\x00", " ")); d != "" {
			dirs = append(dirs, d)
		}
	}
	return pids, dirs
}

func TestSignalsStopAndCleanUp(t *testing.T) {
	requireQEMU(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(wispBin, args()...)
			cmd.Env = append(os.Environ(), "WISP_BOOT_MARKERS=1")
			stdin, err := cmd.StdinPipe() // kept open: the shell waits for input
			require.NoError(t, err)
			defer stdin.Close()
			stderr := &testutil.SyncBuffer{}
			cmd.Stderr = stderr
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			deadline := time.Now().Add(2 * time.Minute)
			for !strings.Contains(stderr.String(), "boot marker 0x7f") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			require.Contains(t, stderr.String(), "boot marker 0x7f", "the guest reached userspace")
			pids, dirs := qemuChildren(t, cmd.Process.Pid)
			require.Len(t, pids, 1, "wisp runs one QEMU")
			require.Len(t, dirs, 1, "QEMU's sockets are in one runtime dir")
			require.DirExists(t, dirs[0])
			require.NoError(t, cmd.Process.Signal(sig))
			err = cmd.Wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, vmm.CodeSignalBase+int(sig), ee.ExitCode(), stderr.String())
			_, err = os.Stat(filepath.Join("/proc", pids[0]))
			assert.True(t, os.IsNotExist(err), "QEMU (pid %s) is gone", pids[0])
			assert.NoDirExists(t, dirs[0], "the runtime dir is gone")
		})
	}
}

func TestAutoFallbackSaysWhy(t *testing.T) {
	requireQEMU(t)
	r := wisp(t, "", "run", "--", "true")
	require.Equal(t, 0, r.code, r.stderr)
	if _, err := os.Stat(vmm.DefaultKVM); err != nil {
		assert.Contains(t, r.stderr, "wisp: using QEMU TCG: no /dev/kvm")
		return
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		assert.Contains(t, r.stderr, "PVM")
	}
}

func TestDoctor(t *testing.T) {
	r := wisp(t, "", "doctor")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "accelerator: ")
	if _, err := os.Stat(vmm.DefaultKVM); err != nil {
		assert.Contains(t, r.stdout, "accelerator: tcg (QEMU), because no /dev/kvm")
	}
}

func TestRebootRestartBootsAgain(t *testing.T) {
	requireQEMU(t)
	cmd := exec.Command(wispBin, args("--on-reboot", "restart", "--", "reboot", "-f")...)
	cmd.Env = append(os.Environ(), "WISP_BOOT_MARKERS=1")
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(3 * time.Minute)
	for strings.Count(stderr.String(), "boot marker 0x7f") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, strings.Count(stderr.String(), "boot marker 0x7f"), 2, "the guest reached userspace twice: %s", stderr.String())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, vmm.CodeSignalBase+int(syscall.SIGTERM), ee.ExitCode())
}
