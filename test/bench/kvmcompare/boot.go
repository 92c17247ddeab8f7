package kvmcompare

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/internal/tail"
)

// Milestone is a console line both VMMs' guests print, timed from the
// VMM's process start to the moment the whole line has arrived.
type Milestone struct {
	Label string // column heading
	Match string // the line contains this
}

// Milestones are the console lines the bench times, in boot order: the
// kernel's first line (the VMM loaded the kernel and entered it) and the
// DSDT line of the ACPI table dump (the kernel found the VMM's tables).
// QEMU's microvm prints its tables too (RSDP, XSDT, FACP, DSDT, APIC), so
// the DSDT line is one both have.
func Milestones() []Milestone {
	return []Milestone{
		{Label: "Linux version", Match: "Linux version "},
		{Label: "ACPI: DSDT", Match: "ACPI: DSDT "},
	}
}

// matchMilestone returns the index of the milestone line is, or -1.
func matchMilestone(ms []Milestone, line string) int {
	for i, m := range ms {
		if strings.Contains(line, m.Match) {
			return i
		}
	}
	return -1
}

// initMarker is the byte wisp's guest init writes to the boot-marker port
// (0x440) once it runs: user space has started.
const initMarker = 0x7f

// markerPort is that port; QEMU gets an isa-debugcon there.
const markerPort = 0x440

// isWispInitMarker recognises the line wisp logs on stderr for the init
// marker under WISP_BOOT_MARKERS=1 ("wisp: boot marker 0x7f at 1.2s").
func isWispInitMarker(line string) bool {
	return strings.Contains(line, fmt.Sprintf("boot marker %#02x", initMarker))
}

// markerSource says where a VMM reports the init marker.
type markerSource int

const (
	markerInStderrLog markerSource = iota // wisp: a log line on stderr
	markerOnFD3                           // QEMU: the debugcon's bytes on fd 3
)

// subject is one VMM under test: its command and how to read it.
type subject struct {
	name     string
	path     string
	args     []string
	env      []string
	marker   markerSource
	guestRAM GuestRAMFunc
}

// Sample is one boot.
type Sample struct {
	At   []time.Duration // per milestone, from process start
	Init time.Duration   // init's boot marker, from process start
	// Exit is process start to exit, without the time the process was
	// stopped while its memory was read; 0 if it did not exit by itself.
	Exit time.Duration
	// Mem is read at the init marker with the process stopped; MemOK is
	// false if that failed (the error is in MemErr).
	Mem    Memory
	MemOK  bool
	MemErr error
}

type eventKind int

const (
	evMilestone eventKind = iota
	evInit
)

type event struct {
	kind      eventKind
	milestone int
	at        time.Duration
}

// tailSize is how much of the end of each stream a failed boot quotes.
const tailSize = 2048

// boot runs s once: it timestamps the milestones on the console (stdout)
// and the init marker as they arrive, reads the process's memory at the
// init marker, and waits for the guest to power off. After timeout it
// kills the VMM: an error if the init marker had not come yet, else a
// sample without Exit.
func boot(ctx context.Context, s subject, ms []Milestone, timeout time.Duration) (Sample, error) {
	cmd := exec.Command(s.path, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	// A group of its own, so that a kill also ends anything it started
	// that holds its output pipes open.
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Sample{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return Sample{}, err
	}
	var markerR, markerW *os.File
	if s.marker == markerOnFD3 {
		markerR, markerW, err = os.Pipe()
		if err != nil {
			return Sample{}, err
		}
		defer markerR.Close()
		cmd.ExtraFiles = []*os.File{markerW}
	}

	// The ends of both streams, for the error when the boot fails.
	console, errlog := tail.New(tailSize), tail.New(tailSize)
	events := make(chan event, 64)
	var readers sync.WaitGroup
	start := time.Now()
	err = cmd.Start()
	if markerW != nil {
		markerW.Close() // the child has its copy: EOF comes when it exits
	}
	if err != nil {
		return Sample{}, fmt.Errorf("start %s: %w", s.path, err)
	}
	readers.Add(2)
	go func() {
		defer readers.Done()
		readLines(stdout, func(line string) {
			at := time.Since(start)
			_, _ = console.Write([]byte(line + "\n"))
			if i := matchMilestone(ms, line); i >= 0 {
				events <- event{kind: evMilestone, milestone: i, at: at}
			}
		})
	}()
	go func() {
		defer readers.Done()
		readLines(stderr, func(line string) {
			at := time.Since(start)
			_, _ = errlog.Write([]byte(line + "\n"))
			if s.marker == markerInStderrLog && isWispInitMarker(line) {
				events <- event{kind: evInit, at: at}
			}
		})
	}()
	if markerR != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 256)
			for {
				n, err := markerR.Read(buf)
				if bytes.IndexByte(buf[:n], initMarker) >= 0 {
					events <- event{kind: evInit, at: time.Since(start)}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	type exit struct {
		err error
		at  time.Duration
	}
	exited := make(chan exit, 1)
	go func() {
		readers.Wait() // os/exec: every read from the pipes before Wait
		close(events)
		err := cmd.Wait()
		exited <- exit{err, time.Since(start)}
	}()

	smp := Sample{At: make([]time.Duration, len(ms))}
	var paused time.Duration
	expired := time.After(timeout)
	done := ctx.Done()
	killed := false
	for recv := (<-chan event)(events); recv != nil; {
		select {
		case ev, ok := <-recv:
			switch {
			case !ok:
				recv = nil
			case ev.kind == evMilestone && smp.At[ev.milestone] == 0:
				smp.At[ev.milestone] = ev.at
			case ev.kind == evInit && smp.Init == 0:
				smp.Init = ev.at
				var took time.Duration
				smp.Mem, took, smp.MemErr = snapshotMemory(cmd.Process.Pid, s.guestRAM)
				smp.MemOK = smp.MemErr == nil
				paused += took
			}
		case <-expired:
			// Killing the VMM ends its streams, which closes events.
			_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
			killed, expired, done = true, nil, nil
		case <-done:
			_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
			killed, expired, done = true, nil, nil
		}
	}
	ended := <-exited

	what := func(msg string) error {
		return fmt.Errorf("%s\nlast console lines:\n%s\nlast stderr lines:\n%s", msg, console.String(), errlog.String())
	}
	switch {
	case ctx.Err() != nil:
		return Sample{}, ctx.Err()
	case killed && smp.Init == 0:
		return Sample{}, what(fmt.Sprintf("no init marker after %v: killed", timeout))
	case killed:
		// Booted, but did not power off in time: no exit time.
	case ended.err != nil:
		return Sample{}, what(fmt.Sprintf("%s: %v", s.path, ended.err))
	case smp.Init == 0:
		return Sample{}, what("exited with status 0 before init's boot marker (for QEMU under -no-reboot that includes a guest reset)")
	default:
		smp.Exit = ended.at - paused
	}
	for i, at := range smp.At {
		if at == 0 {
			return Sample{}, what(fmt.Sprintf("no console line with %q", ms[i].Match))
		}
	}
	return smp, nil
}

// readLines calls line for each line of r, without its line ending
// (serial consoles end lines with \r\n).
func readLines(r io.Reader, line func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			line(strings.TrimRight(s, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// snapshotMemory stops the process (SIGSTOP), reads its smaps and lets it
// go on. Stopped, it cannot exit halfway through the read, and its memory
// does not change under the reader. It returns how long the process was
// held.
func snapshotMemory(pid int, isGuestRAM GuestRAMFunc) (Memory, time.Duration, error) {
	t0 := time.Now()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		return Memory{}, 0, fmt.Errorf("SIGSTOP %d: %w", pid, err)
	}
	m, err := func() (Memory, error) {
		if err := waitStopped(pid, 2*time.Second); err != nil {
			return Memory{}, err
		}
		return readMemory(pid, isGuestRAM)
	}()
	if cerr := unix.Kill(pid, unix.SIGCONT); cerr != nil && err == nil {
		err = fmt.Errorf("SIGCONT %d: %w", pid, cerr)
	}
	return m, time.Since(t0), err
}

// errNotStopped: the process did not reach the stopped state in time.
var errNotStopped = errors.New("process did not stop")

// waitStopped polls /proc/PID/stat until the process's state is T
// (stopped); SIGSTOP takes effect asynchronously.
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return fmt.Errorf("wait for %d to stop: %w", pid, err)
		}
		if state, ok := procState(string(data)); ok && (state == 'T' || state == 't') {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d after %v", errNotStopped, pid, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// procState takes the state letter from /proc/PID/stat, "pid (comm) S
// ...", where comm may itself contain ") ".
func procState(stat string) (byte, bool) {
	i := strings.LastIndex(stat, ") ")
	if i < 0 || i+2 >= len(stat) {
		return 0, false
	}
	return stat[i+2], true
}
