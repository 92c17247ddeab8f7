package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const imageRootPassword = "wisp-e2e"

// buildImage runs `wisp image build debian` into a fresh directory. The
// first build on a machine takes minutes (mmdebstrap); wisp caches it by
// its inputs, so later ones copy the cached image.
func buildImage(t *testing.T, extra ...string) string {
	t.Helper()
	requireQEMU(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: wisp image build needs root (mmdebstrap in root mode, image files owned by root)")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("SKIP: mmdebstrap not found (apt-get install mmdebstrap; make deps does)")
	}
	dir := filepath.Join(t.TempDir(), "vm")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wispBin, append([]string{"image", "build", "debian", "--root-password", imageRootPassword, "-o", dir}, extra...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), out.String())
	for _, f := range []string{"vm.json", "run.sh"} {
		require.FileExists(t, filepath.Join(dir, f))
	}
	return dir
}

// The image boots to a login prompt on the serial console; root logs in,
// runs commands and powers off, and wisp exits 0.
func TestImageBootLoginOnConsole(t *testing.T) {
	dir := buildImage(t)
	exitFile := filepath.Join(t.TempDir(), "exit")
	term := newTmux(t, "wisp-image-"+filepath.Base(filepath.Dir(dir)),
		fmt.Sprintf("%s run --accel tcg --vm %s; echo $? > %s", wispBin, dir, exitFile))
	term.waitFor("the login prompt", 5*time.Minute, func(s string) bool { return strings.Contains(s, "login:") })
	term.send("root")
	term.waitFor("the password prompt", time.Minute, func(s string) bool { return strings.Contains(s, "Password:") })
	term.send(imageRootPassword)
	term.waitFor("a root shell", time.Minute, func(s string) bool { return strings.Contains(s, "root@") })
	// Each answer is echoed after a tag, so the typed command line itself
	// (which the terminal shows) cannot match.
	term.send(`echo "host=$(hostname) state=$(systemctl is-system-running --wait) addrs=$(ip -4 -o addr show scope global | grep -c inet)"`)
	answer := regexp.MustCompile(`host=(\S+) state=(\S+) addrs=(\d+)`)
	term.waitFor("the system to settle", 3*time.Minute, answer.MatchString)
	m := answer.FindStringSubmatch(term.screen())
	assert.Equal(t, "wisp", m[1])
	assert.Contains(t, []string{"running", "degraded"}, m[2], "systemctl is-system-running")
	assert.Equal(t, "1", m[3], "the NIC got an address over DHCP")
	term.send("poweroff")
	term.waitFor("wisp to exit", 2*time.Minute, func(string) bool {
		_, err := os.Stat(exitFile)
		return err == nil
	})
	code, err := os.ReadFile(exitFile)
	require.NoError(t, err)
	assert.Equal(t, "0", strings.TrimSpace(string(code)), "screen:\n%s", term.screen())
}

// The same image as qcow2, booted with --image (kernel read out of the
// image) and a NoCloud seed that sets the hostname and an SSH key; the
// test logs in over ssh through a user-mode port forward.
func TestImageQcow2WithNoCloudSeed(t *testing.T) {
	dir := buildImage(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("SKIP: no ssh client (apt-get install openssh-client)")
	}
	work := t.TempDir()
	qcow := filepath.Join(work, "disk.qcow2")
	out, err := exec.Command(wispBin, "image", "convert", filepath.Join(dir, "disk.raw"), qcow).CombinedOutput()
	require.NoError(t, err, "%s", out)
	key := filepath.Join(work, "id")
	out, err = exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput()
	require.NoError(t, err, "%s", out)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	console := filepath.Join(work, "console.log")
	vm := exec.Command(wispBin, "run", "--accel", "tcg", "--memory", "1G", "--image", qcow,
		"--ssh-key", key+".pub", "--hostname", "seeded",
		"--net", fmt.Sprintf("user,hostfwd=tcp:127.0.0.1:%d-:22", port), "--console", "file:"+console)
	var vmErr bytes.Buffer
	vm.Stderr = &vmErr
	require.NoError(t, vm.Start())
	done := make(chan error, 1)
	go func() { done <- vm.Wait() }()
	defer func() {
		_ = vm.Process.Kill()
	}()

	ssh := func(command string) (string, error) {
		out, err := exec.Command("ssh", "-i", key, "-p", fmt.Sprint(port), "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
			"-o", "LogLevel=ERROR", "debian@127.0.0.1", command).CombinedOutput()
		return string(out), err
	}
	var hostname string
	deadline := time.Now().Add(6 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			logData, _ := os.ReadFile(console)
			t.Fatalf("wisp exited early (%v): %s\nconsole:\n%s", err, vmErr.String(), logData)
		default:
		}
		if out, err := ssh("hostname"); err == nil {
			hostname = strings.TrimSpace(out)
			break
		}
		time.Sleep(2 * time.Second)
	}
	logData, _ := os.ReadFile(console)
	require.Equal(t, "seeded", hostname, "ssh with the seeded key; console:\n%s", logData)
	_, _ = ssh("sudo systemctl poweroff")
	select {
	case err := <-done:
		assert.NoError(t, err, vmErr.String())
	case <-time.After(3 * time.Minute):
		t.Error("the VM did not power off")
	}
}
