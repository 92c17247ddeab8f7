package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/internal/stale"
	"github.com/wisp-vmm/wisp/test/testutil"
)

// leftoverKey is a real ed25519 public key (the private half was thrown
// away); each run gives it a comment of its own to look for.
const leftoverKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFS8xxXhhxLTNyLZeHrlI2P4mXY8QdUOlGkGoirlda/1"

// TestKilledWispLeavesNothingForTheNext kills wisp with SIGKILL, which
// runs no cleanup: QEMU must die with it, and the next wisp must remove
// the directories it left. A NoCloud seed's key is never on disk.
func TestKilledWispLeavesNothingForTheNext(t *testing.T) {
	requireQEMU(t)
	// A temporary directory of the test's own (short: socket paths are
	// limited to 107 bytes): wisps that other tests or developers start
	// meanwhile sweep /tmp, and must not clean up before we look.
	tmp, err := os.MkdirTemp("", "wl-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(tmp) })
	env := append(os.Environ(), "TMPDIR="+tmp, "WISP_BOOT_MARKERS=1")

	var tag [8]byte
	_, _ = rand.Read(tag[:])
	comment := "wisp-leftover-" + hex.EncodeToString(tag[:])
	keyFile := filepath.Join(t.TempDir(), "key.pub")
	require.NoError(t, os.WriteFile(keyFile, []byte(leftoverKey+" "+comment+"\n"), 0o644))

	tests := []struct {
		name string
		args []string
		seed bool
	}{
		{"plain", args("--", "sleep", "600"), false},
		// The guest counts the key's comment on its seed disk (/dev/vda,
		// the only disk), so the seed is really there.
		{"ssh key", args("--ssh-key", keyFile, "--", "sh", "-c", "grep -c "+comment+" /dev/vda; sleep 600"), true},
	}
	type killed struct {
		qemu     int
		stateDir string
		qemuDir  string
	}
	var left []killed
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(wispBin, tt.args...)
			cmd.Env = env
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			defer stdin.Close()
			stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			ready := "boot marker 0x7f"
			deadline := time.Now().Add(3 * time.Minute)
			for time.Now().Before(deadline) && !(strings.Contains(stderr.String(), ready) && (!tt.seed || strings.Contains(stdout.String(), "\n"))) {
				time.Sleep(20 * time.Millisecond)
			}
			require.Contains(t, stderr.String(), ready, "the guest reached userspace")

			pids, dirs := qemuChildren(t, cmd.Process.Pid)
			require.Len(t, pids, 1, "wisp runs one QEMU")
			require.Len(t, dirs, 1, "QEMU's sockets are in one runtime dir")
			qemuDir := dirs[0]
			stateDir := filepath.Dir(qemuDir)
			require.Equal(t, tmp, filepath.Dir(stateDir), "the state directory is in $TMPDIR")
			require.True(t, strings.HasPrefix(filepath.Base(stateDir), stale.PrefixVM), stateDir)
			for _, d := range []string{stateDir, qemuDir} {
				o, err := stale.ReadOwner(d)
				require.NoError(t, err, "owner record of %s", d)
				assert.Equal(t, cmd.Process.Pid, o.PID, "%s is wisp's", d)
			}

			if tt.seed {
				assert.Equal(t, "1", strings.TrimSpace(stdout.String()), "the guest reads the key on its seed disk")
				assert.True(t, holdsMemfd(t, cmd.Process.Pid, "wisp-nocloud-seed"), "the seed is a memfd of wisp's")
				for _, dir := range []string{tmp, os.TempDir()} {
					assert.Empty(t, filesContaining(t, dir, []byte(comment), keyFile), "files under %s holding the key", dir)
				}
				seeds, _ := filepath.Glob(filepath.Join(tmp, stale.PrefixSeed+"*"))
				assert.Empty(t, seeds, "the seed's scratch directory is gone before the VM runs")
			}

			qemu, err := strconv.Atoi(pids[0])
			require.NoError(t, err)
			pidfd, err := unix.PidfdOpen(qemu, 0)
			require.NoError(t, err)
			t.Cleanup(func() {
				// A QEMU that outlived wisp is the failure, and must not
				// outlive the test; the pidfd names it even if its pid is
				// reused.
				_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
				unix.Close(pidfd)
			})
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()
			// The pidfd turns readable when QEMU exits; the timeout only
			// bounds a QEMU that outlives wisp, which is the failure.
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int((30 * time.Second).Milliseconds()))
			require.NoError(t, err)
			require.Equal(t, 1, n, "QEMU (pid %d) dies with wisp", qemu)

			assert.DirExists(t, stateDir, "SIGKILL ran no cleanup")
			assert.DirExists(t, qemuDir, "SIGKILL ran no cleanup")
			left = append(left, killed{qemu, stateDir, qemuDir})
		})
	}
	require.Len(t, left, len(tests))

	r := wispWithEnv(t, env, args("--", "true")...)
	require.Equal(t, 0, r.code, r.stderr)
	for _, k := range left {
		assert.NoDirExists(t, k.qemuDir, "the next wisp removed it")
		assert.NoDirExists(t, k.stateDir, "the next wisp removed it")
	}
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing is left in $TMPDIR")
}

// wispWithEnv is wisp with the environment env.
func wispWithEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(wispBin, args...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	timer := time.AfterFunc(3*time.Minute, func() { _ = cmd.Process.Kill() }) // only a hung wisp
	defer timer.Stop()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, out.String(), errOut.String()}
}

// holdsMemfd reports whether process pid has a memfd named name open.
func holdsMemfd(t *testing.T, pid int, name string) bool {
	t.Helper()
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fdDir)
	require.NoError(t, err)
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(target, "/memfd:"+name) {
			return true
		}
	}
	return false
}

// filesContaining lists the regular files under dir (but skip) that
// contain needle. Files come and go under a shared /tmp: those that
// cannot be read are passed over, and so are files beyond 64 MiB (a seed
// is a megabyte).
func filesContaining(t *testing.T, dir string, needle []byte, skip string) []string {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || path == skip {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, needle) {
			found = append(found, path)
		}
		return nil
	})
	return found
}
