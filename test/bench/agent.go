package main

// The agent bench: a real `wisp agent` with its own store and run
// directory, driven through package client the way `wisp vm` drives it.
// It times the agent's start-up (wall and CPU, against Firecracker's "API
// ready in <= 8 CPU ms"), the API's latency with 100 VMs defined, starts
// and stops one VM at a time, fills the host with small TCG VMs back to
// back, and reads the RSS of the agent and of one VM's VMM processes
// (against Firecracker's "VMM overhead <= 5 MiB").

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/client"
	"github.com/wisp-vmm/wisp/internal/tail"
)

const (
	agentDefinedVMs = 100 // VMs in the store for the ls/inspect numbers
	agentReadCalls  = 200 // List and Get calls each
	agentStartStops = 10  // VMs started and stopped one at a time
	// agentFillCap stops the fill before the agent says the host is full,
	// so that a large host is not loaded with dozens of TCG guests.
	agentFillCap   = 40
	agentVMMemory  = 128 << 20
	agentIdleProbe = 5 * time.Second // how long the idle agent's CPU is watched
	// clockTicks is USER_HZ, the unit of utime and stime in
	// /proc/PID/stat; Linux fixes it at 100 for userspace.
	clockTicks = 100
)

// agentBench runs the whole agent bench against wispBin and prints its
// table. Every VM, process and directory it made is gone when it returns,
// also on an error or an interrupt.
func agentBench(ctx context.Context, n int, wispBin string) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var startWall, startCPU, startSched []int64
	for i := 0; i < n; i++ {
		ag, err := startAgent(ctx, wispBin)
		if err != nil {
			return fmt.Errorf("agent start-up: %w", err)
		}
		startWall = append(startWall, int64(ag.ready))
		startCPU = append(startCPU, int64(ag.readyCPU))
		startSched = append(startSched, int64(ag.readySched))
		if err := ag.close(); err != nil {
			return err
		}
	}

	helpCPU, err := processCPU(ctx, n, wispBin, "--help")
	if err != nil {
		return err
	}

	ag, err := startAgent(ctx, wispBin)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ag.close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "bench: agent cleanup: %v\n", cerr)
		}
	}()
	host, err := ag.client.Host(ctx)
	if err != nil {
		return fmt.Errorf("agent host: %w", err)
	}
	r, err := ag.measure(ctx)
	if err != nil {
		return fmt.Errorf("agent bench: %w (agent log: %s)", err, ag.logTail())
	}

	ms := func(d int64) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
	mib := func(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Printf("host agent (wisp agent: default flags, host %d CPUs x %g overcommit, %s; VMs 1 vCPU, %d MiB, TCG, default guest)\n",
		host.CPUs, host.CPUOvercommit, model.FormatBytes(host.MemoryBytes), agentVMMemory>>20)
	row := func(what, value, goal string) { fmt.Printf("  %-50s %-34s (%s)\n", what, value, goal) }
	row(fmt.Sprintf("start-up: exec to first answer, median of %d", n), ms(median(startWall)), "goal <= 50 ms")
	row("start-up CPU then, utime+stime (10 ms ticks)", ms(median(startCPU)), "Firecracker: API ready <= 8 CPU ms")
	row("start-up CPU then, schedstat (ns, all threads)", ms(median(startSched)), "Firecracker: API ready <= 8 CPU ms")
	row("  baseline: wisp --help, whole process, rusage", ms(median(helpCPU)), "what the binary costs before main")
	row(fmt.Sprintf("create, %d VMs", agentDefinedVMs), pcts(r.create), "goal p99 <= 50 ms")
	row(fmt.Sprintf("ls (List), %d VMs defined, %d calls", agentDefinedVMs, agentReadCalls), pcts(r.list), "goal p99 <= 10 ms")
	row(fmt.Sprintf("inspect (Get), %d VMs defined, %d calls", agentDefinedVMs, agentReadCalls), pcts(r.get), "goal p99 <= 5 ms")
	row(fmt.Sprintf("start to running, %d VMs one at a time", len(r.start)), pcts(r.start), "goal p50 <= 500 ms")
	row("  asked to VMM spawned (ledger)", pcts(r.startPhases[0]), "the reconcile loop picks it up")
	row("  VMM spawned to seen running (ledger)", pcts(r.startPhases[1]), "the loop looks again at its next tick")
	row(fmt.Sprintf("stop --force to stopped, %d VMs one at a time", len(r.stop)), pcts(r.stop), "goal p50 <= 200 ms")
	row("  asked to stopping (ledger)", pcts(r.stopPhases[0]), "the reconcile loop picks it up")
	row("  stopping to seen stopped (ledger)", pcts(r.stopPhases[1]), "the VMM exits, the loop sees it")
	row(fmt.Sprintf("agent CPU idle, %d VMs defined, none running", agentDefinedVMs), fmt.Sprintf("%.1f ms/s", r.idleCPU), "goal <= 5 ms/s")
	row(fmt.Sprintf("agent RSS, %d VMs defined, none running", agentDefinedVMs), mib(r.agentRSS), "goal <= 50 MiB")
	row("fill: VMs started back to back until full", fmt.Sprintf("%d in %v: %.2f VMs/s", r.filled, r.fillTime.Round(time.Millisecond), float64(r.filled)/r.fillTime.Seconds()), "goal >= 2 VMs/s on TCG")
	row("fill: why it ended", r.fillEnd, "full when the agent says so")
	row(fmt.Sprintf("agent RSS, %d VMs defined, %d running", agentDefinedVMs, r.filled), mib(r.agentRSSFull), "goal <= 50 MiB")
	row(fmt.Sprintf("force-stop all %d, one call each", r.filled), r.drainTime.Round(time.Millisecond).String(), "informational")
	if r.vmm.vms > 0 {
		row(fmt.Sprintf("wisp run (VMM) RSS, median of %d VMs", r.vmm.vms), mib(r.vmm.wisp.rss), "Firecracker: VMM overhead <= 5 MiB")
		row("  of which anon / file / guest RAM (shmem)", fmt.Sprintf("%s / %s / %s", mib(r.vmm.wisp.anon), mib(r.vmm.wisp.file), mib(r.vmm.wisp.shmem)), "the device side maps guest RAM")
		row("QEMU (TCG) RSS beyond guest RAM: anon + file", mib(r.vmm.qemu.anon+r.vmm.qemu.file), "informational: QEMU's own")
		row("  guest RAM touched (QEMU's shmem)", mib(r.vmm.qemu.shmem), fmt.Sprintf("of %d MiB", agentVMMemory>>20))
		row("VMM processes per VM", strings.Join(r.vmm.comms, ", "), "informational")
	}
	fmt.Println()
	return nil
}

// agentProc is a `wisp agent` the bench started, with its directories.
type agentProc struct {
	cmd      *exec.Cmd
	client   *client.Client
	stateDir string
	runDir   string
	log      *tail.Buffer
	exited   chan struct{}
	// ready is exec to the first answered API call; readyCPU and
	// readySched the CPU the agent had used by then.
	ready, readyCPU, readySched time.Duration
	// vmmPIDs are the VMM processes seen, killed at close if still there.
	vmmPIDs map[int]bool
}

// startAgent runs `wisp agent` on fresh directories and returns once it
// answers an API call. The run directory is short because every running
// VM's control socket lives under it, and a unix socket path is at most
// 107 bytes.
func startAgent(ctx context.Context, wispBin string) (*agentProc, error) {
	stateDir, err := os.MkdirTemp("", "wisp-bench-agent-")
	if err != nil {
		return nil, err
	}
	runDir, err := os.MkdirTemp("", "wb")
	if err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	sock := filepath.Join(runDir, "agent.sock")
	a := &agentProc{
		stateDir: stateDir, runDir: runDir,
		client: client.New(sock), log: tail.New(64 << 10),
		exited: make(chan struct{}), vmmPIDs: map[int]bool{},
	}
	a.cmd = exec.Command(wispBin, "agent", "--state-dir", stateDir, "--run-dir", runDir, "--socket", sock)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	start := time.Now()
	if err := a.cmd.Start(); err != nil {
		a.removeDirs()
		return nil, fmt.Errorf("start wisp agent: %w", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	if err := a.waitReady(ctx, start); err != nil {
		_ = a.close()
		return nil, err
	}
	return a, nil
}

// waitReady polls the API until it answers, then reads the agent's CPU
// time: the polling is cheap for the agent (a refused dial costs it
// nothing before it listens).
func (a *agentProc) waitReady(ctx context.Context, start time.Time) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := a.client.Host(cctx)
		cancel()
		if err == nil {
			a.ready = time.Since(start)
			break
		}
		select {
		case <-a.exited:
			return fmt.Errorf("wisp agent exited before answering: %s", a.logTail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wisp agent did not answer in 30s: %v", err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	pid := a.cmd.Process.Pid
	var err error
	if a.readyCPU, err = cpuTicks(pid); err != nil {
		return err
	}
	a.readySched, err = schedCPU(pid)
	return err
}

func (a *agentProc) logTail() string { return a.log.LastLine() }

// close removes every VM still defined, stops the agent, kills any VMM
// process it left, and removes the directories.
func (a *agentProc) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	select {
	case <-a.exited:
	default:
		errs = append(errs, a.removeVMs(ctx))
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	}
	errs = append(errs, a.killVMMs())
	a.removeDirs()
	return errors.Join(errs...)
}

// removeVMs force-deletes every VM the agent has.
func (a *agentProc) removeVMs(ctx context.Context) error {
	vms, err := a.client.List(ctx)
	if err != nil {
		return fmt.Errorf("list vms for cleanup: %w", err)
	}
	var errs []error
	for _, vm := range vms {
		a.note(vm)
		if err := a.client.Delete(ctx, vm.Name, true); err != nil && !errors.Is(err, model.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete %s: %w", vm.Name, err))
		}
	}
	return errors.Join(errs...)
}

// note remembers vm's VMM process for killVMMs.
func (a *agentProc) note(vm agent.VMInfo) {
	if vm.Runtime != nil && vm.Runtime.PID > 0 {
		a.vmmPIDs[vm.Runtime.PID] = true
	}
}

// killVMMs kills what is left of the VMM processes seen: each runs in a
// session of its own (so its process group is its pid), and is told from
// a later process that reused the pid by its control socket under this
// agent's run directory.
func (a *agentProc) killVMMs() error {
	var errs []error
	for pid := range a.vmmPIDs {
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(argv), a.runDir) {
			continue
		}
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill VMM %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

func (a *agentProc) removeDirs() {
	os.RemoveAll(a.runDir)
	os.RemoveAll(a.stateDir)
}

// agentResults is what measure found.
type agentResults struct {
	create, list, get, start, stop []time.Duration
	// startPhases and stopPhases split start and stop by the ledger's
	// event times: asked to the VMM spawned (or asked to stop), and from
	// there to the state reached.
	startPhases, stopPhases [2][]time.Duration
	idleCPU                 float64 // ms of CPU per second
	agentRSS, agentRSSFull  uint64
	filled                  int
	fillTime, drainTime     time.Duration
	fillEnd                 string
	vmm                     vmmMemory
}

// measure runs the timed parts against a fresh agent.
func (a *agentProc) measure(ctx context.Context) (agentResults, error) {
	var r agentResults
	names := make([]string, agentDefinedVMs)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%03d", i)
		spec := model.Spec{CPUs: 1, MemoryBytes: agentVMMemory, Accel: "tcg"}
		t := time.Now()
		if _, err := a.client.Create(ctx, agent.CreateRequest{Name: names[i], Spec: spec}); err != nil {
			return r, fmt.Errorf("create %s: %w", names[i], err)
		}
		r.create = append(r.create, time.Since(t))
	}
	pid := a.cmd.Process.Pid
	for i := 0; i < agentReadCalls; i++ {
		t := time.Now()
		vms, err := a.client.List(ctx)
		if err != nil {
			return r, fmt.Errorf("list: %w", err)
		}
		r.list = append(r.list, time.Since(t))
		if len(vms) != agentDefinedVMs {
			return r, fmt.Errorf("list: %d vms, want %d", len(vms), agentDefinedVMs)
		}
		name := names[i%len(names)]
		t = time.Now()
		if _, err := a.client.Get(ctx, name); err != nil {
			return r, fmt.Errorf("inspect %s: %w", name, err)
		}
		r.get = append(r.get, time.Since(t))
	}
	r.agentRSS = rss(pid)
	var err error
	if r.idleCPU, err = idleCPU(ctx, pid, agentIdleProbe); err != nil {
		return r, err
	}

	for _, name := range names[:agentStartStops] {
		t := time.Now()
		vm, err := a.client.Do(ctx, name, model.OpStart, agent.OpOptions{})
		a.note(vm)
		if err != nil {
			return r, fmt.Errorf("start %s: %w", name, err)
		}
		r.start = append(r.start, time.Since(t))
		t = time.Now()
		if _, err := a.client.Do(ctx, name, model.OpStop, agent.OpOptions{Force: true}); err != nil {
			return r, fmt.Errorf("stop %s: %w", name, err)
		}
		r.stop = append(r.stop, time.Since(t))
		evs, err := a.client.Events(ctx, store.EventQuery{VM: name})
		if err != nil {
			return r, fmt.Errorf("events of %s: %w", name, err)
		}
		if mid, end, ok := phases(evs, model.DesiredRunning, model.ObservedStarting, model.ObservedRunning); ok {
			r.startPhases[0], r.startPhases[1] = append(r.startPhases[0], mid), append(r.startPhases[1], end)
		}
		if mid, end, ok := phases(evs, model.DesiredStopped, model.ObservedStopping, model.ObservedStopped); ok {
			r.stopPhases[0], r.stopPhases[1] = append(r.stopPhases[0], mid), append(r.stopPhases[1], end)
		}
	}

	if err := a.fill(ctx, names, &r); err != nil {
		return r, err
	}
	return r, nil
}

// phases splits the first operation in evs that asked for desired: from
// the ask to the first observed mid, and from there to the observed end.
func phases(evs []model.Event, desired model.Desired, mid, end model.Observed) (toMid, toEnd time.Duration, ok bool) {
	var asked, midAt time.Time
	for _, ev := range evs {
		switch {
		case asked.IsZero() && ev.Kind == model.EventDesired && ev.To == string(desired):
			asked = ev.Time
		case !asked.IsZero() && midAt.IsZero() && ev.Kind == model.EventObserved && ev.To == string(mid):
			midAt = ev.Time
		case !midAt.IsZero() && ev.Kind == model.EventObserved && ev.To == string(end):
			return midAt.Sub(asked), ev.Time.Sub(midAt), true
		}
	}
	return 0, 0, false
}

// processCPU runs wisp with args n times and returns each run's CPU time
// (user+system, from its rusage) in nanoseconds.
func processCPU(ctx context.Context, n int, wispBin string, args ...string) ([]int64, error) {
	var out []int64
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, wispBin, args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("wisp %s: %v: %s", strings.Join(args, " "), err, lastLine(string(b)))
		}
		out = append(out, int64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()))
	}
	return out, nil
}

// fill starts VMs one after the other, each to running, until the agent
// refuses one for want of room (or the cap), samples the memory of the
// agent and of the VMM processes while they all run, then force-stops them.
func (a *agentProc) fill(ctx context.Context, names []string, r *agentResults) error {
	var running []agent.VMInfo
	start := time.Now()
	r.fillEnd = fmt.Sprintf("bench cap of %d VMs", agentFillCap)
	for _, name := range names[:min(agentFillCap+1, len(names))] {
		if len(running) == agentFillCap {
			break
		}
		vm, err := a.client.Do(ctx, name, model.OpStart, agent.OpOptions{})
		a.note(vm)
		if errors.Is(err, model.ErrConflict) {
			r.fillEnd = "409: " + err.Error()
			break
		}
		if err != nil {
			return fmt.Errorf("fill: start %s: %w", name, err)
		}
		running = append(running, vm)
	}
	r.filled = len(running)
	r.fillTime = time.Since(start)
	r.agentRSSFull = rss(a.cmd.Process.Pid)
	r.vmm = vmmMemoryOf(running)

	start = time.Now()
	for _, vm := range running {
		if _, err := a.client.Do(ctx, vm.Name, model.OpStop, agent.OpOptions{Force: true}); err != nil {
			return fmt.Errorf("fill: stop %s: %w", vm.Name, err)
		}
	}
	r.drainTime = time.Since(start)
	return nil
}

// procMemory is one process's resident memory by kind, from
// /proc/PID/status: anonymous, file-backed (binary and libraries, shared
// with other processes running the same files), and shared memory (here:
// the guest RAM memfd, for the pages this process has touched or mapped
// in).
type procMemory struct{ rss, anon, file, shmem uint64 }

// vmmMemory is the median memory of the VMM processes of running VMs:
// the `wisp run` process and its QEMU child.
type vmmMemory struct {
	vms        int
	wisp, qemu procMemory
	comms      []string // the command names of one VM's process tree
}

func vmmMemoryOf(vms []agent.VMInfo) vmmMemory {
	var wisp, qemu []procMemory
	var comms []string
	for _, vm := range vms {
		if vm.Runtime == nil {
			continue
		}
		pid := vm.Runtime.PID
		w, ok := readProcMemory(pid)
		if !ok {
			continue
		}
		tree := []string{procComm(pid)}
		var q procMemory
		for _, child := range descendants(pid) {
			tree = append(tree, procComm(child))
			if m, ok := readProcMemory(child); ok && strings.HasPrefix(procComm(child), "qemu") {
				q = m
			}
		}
		wisp, qemu = append(wisp, w), append(qemu, q)
		if comms == nil {
			comms = tree
		}
	}
	return vmmMemory{vms: len(wisp), wisp: medianMemory(wisp), qemu: medianMemory(qemu), comms: comms}
}

func descendants(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// medianMemory takes the median of each kind on its own.
func medianMemory(ms []procMemory) procMemory {
	if len(ms) == 0 {
		return procMemory{}
	}
	pick := func(f func(procMemory) uint64) uint64 {
		var xs []uint64
		for _, m := range ms {
			xs = append(xs, f(m))
		}
		return median(xs)
	}
	return procMemory{
		rss:   pick(func(m procMemory) uint64 { return m.rss }),
		anon:  pick(func(m procMemory) uint64 { return m.anon }),
		file:  pick(func(m procMemory) uint64 { return m.file }),
		shmem: pick(func(m procMemory) uint64 { return m.shmem }),
	}
}

func readProcMemory(pid int) (procMemory, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMemory{}, false
	}
	var m procMemory
	fields := map[string]*uint64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file, "RssShmem:": &m.shmem}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || fields[f[0]] == nil {
			continue
		}
		kb, _ := strconv.ParseUint(f[1], 10, 64)
		*fields[f[0]] = kb << 10
	}
	return m, true
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// cpuTicks is pid's utime+stime from /proc/PID/stat, in USER_HZ ticks
// (10 ms): the figure `ps` and Firecracker's own measure use.
func cpuTicks(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("agent cpu time: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// Fields after "pid (comm) " start at field 3 (state); utime and
	// stime are fields 14 and 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// schedCPU is the CPU time of pid's threads in nanoseconds, summed from
// /proc/PID/task/*/schedstat: finer than utime+stime's 10 ms ticks, which
// matters for a budget of 8 ms. Threads that already ended are missed; a
// Go program keeps its threads.
func schedCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("agent schedstat: no threads found for %d", pid)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// idleCPU is how much CPU pid uses per second of wall time over d while
// nobody calls it: what its reconcile loop costs.
func idleCPU(ctx context.Context, pid int, d time.Duration) (float64, error) {
	before, err := schedCPU(pid)
	if err != nil {
		return 0, err
	}
	t := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	after, err := schedCPU(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / 1e6 / time.Since(t).Seconds(), nil
}

// pcts is "p50 X  p99 Y" of ds.
func pcts(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1 // nearest rank
		return s[min(max(i, 0), len(s)-1)]
	}
	return fmt.Sprintf("p50 %v  p99 %v", roundLatency(at(0.50)), roundLatency(at(0.99)))
}

// roundLatency keeps three significant figures or so at every scale.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
