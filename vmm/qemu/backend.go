// Package qemu is wisp's TCG backend: QEMU's emulator runs the guest's CPUs
// while wisp owns everything around it. QEMU starts paused and connects to
// unix sockets wisp listens on in a private runtime directory: QMP (control
// and events), COM1 (the guest console, relayed to vmm.Console) and the
// debug port 0x440 (boot markers). Guest RAM is a shared memfd so the device
// plane can serve virtio devices to QEMU over vhost-user (Options.Devices).
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/internal/stale"
	"github.com/wisp-vmm/wisp/internal/tail"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/qemu/qmp"
)

// DefaultBinary is the QEMU looked up in PATH when Options.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// Errors; test with errors.Is.
var (
	ErrNotInstalled   = errors.New("qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`")
	ErrAlreadyStarted = errors.New("qemu backend: Start called twice")
	ErrNotRunning     = errors.New("qemu backend: VM is not running")
	ErrStartFailed    = errors.New("qemu backend: start failed")
)

// Timeouts for steps that have no caller context. Each bounds a wait on
// QEMU, which normally answers in milliseconds; none is a guest deadline.
const (
	commandTimeout = 10 * time.Second // Pause, Resume
	quitGrace      = 3 * time.Second  // after QMP quit, before SIGKILL
	drainTimeout   = 2 * time.Second  // sockets to reach EOF after QEMU exited
)

// Options tunes the backend; the zero value works.
type Options struct {
	// Binary is QEMU's path. Empty: qemu-system-x86_64 from PATH.
	Binary string
	// RuntimeDir is where the VM's private socket directory is created
	// (0700, removed on every exit path). Empty: os.TempDir(). Unix socket
	// paths are limited to 107 bytes, so keep it short.
	RuntimeDir string
	// Machine is QEMU's machine type. Empty: MachineQ35.
	Machine Machine
	// CPUModel is QEMU's -cpu. Empty: "max" (every feature TCG emulates).
	CPUModel string
	// Firmware is QEMU's -bios. Empty: QBootROM where installed, else
	// QEMU's default; FirmwareQEMUDefault: QEMU's default (SeaBIOS).
	Firmware string
	// TBSizeMiB sets TCG's translation cache size. 0: QEMU's default.
	TBSizeMiB int
	// NoSandbox leaves out QEMU's seccomp sandbox (-sandbox on,...), for
	// QEMU builds without seccomp support.
	NoSandbox bool
	// Start is the time boot markers are measured from. Zero: when Start
	// is called.
	Start time.Time
	// OnBootMarker is called, from one goroutine and in order, for every
	// byte the guest writes to I/O port 0x440.
	OnBootMarker func(code byte, since time.Duration)
	// Devices adds devices served by wisp, e.g. vhost-user disks and nets.
	Devices DeviceFunc
	// Log, if set, also receives QEMU's own stdout and stderr.
	Log io.Writer
}

type state int

const (
	stateNew state = iota
	stateStarting
	stateRunning
	stateEnded
)

// Backend runs one VM in QEMU. It implements vmm.Backend.
type Backend struct {
	cfg     vmm.Config
	console vmm.Console
	opts    Options
	binary  string

	done chan struct{} // closed once the VM has ended and everything is cleaned up

	mu      sync.Mutex
	state   state
	qmp     *qmp.Client
	proc    *os.Process
	reaped  bool
	facts   exitFacts
	status  vmm.ExitStatus
	waitErr error
}

var _ vmm.Backend = (*Backend)(nil)

// New checks that QEMU is there and returns a Backend for cfg, which must be
// validated. Nothing runs until Start.
func New(cfg vmm.Config, console vmm.Console, opts Options) (*Backend, error) {
	bin, err := findBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	if console.Out == nil {
		console.Out = io.Discard
	}
	opts.Firmware = defaultFirmware(opts.Firmware)
	// Fail early on what the command line cannot express.
	if _, err := commandLine(cfg, sockets{}, opts, nil); err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, console: console, opts: opts, binary: bin, done: make(chan struct{})}, nil
}

func findBinary(path string) (string, error) {
	if path == "" {
		p, err := exec.LookPath(DefaultBinary)
		if err != nil {
			return "", ErrNotInstalled
		}
		return p, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("qemu binary %s: %w (%w)", path, ErrNotInstalled, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("qemu binary %s: not an executable file: %w", path, ErrNotInstalled)
	}
	return path, nil
}

// Binary is the QEMU executable the backend runs.
func (b *Backend) Binary() string { return b.binary }

// run holds one VM's resources while Start builds them; abort releases
// whatever exists.
type run struct {
	dir        string
	devices    []Device // extra devices, whose Close release calls
	listeners  []*net.UnixListener
	conns      []net.Conn
	procExited chan struct{}
	procErr    error
	stderr     *tail.Buffer
}

// Start creates the runtime directory, starts QEMU paused, connects QMP,
// the console and the boot-marker port, then resumes the guest. It returns
// once the guest runs. Cancelling ctx, during Start or later, kills QEMU.
func (b *Backend) Start(ctx context.Context) (err error) {
	b.mu.Lock()
	if b.state != stateNew {
		b.mu.Unlock()
		return ErrAlreadyStarted
	}
	b.state = stateStarting
	b.mu.Unlock()

	start := b.opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	r := &run{procExited: make(chan struct{}), stderr: tail.New(8 << 10)}
	defer func() {
		if err != nil {
			err = b.abort(ctx, r, err)
		}
	}()

	base := b.opts.RuntimeDir
	if base == "" {
		base = os.TempDir()
	}
	// The owner record lets the next wisp remove the directory if this
	// one is killed before it can (internal/stale).
	dir, err := stale.MkdirTemp(base, stale.PrefixQEMU)
	if err != nil {
		return fmt.Errorf("runtime dir: %w", err)
	}
	r.dir = dir
	socks := sockets{
		QMP:      filepath.Join(dir, "qmp.sock"),
		Console:  filepath.Join(dir, "console.sock"),
		Debugcon: filepath.Join(dir, "debugcon.sock"),
	}
	for _, p := range []string{socks.QMP, socks.Console, socks.Debugcon} {
		l, err := listenUnix(p)
		if err != nil {
			return err
		}
		r.listeners = append(r.listeners, l)
	}
	var extra []Device
	if b.opts.Devices != nil {
		if extra, err = b.opts.Devices(dir); err != nil {
			return fmt.Errorf("extra devices: %w", err)
		}
		r.devices = extra
	}
	args, err := commandLine(b.cfg, socks, b.opts, extra)
	if err != nil {
		return err
	}
	if err := b.spawn(r, args); err != nil {
		return err
	}

	conns, err := acceptAll(ctx, r)
	if err != nil {
		return err
	}
	qmpConn, conConn, dbgConn := conns[0], conns[1], conns[2]
	client, err := qmp.Handshake(ctx, qmpConn)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.qmp = client
	b.mu.Unlock()

	relaysDone := make(chan struct{}, 2)
	go func() { b.relayOut(conConn); relaysDone <- struct{}{} }()
	go func() { b.readMarkers(dbgConn, start); relaysDone <- struct{}{} }()
	if b.console.In != nil {
		// This goroutine ends when In returns an error or EOF, or when a
		// write fails after the VM ended; a reader such as os.Stdin may
		// keep it blocked until its next byte.
		go func() { _, _ = io.Copy(conConn, b.console.In) }()
	}
	eventsDone := make(chan struct{})
	go func() { b.handleEvents(client); close(eventsDone) }()

	if err := client.Cont(ctx); err != nil {
		return fmt.Errorf("resume guest: %w", err)
	}

	b.mu.Lock()
	b.state = stateRunning
	b.mu.Unlock()
	stopWatch := context.AfterFunc(ctx, func() { b.kill(stopContext) })
	go b.supervise(r, client, relaysDone, eventsDone, stopWatch)
	return nil
}

func listenUnix(path string) (*net.UnixListener, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("socket path %s is longer than 107 bytes: use a shorter Options.RuntimeDir", path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

// spawn starts QEMU in its own process group. The fork happens on an OS
// thread locked for the VM's lifetime: Pdeathsig fires when the forking
// thread exits, so this keeps a thread recycled by unrelated code (netns
// helpers exit locked threads) from killing QEMU, while QEMU still dies
// with wisp.
func (b *Backend) spawn(r *run, args []string) error {
	cmd := exec.Command(b.binary, args...)
	var out io.Writer = r.stderr
	if b.opts.Log != nil {
		out = io.MultiWriter(r.stderr, b.opts.Log)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine ends after QEMU has been reaped,
		// and its thread with it.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", b.binary, err)
			return
		}
		b.mu.Lock()
		b.proc = cmd.Process
		b.mu.Unlock()
		started <- nil
		werr := cmd.Wait()
		b.mu.Lock()
		b.reaped = true
		b.mu.Unlock()
		r.procErr = werr
		close(r.procExited)
	}()
	return <-started
}

// acceptAll waits for QEMU to connect to each listener, in listener order.
func acceptAll(ctx context.Context, r *run) ([]net.Conn, error) {
	type result struct {
		i    int
		conn net.Conn
		err  error
	}
	results := make(chan result, len(r.listeners))
	for i, l := range r.listeners {
		go func() {
			c, err := l.Accept()
			results <- result{i, c, err}
		}()
	}
	conns := make([]net.Conn, len(r.listeners))
	var firstErr error
	for range r.listeners {
		var res result
		select {
		case res = <-results:
		case <-r.procExited:
			firstErr = fmt.Errorf("qemu-system-x86_64 exited before connecting: %v: %s", r.procErr, r.stderr.LastLine())
		case <-ctx.Done():
			firstErr = fmt.Errorf("waiting for qemu-system-x86_64 to connect: %w", context.Cause(ctx))
		}
		if firstErr != nil {
			break
		}
		if res.err != nil {
			firstErr = fmt.Errorf("accept on %s: %w", r.listeners[res.i].Addr(), res.err)
			break
		}
		conns[res.i] = res.conn
		r.conns = append(r.conns, res.conn)
	}
	// One connection each is all QEMU makes; nobody else may connect.
	for _, l := range r.listeners {
		_ = l.Close()
	}
	if firstErr != nil {
		// Collect connections accepted while we gave up, so abort closes them.
		for i := 0; i < len(r.listeners)-len(r.conns); i++ {
			if res := <-results; res.err == nil {
				r.conns = append(r.conns, res.conn)
			}
		}
		return nil, firstErr
	}
	return conns, nil
}

// abort ends a Start that failed: QEMU is killed and reaped, everything is
// removed, and Wait reports a backend failure. It returns the error for
// Start, with QEMU's last words when QEMU ended by itself: most start
// failures are QEMU refusing its command line or the kernel.
func (b *Backend) abort(ctx context.Context, r *run, cause error) error {
	b.mu.Lock()
	proc, client := b.proc, b.qmp
	b.mu.Unlock()
	exitedByItself := false
	if proc != nil {
		if ctx.Err() == nil {
			// The failure is usually QEMU exiting; give it a moment to
			// finish its error message.
			t := time.NewTimer(drainTimeout)
			select {
			case <-r.procExited:
				exitedByItself = true
			case <-t.C:
			}
			t.Stop()
		}
		b.killGroup()
		<-r.procExited
	}
	if client != nil {
		_ = client.Close()
	}
	r.release()
	err := fmt.Errorf("%w: %w", ErrStartFailed, cause)
	if last := r.stderr.LastLine(); exitedByItself && last != "" {
		err = fmt.Errorf("%w: %w (qemu-system-x86_64 %v: %s)", ErrStartFailed, cause, r.procErr, last)
	}
	b.finish(vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: err.Error()}, err)
	return err
}

func (r *run) release() {
	for _, l := range r.listeners {
		_ = l.Close()
	}
	for _, c := range r.conns {
		_ = c.Close()
	}
	// QEMU is gone: the servers behind the extra devices stop and remove
	// their sockets before the directory goes.
	for _, d := range r.devices {
		if d.Close != nil {
			_ = d.Close()
		}
	}
	r.devices = nil
	if r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

func (b *Backend) finish(st vmm.ExitStatus, err error) {
	b.mu.Lock()
	b.state = stateEnded
	b.status, b.waitErr = st, err
	b.mu.Unlock()
	close(b.done)
}

// supervise waits for QEMU to exit, drains what it wrote, cleans up and
// publishes the exit status.
func (b *Backend) supervise(r *run, client *qmp.Client, relaysDone, eventsDone <-chan struct{}, stopWatch func() bool) {
	select {
	case <-r.procExited:
	case <-client.Done():
		// QEMU closes QMP as it exits. If it is still running a moment
		// later, the control connection broke: a QEMU wisp cannot
		// control must not run on.
		t := time.NewTimer(drainTimeout)
		select {
		case <-r.procExited:
		case <-t.C:
			b.mu.Lock()
			b.facts.qmpLost = client.Err()
			b.mu.Unlock()
			b.killGroup()
			<-r.procExited
		}
		t.Stop()
	}
	stopWatch()
	// QEMU is gone, so its sockets read EOF at once; the timeout only
	// guards against a descriptor leaked into another process.
	timeout := time.NewTimer(drainTimeout)
	defer timeout.Stop()
	select {
	case <-client.Done():
	case <-timeout.C:
	}
	_ = client.Close()
	<-eventsDone
	for range 2 {
		select {
		case <-relaysDone:
		case <-timeout.C:
			for _, c := range r.conns {
				_ = c.Close()
			}
			<-relaysDone
		}
	}
	r.release()

	b.mu.Lock()
	f := b.facts
	b.mu.Unlock()
	f.procErr = r.procErr
	f.stderrLast = r.stderr.LastLine()
	b.finish(decideExit(f), nil)
}

// handleEvents records what QEMU reports until the connection ends.
func (b *Backend) handleEvents(client *qmp.Client) {
	for ev := range client.Events() {
		switch ev.Name {
		case "SHUTDOWN":
			var d shutdownEvent
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				continue
			}
			b.mu.Lock()
			b.facts.shutdown = d.Reason
			b.mu.Unlock()
		case "GUEST_PANICKED":
			var d panickedEvent
			_ = json.Unmarshal(ev.Data, &d)
			b.mu.Lock()
			b.facts.panicked = true
			b.facts.panicInfo = panicInfo(d.Info)
			b.mu.Unlock()
			if d.Action == "pause" {
				// -action panic=pause: the guest's CPUs stopped; end QEMU.
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
					defer cancel()
					if client.Quit(ctx) != nil {
						b.killGroup()
					}
				}()
			}
		}
	}
}

// killGroup sends SIGKILL to QEMU's process group unless QEMU was already
// reaped (then its id may belong to someone else).
func (b *Backend) killGroup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil || b.reaped {
		return
	}
	_ = syscall.Kill(-b.proc.Pid, syscall.SIGKILL)
}

// kill records why the host ended the VM and kills QEMU.
func (b *Backend) kill(why stopKind) {
	b.mu.Lock()
	if b.facts.stop == stopNone || why == stopForced {
		b.facts.stop = why
	}
	b.mu.Unlock()
	b.killGroup()
}
