// Package agent is wisp's host agent: it keeps many VMs on one host, each
// run by its own VMM process (`wisp run --api-sock`), with their specs,
// desired and observed states and an event history in a bbolt store.
//
// Every operation (an API call, later a schedule or a preemption) only
// writes a desired state and a reason; one reconcile loop makes the
// observed state follow, one VM at a time. That single writer is what makes
// a kill -9 of the agent safe: on restart it finds the VMM processes again
// through the runtime it recorded for each VM and their control sockets.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/vmm"
)

// Defaults for a host.
const (
	DefaultStateDir = "/var/lib/wisp"
	DefaultRunDir   = "/run/wisp"
	DefaultGroup    = "wisp"
	// DefaultCPUOvercommit is how many vCPUs a host CPU may carry: vCPUs
	// are time-shared and mostly idle, memory is the hard limit.
	DefaultCPUOvercommit = 16
	// DefaultStopTimeout is how long a graceful stop waits for the guest
	// to power off before forcing it.
	DefaultStopTimeout = 30 * time.Second
)

// Config says where the agent keeps things and what it runs.
type Config struct {
	// StateDir holds the store (wisp.db) and each VM's files that outlive
	// a run (console log, VMM log, qcow2 overlays). Default: /var/lib/wisp.
	StateDir string
	// RunDir holds the API socket and each running VM's runtime directory
	// (control socket, exit record); it is expected on a tmpfs, so that
	// what it holds ends with the host. Default: /run/wisp.
	RunDir string
	// Socket is the API's unix socket. Default: RunDir/agent.sock.
	Socket string
	// Group may use the socket (root:Group, 0660). Default: "wisp"; when
	// no such group exists the socket is root's alone.
	Group string
	// Wisp is the wisp binary each VMM process runs. Default: this
	// program.
	Wisp string
	// Host is what VMs may use. Zero: this host's CPUs and memory.
	Host model.Capacity
	// Logger gets the agent's log. Nil: discarded.
	Logger *slog.Logger
	// Interval is how often the reconcile loop looks at every VM even
	// when nothing asked it to. Default: 2s.
	Interval time.Duration
	// TrafficInterval is how often a running VM's NIC counters go into
	// the ledger (one "traffic" event with the bytes since the last):
	// often enough for a bill, rarely enough that the ledger stays small.
	// Default: a minute.
	TrafficInterval time.Duration
	// Now is the clock schedules and cost read. Default: time.Now; tests
	// inject one.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.RunDir, "agent.sock")
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Wisp == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("find the wisp binary: %w", err)
		}
		c.Wisp = exe
	}
	if c.Host.CPUs == 0 {
		c.Host.CPUs = runtime.NumCPU()
	}
	if c.Host.CPUOvercommit == 0 {
		c.Host.CPUOvercommit = DefaultCPUOvercommit
	}
	if c.Host.MemoryBytes == 0 {
		mem, err := vmm.HostMemory()
		if err != nil {
			return c, err
		}
		c.Host.MemoryBytes = mem
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TrafficInterval == 0 {
		c.TrafficInterval = time.Minute
	}
	return c, nil
}

// Agent keeps the VMs of one host.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store

	kick chan struct{} // wakes the reconcile loop
	// capMu makes capacity decisions (admitting a start, preempting,
	// bringing held VMs back) one at a time.
	capMu sync.Mutex

	mu      sync.Mutex
	workers map[string]*worker // per VM: the one goroutine acting on it
	waiters map[string][]chan struct{}
	follow  map[chan struct{}]struct{} // event followers, woken on new events
	procs   map[int]*process           // VMM processes this agent watches
	closed  bool
}

// New opens the agent's store and directories. Nothing runs until Run.
func New(cfg Config) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.StateDir, cfg.RunDir, filepath.Join(cfg.StateDir, "vms"), filepath.Join(cfg.RunDir, "vms")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("agent directory: %w", err)
		}
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "wisp.db"))
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, log: cfg.Logger, store: st,
		kick:    make(chan struct{}, 1),
		workers: map[string]*worker{},
		waiters: map[string][]chan struct{}{},
		follow:  map[chan struct{}]struct{}{},
		procs:   map[int]*process{},
	}, nil
}

// Close closes the store. VMs keep running.
func (a *Agent) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	return a.store.Close()
}

// now is the agent's clock.
func (a *Agent) now() time.Time { return a.cfg.Now() }

// Store is the agent's store, for the policies built on it.
func (a *Agent) Store() *store.Store { return a.store }

// wake asks the reconcile loop to look at every VM soon.
func (a *Agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// VMInfo is a VM as the API shows it: its record and how long it has run.
type VMInfo struct {
	model.VM
	UptimeSeconds float64 `json:"uptime_seconds,omitempty"`
}

func info(vm model.VM, now time.Time) VMInfo {
	v := VMInfo{VM: vm}
	if vm.Runtime != nil && !vm.Runtime.StartedAt.IsZero() && (vm.Observed == model.ObservedRunning || vm.Observed == model.ObservedPaused) {
		v.UptimeSeconds = now.Sub(vm.Runtime.StartedAt).Seconds()
	}
	return v
}

// CreateRequest is a new VM.
type CreateRequest struct {
	Name      string            `json:"name"`
	Spec      model.Spec        `json:"spec"`
	Autostart bool              `json:"autostart,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Priority  int               `json:"priority,omitempty"`
	Class     string            `json:"class,omitempty"`
	// Start asks for the VM to be started once created.
	Start bool `json:"start,omitempty"`
	// LeaseFrom and LeaseUntil: the VM runs only within this window (the
	// agent starts and stops it at its ends).
	LeaseFrom  *time.Time `json:"lease_from,omitempty"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
}

// OpOptions tune an operation.
type OpOptions struct {
	// Force: stop without the power button; delete a VM that runs.
	Force bool
	// Timeout bounds a graceful stop before it is forced. Zero:
	// DefaultStopTimeout.
	Timeout time.Duration
	// NoWait returns once the desired state is recorded, before the VM
	// got there.
	NoWait bool
	// Reason is who asked, for the ledger. Empty: "user: OP".
	Reason string
}

// HostInfo is what the host has and what its VMs hold.
type HostInfo struct {
	CPUs               int     `json:"cpus"`
	MemoryBytes        uint64  `json:"memory_bytes"`
	CPUOvercommit      float64 `json:"cpu_overcommit"`
	UsedCPUs           int     `json:"used_cpus"`
	UsedMemoryBytes    uint64  `json:"used_memory_bytes"`
	VMs                int     `json:"vms"`
	Running            int     `json:"running"`
	AgentPID           int     `json:"agent_pid"`
	StoreSchemaVersion int     `json:"store_schema_version"`
}

var errClosed = errors.New("agent is shutting down")

// list returns every VM record.
func (a *Agent) list() ([]model.VM, error) { return a.store.ListVMs() }

// ctxDone reports whether ctx has ended.
func ctxDone(ctx context.Context) bool { return ctx.Err() != nil }
