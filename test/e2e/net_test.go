package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/test/testutil"
)

// guestNetUp configures eth0 statically in the default guest (busybox ip).
func guestNetUp(addr, gw string) string {
	s := "ip link set lo up; ip addr add " + addr + " dev eth0 && ip link set eth0 up"
	if gw != "" {
		s += " && ip route add default via " + gw
	}
	return s
}

// payload is a pseudo-random block the TCP tests move and compare.
func payload(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// serveOnce accepts connections on l: each gets data written and closed,
// or, with sink, is read to EOF and its hash sent on got.
func serveOnce(l net.Listener, data []byte, got chan<- string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if got != nil {
				b, _ := io.ReadAll(c)
				got <- sha(b)
				return
			}
			_, _ = c.Write(data)
		}()
	}
}

// netns is a network namespace the test made, with a bridge at hostIP.
type netns struct {
	name, bridge string
}

func newNetns(t *testing.T, hostCIDR string) netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to make a network namespace, a bridge and taps")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("SKIP: no /dev/net/tun: cannot make taps")
	}
	ns := netns{name: fmt.Sprintf("wisp-e2e-%d", os.Getpid()), bridge: "wbr0"}
	_ = exec.Command("ip", "netns", "del", ns.name).Run()
	for _, s := range [][]string{
		{"ip", "netns", "add", ns.name},
		{"ip", "-n", ns.name, "link", "set", "lo", "up"},
		{"ip", "-n", ns.name, "link", "add", ns.bridge, "type", "bridge"},
		{"ip", "-n", ns.name, "addr", "add", hostCIDR, "dev", ns.bridge},
		{"ip", "-n", ns.name, "link", "set", ns.bridge, "up"},
	} {
		out, err := exec.Command(s[0], s[1:]...).CombinedOutput()
		require.NoError(t, err, "%s: %s", strings.Join(s, " "), out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	return ns
}

// listen opens a TCP listener inside the namespace: the socket belongs to
// the namespace of the thread that makes it, and stays there.
func (ns netns) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	require.NoError(t, err)
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns.name)
	require.NoError(t, err)
	defer target.Close()
	require.NoError(t, unix.Setns(int(target.Fd()), unix.CLONE_NEWNET))
	l, lerr := net.Listen("tcp", addr)
	require.NoError(t, unix.Setns(int(self.Fd()), unix.CLONE_NEWNET))
	require.NoError(t, lerr)
	t.Cleanup(func() { l.Close() })
	return l
}

// links lists the names of the interfaces in the namespace.
func (ns netns) links(t *testing.T) []string {
	out, err := exec.Command("ip", "-n", ns.name, "-o", "link", "show").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.Split(f[1], "@")[0], ":"))
		}
	}
	return names
}

// The guest on a tap (bridged in a namespace) pings the host and moves
// data both ways over TCP, checked byte for byte; the tap is gone after.
func TestNetTapPingAndTCP(t *testing.T) {
	requireQEMU(t)
	ns := newNetns(t, "10.0.9.1/24")
	toGuest := payload(4 << 20)
	send := ns.listen(t, "10.0.9.1:0")
	go serveOnce(send, toGuest, nil)
	recv := ns.listen(t, "10.0.9.1:0")
	got := make(chan string, 1)
	go serveOnce(recv, nil, got)
	fromGuest := payload(1 << 20)

	script := guestNetUp("10.0.9.2/24", "") + " && ping -c 2 -W 5 10.0.9.1 >/dev/null && echo ping-ok && " +
		fmt.Sprintf("nc 10.0.9.1 %d | sha256sum && ", send.Addr().(*net.TCPAddr).Port) +
		fmt.Sprintf("dd if=/dev/vda bs=1M count=1 2>/dev/null | nc -w 2 10.0.9.1 %d; echo sent", recv.Addr().(*net.TCPAddr).Port)
	// The guest→host data comes from a disk, so the test knows it.
	disk := sparseImage(t, "payload.img", 1<<20)
	require.NoError(t, os.WriteFile(disk, fromGuest, 0o644))

	before := ns.links(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, wispBin}, args("--disk", disk+",ro", "--net", "tap,bridge="+ns.bridge, "--", "sh", "-c", script)...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	require.NoError(t, err, "stdout: %s\nstderr: %s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "ping-ok\n")
	assert.Contains(t, out.String(), sha(toGuest)+"  -\n", "the guest received the host's bytes intact")
	select {
	case h := <-got:
		assert.Equal(t, sha(fromGuest), h, "the host received the guest's bytes intact")
	case <-time.After(10 * time.Second):
		t.Error("the host never got the guest's data")
	}
	assert.Equal(t, before, ns.links(t), "wisp's tap is gone after the VM")
}

// A tap wisp makes is removed when wisp is stopped by a signal too.
func TestNetTapRemovedOnSignal(t *testing.T) {
	requireQEMU(t)
	ns := newNetns(t, "10.0.9.1/24")
	before := ns.links(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, wispBin}, args("--net", "tap:wisptest0,bridge="+ns.bridge, "--", "sh", "-c", "echo ready; sleep 600")...)...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "ready") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Contains(t, out.String(), "ready")
	assert.Contains(t, ns.links(t), "wisptest0", "the tap exists while the VM runs")
	// ip netns exec execs wisp, so the signal reaches wisp itself.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	_ = cmd.Wait()
	assert.Equal(t, before, ns.links(t), "the tap is gone after SIGTERM")
}

// User-mode networking: DHCP answers, the guest reaches a server on the
// host's loopback through the gateway, and a host port forward reaches a
// server in the guest.
func TestNetUser(t *testing.T) {
	requireQEMU(t)
	hostData := payload(1 << 20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go serveOnce(l, hostData, nil)

	fwd, err := net.Listen("tcp", "127.0.0.1:0") // pick a free port, then free it for wisp
	require.NoError(t, err)
	fwdPort := fwd.Addr().(*net.TCPAddr).Port
	fwd.Close()

	script := "ip link set eth0 up; udhcpc -i eth0 -n -q -f -s /bin/true 2>&1 | grep -o 'lease of [0-9.]* obtained'; " +
		guestNetUp("10.0.2.15/24", "10.0.2.2") + " && " +
		fmt.Sprintf("nc 10.0.2.2 %d | sha256sum && ", l.Addr().(*net.TCPAddr).Port) +
		"echo listening && echo guest-says-hello | nc -l -p 8080"
	cmd := exec.Command(wispBin, args("--net", fmt.Sprintf("user,hostfwd=tcp:127.0.0.1:%d-:8080", fwdPort), "--", "sh", "-c", script)...)
	out := &testutil.SyncBuffer{}
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &errOut
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // a failed check must not leave the VM running
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "listening") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Contains(t, out.String(), "listening", "stdout: %s\nstderr: %s", out.String(), errOut.String())
	var reply string
	for time.Now().Before(deadline) && reply == "" {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fwdPort))
		if err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			reply = line
		}
		if reply == "" {
			time.Sleep(200 * time.Millisecond) // the guest's nc may not listen yet
		}
	}
	assert.Equal(t, "guest-says-hello\n", reply, "the forward reached the guest")
	select {
	case err := <-done:
		require.NoError(t, err, "stderr: %s", errOut.String())
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("wisp did not exit")
	}
	assert.Contains(t, out.String(), "lease of 10.0.2.15 obtained")
	assert.Contains(t, out.String(), sha(hostData)+"  -\n", "the guest got the host's bytes intact")
}
