// Package agent_test drives `wisp agent` and `wisp vm` the way a host
// uses them: a real agent process, real VMM processes, real guests on the
// TCG backend, kill -9 of the agent and of VMMs.
package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/client"
	"github.com/wisp-vmm/wisp/test/testutil"
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

// host is one agent's directories; an agent process comes and goes on it.
type host struct {
	state, run, socket string
	args               []string // extra agent flags
	proc               *exec.Cmd
	log                *testutil.SyncBuffer
	c                  *client.Client
}

// newHost makes the directories of a host. The run directory sits under
// /tmp with a short name: unix socket paths hold 107 bytes.
func newHost(t *testing.T) *host {
	t.Helper()
	run, err := os.MkdirTemp("", "wa")
	require.NoError(t, err)
	h := &host{state: t.TempDir(), run: run, socket: filepath.Join(run, "agent.sock")}
	h.c = client.New(h.socket)
	t.Cleanup(func() { h.teardown(t) })
	return h
}

// start runs an agent on the host and waits until its API answers.
func (h *host) start(t *testing.T) {
	t.Helper()
	h.log = &testutil.SyncBuffer{}
	h.proc = exec.Command(wispBin, append([]string{"agent", "--state-dir", h.state, "--run-dir", h.run, "--socket", h.socket, "--interval", "500ms", "--debug"}, h.args...)...)
	h.proc.Stdout, h.proc.Stderr = h.log, h.log
	require.NoError(t, h.proc.Start())
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := h.c.Host(ctx)
		cancel()
		if err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "agent never answered: %v\n%s", err, h.log.String())
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 ends the agent the hard way.
func (h *host) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, h.proc.Process.Signal(syscall.SIGKILL))
	_ = h.proc.Wait()
	h.proc = nil
}

// teardown removes every VM (forced), stops the agent and checks that
// nothing the VMs used is left: no VMM or QEMU process, no runtime files.
func (h *host) teardown(t *testing.T) {
	if h.proc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if vms, err := h.c.List(ctx); err == nil {
			for _, vm := range vms {
				if err := h.c.Delete(ctx, vm.Name, true); err != nil {
					t.Errorf("remove %s: %v", vm.Name, err)
				}
			}
		}
		cancel()
		_ = h.proc.Process.Signal(syscall.SIGTERM)
		_ = h.proc.Wait()
	}
	for _, pid := range processesUnder(h.run) {
		t.Errorf("process %d still uses %s after teardown", pid, h.run)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if t.Failed() && h.log != nil {
		t.Logf("agent log:\n%s", h.log.String())
	}
	entries, _ := os.ReadDir(filepath.Join(h.run, "vms"))
	for _, e := range entries {
		t.Errorf("runtime directory %s left behind", e.Name())
	}
	_ = os.RemoveAll(h.run)
}

// processesUnder lists the processes whose command line names dir.
func processesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// create defines a default-guest VM on TCG with extra kernel parameters.
func (h *host) create(t *testing.T, name string, mutate func(*agent.CreateRequest)) agent.VMInfo {
	t.Helper()
	req := agent.CreateRequest{Name: name, Spec: model.Spec{CPUs: 1, MemoryBytes: 192 << 20, Accel: "tcg"}}
	if mutate != nil {
		mutate(&req)
	}
	vm, err := h.c.Create(ctxFor(t, time.Minute), req)
	require.NoError(t, err)
	return vm
}

func (h *host) do(t *testing.T, name string, op model.Op, opts agent.OpOptions) agent.VMInfo {
	t.Helper()
	vm, err := h.c.Do(ctxFor(t, 5*time.Minute), name, op, opts)
	require.NoError(t, err, "%s %s", op, name)
	return vm
}

func (h *host) get(t *testing.T, name string) agent.VMInfo {
	t.Helper()
	vm, err := h.c.Get(ctxFor(t, time.Minute), name)
	require.NoError(t, err)
	return vm
}

// waitObserved waits until name is observed in state want.
func (h *host) waitObserved(t *testing.T, name string, want model.Observed) agent.VMInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute) // a bound only a hung agent reaches
	for {
		vm := h.get(t, name)
		if vm.Observed == want {
			return vm
		}
		require.True(t, time.Now().Before(deadline), "vm %s never got %s: %+v", name, want, vm)
		time.Sleep(100 * time.Millisecond)
	}
}

// consoleSays types line into name's console once its shell prompts, and
// waits for want to come back; it detaches when done. (Typing before the
// prompt races with the shell's line editor, which reads the terminal's
// answer to its cursor query.)
func (h *host) consoleSays(t *testing.T, name, line, want string) {
	t.Helper()
	ctx := ctxFor(t, 3*time.Minute)
	conn, err := h.c.Console(ctx, name, true)
	require.NoError(t, err)
	defer conn.Close()
	var mu sync.Mutex
	var seen strings.Builder
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			mu.Lock()
			seen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return seen.String() }
	// A newline makes a shell that already prompted (before this viewer
	// came) prompt again.
	_, err = conn.Write([]byte("\n"))
	require.NoError(t, err)
	prompted, typed := false, time.Time{}
	for !strings.Contains(output(), want) {
		if !prompted && strings.Contains(output(), "# ") {
			prompted = true
		}
		if prompted && time.Since(typed) > 20*time.Second {
			_, err := conn.Write([]byte(line + "\n"))
			require.NoError(t, err)
			typed = time.Now()
		}
		select {
		case <-ended:
			t.Fatalf("console of %s ended before it said %q:\n%s", name, want, output())
		case <-ctx.Done():
			t.Fatalf("console of %s never said %q:\n%s", name, want, output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cpuTicks is the user+system CPU time of pid and its children so far.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	var total uint64
	for _, p := range append([]int{pid}, childrenOf(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		utime, _ := strconv.ParseUint(f[11], 10, 64)
		stime, _ := strconv.ParseUint(f[12], 10, 64)
		total += utime + stime
	}
	return total
}

func childrenOf(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

func eventPath(t *testing.T, c *client.Client, name string) []string {
	t.Helper()
	evs, err := c.Events(ctxFor(t, time.Minute), store.EventQuery{VM: name})
	require.NoError(t, err)
	var path []string
	for _, ev := range evs {
		if ev.Kind == model.EventObserved {
			path = append(path, ev.To)
		}
	}
	return path
}

// TestAgentLifecycle: three VMs through every operation, with ls and
// inspect telling the truth at each step.
func TestAgentLifecycle(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.start(t)
	h.create(t, "web1", nil)
	h.create(t, "web2", nil)
	// A guest that ignores the power button, to see the forced stop.
	h.create(t, "stubborn", func(r *agent.CreateRequest) {
		r.Spec.Cmdline = "console=ttyS0 reboot=k panic=-1 wisp.powerbutton=ignore"
	})
	vms, err := h.c.List(ctxFor(t, time.Minute))
	require.NoError(t, err)
	require.Len(t, vms, 3)
	for _, vm := range vms {
		assert.Equal(t, model.ObservedStopped, vm.Observed, vm.Name)
	}

	for _, name := range []string{"web1", "web2", "stubborn"} {
		vm := h.do(t, name, model.OpStart, agent.OpOptions{})
		assert.Equal(t, model.ObservedRunning, vm.Observed, name)
		require.NotNil(t, vm.Runtime)
		assert.Equal(t, "tcg", vm.Runtime.Backend)
		assert.Positive(t, vm.Runtime.PID)
	}
	host, err := h.c.Host(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Equal(t, 3, host.Running)
	assert.Equal(t, uint64(3*192<<20), host.UsedMemoryBytes)

	// The console: a busy loop in the guest, seen through an attach that
	// then detaches with the VM still running.
	h.consoleSays(t, "web1", "(while :; do :; done) & echo busy-$((6*7))", "busy-42")
	assert.Equal(t, model.ObservedRunning, h.get(t, "web1").Observed, "detaching leaves the VM running")

	// Pause: the VMM process and QEMU use no CPU while the guest spins.
	pid := h.get(t, "web1").Runtime.PID
	vm := h.do(t, "web1", model.OpPause, agent.OpOptions{})
	assert.Equal(t, model.ObservedPaused, vm.Observed)
	before := cpuTicks(t, pid)
	time.Sleep(time.Second)
	assert.LessOrEqual(t, cpuTicks(t, pid)-before, uint64(10), "a paused guest's spinning costs the host no CPU (ticks of 10 ms)")
	vm = h.do(t, "web1", model.OpResume, agent.OpOptions{})
	assert.Equal(t, model.ObservedRunning, vm.Observed)
	before = cpuTicks(t, pid)
	time.Sleep(time.Second)
	assert.Greater(t, cpuTicks(t, pid)-before, uint64(20), "the resumed guest spins again")

	// Illegal transitions are refused, naming both sides.
	_, err = h.c.Do(ctxFor(t, time.Minute), "web2", model.OpResume, agent.OpOptions{})
	require.ErrorIs(t, err, model.ErrConflict)
	assert.Contains(t, err.Error(), "cannot resume: vm web2 is running")

	// A graceful stop: the default guest powers off on the button (once
	// its init runs, which the shell's answer shows).
	h.consoleSays(t, "web2", "echo up-$((2+3))", "up-5")
	vm = h.do(t, "web2", model.OpStop, agent.OpOptions{Timeout: 2 * time.Minute})
	assert.Equal(t, model.ObservedStopped, vm.Observed)
	assert.Contains(t, vm.Reason, "guest powered off")
	assert.Nil(t, vm.Runtime)

	// A guest that ignores the button is forced off after the timeout.
	vm = h.do(t, "stubborn", model.OpStop, agent.OpOptions{Timeout: 3 * time.Second})
	assert.Equal(t, model.ObservedStopped, vm.Observed)
	assert.Contains(t, vm.Reason, "forced off")

	// Restart: a new VMM process.
	vm = h.do(t, "web1", model.OpRestart, agent.OpOptions{Force: true})
	assert.Equal(t, model.ObservedRunning, vm.Observed)
	assert.NotEqual(t, pid, vm.Runtime.PID)

	// rm: refused while running, then forced.
	err = h.c.Delete(ctxFor(t, time.Minute), "web1", false)
	require.ErrorIs(t, err, model.ErrConflict)
	require.NoError(t, h.c.Delete(ctxFor(t, 2*time.Minute), "web1", true))
	_, err = h.c.Get(ctxFor(t, time.Minute), "web1")
	require.ErrorIs(t, err, model.ErrNotFound)
	require.NoError(t, h.c.Delete(ctxFor(t, time.Minute), "web2", false))

	assert.Equal(t, []string{"starting", "running", "stopping", "stopped"}, eventPath(t, h.c, "web2"))
	evs, err := h.c.Events(ctxFor(t, time.Minute), store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	assert.Equal(t, model.EventDeleted, evs[len(evs)-1].Kind, "the history outlives the VM")
}

// TestAgentKill9AdoptsAndCrashes: the agent's death leaves VMs running and
// a new agent adopts them; a VMM's death shows as crashed, and an
// autostart VM comes back.
func TestAgentKill9AdoptsAndCrashes(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.start(t)
	h.create(t, "keep", nil)
	h.create(t, "phoenix", func(r *agent.CreateRequest) { r.Autostart = true })
	h.create(t, "plain", nil)
	pids := map[string]int{}
	for _, name := range []string{"keep", "phoenix", "plain"} {
		pids[name] = h.do(t, name, model.OpStart, agent.OpOptions{}).Runtime.PID
	}

	h.kill9(t)
	for name, pid := range pids {
		assert.NoError(t, syscall.Kill(pid, 0), "vm %s's VMM outlives the agent", name)
	}
	h.start(t)
	for name, pid := range pids {
		vm := h.get(t, name)
		assert.Equal(t, model.ObservedRunning, vm.Observed, name)
		require.NotNil(t, vm.Runtime, name)
		assert.Equal(t, pid, vm.Runtime.PID, "vm %s adopted, not restarted", name)
	}
	h.consoleSays(t, "keep", "echo adopted-$((1+1))", "adopted-2")

	// kill -9 of VMM processes: crashed with the reason; autostart again.
	require.NoError(t, syscall.Kill(pids["plain"], syscall.SIGKILL))
	require.NoError(t, syscall.Kill(pids["phoenix"], syscall.SIGKILL))
	vm := h.waitObserved(t, "plain", model.ObservedCrashed)
	assert.Contains(t, vm.Reason, fmt.Sprintf("VMM process %d died", pids["plain"]))
	assert.Equal(t, model.DesiredStopped, vm.Desired, "a crashed VM without autostart stays down")
	vm = h.waitObserved(t, "phoenix", model.ObservedRunning)
	assert.NotEqual(t, pids["phoenix"], vm.Runtime.PID)
	assert.Contains(t, eventPath(t, h.c, "phoenix"), "crashed")
}

// TestAgentAutostartAfterHostBoot: a host boot empties the run directory;
// the next agent starts the autostart VMs and leaves the others.
func TestAgentAutostartAfterHostBoot(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.start(t)
	h.create(t, "auto", func(r *agent.CreateRequest) { r.Autostart = true })
	h.create(t, "manual", nil)
	h.kill9(t)
	// What a reboot does to /run: the marker and sockets are gone.
	require.NoError(t, os.RemoveAll(h.run))
	require.NoError(t, os.MkdirAll(h.run, 0o755))
	h.start(t)
	h.waitObserved(t, "auto", model.ObservedRunning)
	assert.Equal(t, model.ObservedStopped, h.get(t, "manual").Observed)
	// An agent restart without a host boot starts nothing new.
	h.do(t, "auto", model.OpStop, agent.OpOptions{Force: true})
	h.kill9(t)
	h.start(t)
	time.Sleep(2 * time.Second) // four reconcile rounds
	assert.Equal(t, model.ObservedStopped, h.get(t, "auto").Observed, "a stopped autostart VM stays stopped when only the agent restarts")
}

// TestAgentTwentyClients: 20 clients each create, start, stop and remove
// a VM at the same time; every VM gets through, the ledger holds every
// step, and nothing is left behind (teardown checks processes and files).
func TestAgentTwentyClients(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.start(t)
	const n = 20
	names := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		names[i] = fmt.Sprintf("vm%02d", i)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = cycle(h.socket, names[i])
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, names[i])
	}
	vms, err := h.c.List(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Empty(t, vms)
	for _, name := range names {
		assert.Equal(t, []string{"starting", "running", "stopping", "stopped"}, eventPath(t, h.c, name), name)
	}
}

// cycle is one client's life of one VM.
func cycle(socket, name string) error {
	c := client.New(socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := c.Create(ctx, agent.CreateRequest{Name: name, Spec: model.Spec{CPUs: 1, MemoryBytes: 160 << 20, Accel: "tcg"}}); err != nil {
		return err
	}
	vm, err := c.Do(ctx, name, model.OpStart, agent.OpOptions{})
	if err != nil {
		return err
	}
	if vm.Observed != model.ObservedRunning {
		return fmt.Errorf("after start: %s (%s)", vm.Observed, vm.Reason)
	}
	if vm, err = c.Do(ctx, name, model.OpStop, agent.OpOptions{Force: true}); err != nil {
		return err
	}
	if vm.Observed != model.ObservedStopped {
		return fmt.Errorf("after stop: %s (%s)", vm.Observed, vm.Reason)
	}
	return c.Delete(ctx, name, false)
}

// TestAgentBuiltImage: a VM from `wisp image build` under the agent boots
// systemd to its login prompt (seen through `wisp vm logs`) and powers
// off on a graceful stop; `wisp vm ls` and `inspect` show it, found
// through $WISP_SOCKET.
func TestAgentBuiltImage(t *testing.T) {
	requireQEMU(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: wisp image build needs root (mmdebstrap in root mode)")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("SKIP: mmdebstrap not found (apt-get install mmdebstrap; make deps does)")
	}
	dir := filepath.Join(t.TempDir(), "vm")
	build := exec.Command(wispBin, "image", "build", "debian", "--root-password", "wisp-e2e", "-o", dir)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	h := newHost(t)
	h.start(t)
	h.create(t, "server", func(r *agent.CreateRequest) {
		r.Spec.VMDir = dir
		r.Spec.MemoryBytes = 512 << 20
	})
	h.do(t, "server", model.OpStart, agent.OpOptions{})
	deadline := time.Now().Add(5 * time.Minute) // a bound only a hung boot reaches
	for {
		var log bytes.Buffer
		require.NoError(t, h.c.Logs(ctxFor(t, time.Minute), "server", false, -1, &log))
		if strings.Contains(log.String(), "login:") {
			break
		}
		require.True(t, time.Now().Before(deadline), "no login prompt; console:\n%s", log.String())
		time.Sleep(500 * time.Millisecond)
	}

	assert.Contains(t, wispCLI(t, h, "vm", "logs", "server"), "login:", "vm logs prints the whole console log")
	ls := wispCLI(t, h, "vm", "ls")
	assert.Regexp(t, `(?m)^server\s+running\s+running\s+tcg\s+1\s+512M\s+\S+`, ls)
	inspect := wispCLI(t, h, "vm", "inspect", "server")
	assert.Contains(t, inspect, "vm directory "+dir)
	assert.Regexp(t, `state:\s+running \(desired running\)`, inspect)
	assert.Contains(t, wispCLI(t, h, "vm", "ls", "--json"), `"observed": "running"`)

	vm := h.do(t, "server", model.OpStop, agent.OpOptions{Timeout: 3 * time.Minute})
	assert.Equal(t, model.ObservedStopped, vm.Observed)
	assert.Contains(t, vm.Reason, "guest powered off", "systemd powered off on the button")
	assert.Contains(t, wispCLI(t, h, "vm", "ls"), "stopped")
}

// wispCLI runs a wisp command against h's agent, found through
// $WISP_SOCKET, and returns its output.
func wispCLI(t *testing.T, h *host, args ...string) string {
	t.Helper()
	cmd := exec.Command(wispBin, args...)
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+h.socket)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "wisp %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// TestAgentPreemption: a host full of best-effort VMs; a reserved VM
// starts and the lowest priority is held back (stopped, still wanted);
// when the reserved VM stops, it comes back. A best-effort VM that cannot
// fit waits rather than being refused.
func TestAgentPreemption(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.args = []string{"--host-memory", "640M"}
	h.start(t)
	for i, name := range []string{"low", "mid", "high"} {
		prio := i + 1
		h.create(t, name, func(r *agent.CreateRequest) { r.Class = model.ClassBestEffort; r.Priority = prio })
		h.do(t, name, model.OpStart, agent.OpOptions{})
	}
	h.create(t, "db", nil) // reserved, priority 0: still comes first
	vm := h.do(t, "db", model.OpStart, agent.OpOptions{})
	assert.Equal(t, model.ObservedRunning, vm.Observed)

	low := h.waitObserved(t, "low", model.ObservedStopped)
	assert.True(t, low.Held)
	assert.Equal(t, model.DesiredRunning, low.Desired, "a preempted VM is still wanted")
	assert.Equal(t, model.ObservedRunning, h.get(t, "mid").Observed)
	assert.Equal(t, model.ObservedRunning, h.get(t, "high").Observed)
	evs, err := h.c.Events(ctxFor(t, time.Minute), store.EventQuery{VM: "low"})
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(evs, func(e model.Event) bool {
		return e.Kind == model.EventPreempted && strings.Contains(e.Reason, "preempted by vm db")
	}), "low's history says why it stopped: %+v", evs)

	// A best-effort VM of the lowest priority waits for room.
	h.create(t, "batch", func(r *agent.CreateRequest) { r.Class = model.ClassBestEffort })
	vm = h.do(t, "batch", model.OpStart, agent.OpOptions{})
	assert.True(t, vm.Held)
	assert.Equal(t, model.ObservedStopped, vm.Observed)

	// The reserved VM goes: the preempted VM comes back first (priority
	// 1 over batch's 0), and batch still waits.
	h.do(t, "db", model.OpStop, agent.OpOptions{Force: true})
	low = h.waitObserved(t, "low", model.ObservedRunning)
	assert.False(t, low.Held)
	assert.True(t, h.get(t, "batch").Held)
	// Cancelling the wait is a stop.
	vm = h.do(t, "batch", model.OpStop, agent.OpOptions{})
	assert.False(t, vm.Held)
	assert.Equal(t, model.DesiredStopped, vm.Desired)
}

// TestAgentMetersTraffic: what a VM's NICs move reaches the ledger as
// traffic events, the meter the cost per GB reads.
func TestAgentMetersTraffic(t *testing.T) {
	requireQEMU(t)
	h := newHost(t)
	h.args = []string{"--traffic-interval", "500ms"}
	h.start(t)
	h.create(t, "chatty", func(r *agent.CreateRequest) { r.Spec.Nets = []string{"user"} })
	h.do(t, "chatty", model.OpStart, agent.OpOptions{})
	// DHCP over the user-mode network: a few packets each way.
	h.consoleSays(t, "chatty", "ip link set eth0 up; udhcpc -i eth0 -n -q -f -s /bin/true >/dev/null 2>&1; echo dhcp-$?", "dhcp-0")
	deadline := time.Now().Add(time.Minute) // a bound only a stuck meter reaches
	for {
		evs, err := h.c.Events(ctxFor(t, time.Minute), store.EventQuery{VM: "chatty"})
		require.NoError(t, err)
		var bytes uint64
		for _, e := range evs {
			if e.Kind == model.EventTraffic {
				bytes += e.TrafficBytes
			}
		}
		if bytes > 0 {
			assert.Greater(t, bytes, uint64(500), "a DHCP exchange moves a few hundred bytes at least")
			return
		}
		require.True(t, time.Now().Before(deadline), "no traffic event: %+v", evs)
		time.Sleep(200 * time.Millisecond)
	}
}
