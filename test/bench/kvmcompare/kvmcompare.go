// Package kvmcompare times wisp's KVM backend against QEMU's microvm
// machine on KVM: both boot the same ELF vmlinux (through its PVH entry),
// initramfs and command line with the same vCPUs and memory, and the bench
// times, from each VMM's process start, the kernel's first console line,
// its ACPI DSDT line and init's boot marker, and reads what each VMM keeps
// resident beyond guest RAM. It prints medians and wisp/QEMU ratios; it
// asserts nothing.
//
// It needs /dev/kvm: test/bench calls Run where the host has it, and runs
// the command test/bench/kvmbench inside test/nested's VM (nested KVM under
// QEMU TCG) where it has not.
package kvmcompare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Goals from the project's performance issue, printed next to the ratios.
const (
	GoalTimeRatio = 0.7     // wisp's times at most 0.7x QEMU's
	GoalOverhead  = 4 << 20 // wisp's RSS beyond guest RAM at most 4 MiB
)

// Config is one comparison.
type Config struct {
	Wisp      string // the wisp binary
	QEMU      string // qemu-system-x86_64
	Kernel    string // ELF vmlinux with a PVH entry (both VMMs boot it as is)
	KernelTag string // how the report names the kernel, e.g. "minimal 6.1.192"
	Initrd    string
	Cmdline   string
	CPUs      int
	MemoryMiB int
	Runs      int           // boots per VMM, after one warm-up boot each
	Timeout   time.Duration // per boot
	// Nested says KVM here is itself inside a QEMU-TCG VM; the report
	// then says its numbers are not hardware numbers.
	Nested bool
	// Progress gets a line per boot, starting with ProgressPrefix; nil:
	// silent.
	Progress io.Writer
}

// Defaults for Config's zero fields.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 256
	DefaultRuns      = 5
	DefaultTimeout   = 3 * time.Minute
)

// ProgressPrefix starts every progress line, so that a caller reading
// progress and report from one stream (the nested VM's console) can tell
// them apart.
const ProgressPrefix = "kvmcompare: "

// ErrConfig marks a Config that cannot run.
var ErrConfig = errors.New("kvmcompare: bad config")

func (c Config) withDefaults() Config {
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.Runs == 0 {
		c.Runs = DefaultRuns
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

func (c Config) check() error {
	for _, f := range []struct{ name, path string }{
		{"wisp", c.Wisp}, {"qemu", c.QEMU}, {"kernel", c.Kernel}, {"initrd", c.Initrd},
	} {
		if f.path == "" {
			return fmt.Errorf("%w: no %s", ErrConfig, f.name)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, f.name, err)
		}
	}
	if c.CPUs < 1 || c.MemoryMiB < 16 || c.Runs < 1 {
		return fmt.Errorf("%w: %d CPUs, %d MiB, %d runs", ErrConfig, c.CPUs, c.MemoryMiB, c.Runs)
	}
	return nil
}

// WispArgs is wisp's command line: the KVM backend, the console on stdout
// (the bench timestamps its lines), no command of wisp's own (the command
// line already carries what init should run).
func (c Config) WispArgs() []string {
	return []string{
		"run", "--accel", "kvm", "--console", "stdio",
		"--kernel", c.Kernel, "--initrd", c.Initrd, "--cmdline", c.Cmdline,
		"--cpus", strconv.Itoa(c.CPUs), "--memory", strconv.Itoa(c.MemoryMiB) + "M",
	}
}

// QEMUArgs is QEMU's: the microvm machine on KVM with the host's CPU
// model (wisp passes KVM's supported CPUID through), the kernel through
// PVH (QEMU's pvh.bin option ROM behind its microvm firmware), the serial
// console on stdout, and an isa-debugcon on wisp's boot-marker port whose
// bytes go to fd 3, where the bench reads init's marker.
func (c Config) QEMUArgs() []string {
	return []string{
		"-nodefaults", "-no-user-config", "-nographic",
		"-accel", "kvm", "-machine", "microvm", "-cpu", "host",
		"-smp", strconv.Itoa(c.CPUs), "-m", strconv.Itoa(c.MemoryMiB) + "M",
		"-kernel", c.Kernel, "-initrd", c.Initrd, "-append", c.Cmdline,
		"-serial", "stdio",
		"-chardev", "file,id=marker,path=/proc/self/fd/3",
		"-device", fmt.Sprintf("isa-debugcon,iobase=%#x,chardev=marker", markerPort),
		"-no-reboot",
	}
}

// QEMUDataFiles are the files under QEMU's data directory that the
// microvm machine reads to boot a PVH kernel: its firmware and the PVH
// option ROM. A copy of QEMU elsewhere (the nested VM) needs them at the
// same paths.
func QEMUDataFiles() []string {
	return []string{"/usr/share/qemu/bios-microvm.bin", "/usr/share/qemu/pvh.bin"}
}

func (c Config) subjects() []subject {
	return []subject{
		{name: "wisp --accel kvm", path: c.Wisp, args: c.WispArgs(), env: []string{"WISP_BOOT_MARKERS=1"},
			marker: markerInStderrLog, guestRAM: wispGuestRAM},
		{name: "qemu -machine microvm", path: c.QEMU, args: c.QEMUArgs(),
			marker: markerOnFD3, guestRAM: anonymousOfSize(uint64(c.MemoryMiB) << 20)},
	}
}

// MaxFailures is how many failed boots per VMM Run retries before it
// gives up. Nested KVM under TCG now and then loses a guest halfway
// through its boot (a reset, with nothing on the console); the report
// lists every failure, so one that only a VMM has stands out.
const MaxFailures = 3

// Run boots each VMM once to warm up, then cfg.Runs times, alternating,
// and writes the report to w.
func Run(ctx context.Context, cfg Config, w io.Writer) error {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return err
	}
	ms := Milestones()
	subjects := cfg.subjects()
	results := make([][]Sample, len(subjects))
	failures := make([][]string, len(subjects))
	for i := -1; i < cfg.Runs; i++ {
		run := "warm-up"
		if i >= 0 {
			run = fmt.Sprintf("run %d/%d", i+1, cfg.Runs)
		}
		for j, s := range subjects {
			for {
				smp, err := boot(ctx, s, ms, cfg.Timeout)
				if err == nil {
					if i >= 0 {
						results[j] = append(results[j], smp)
					}
					fmt.Fprintf(cfg.Progress, "%s%s %s: %s\n", ProgressPrefix, s.name, run, smp)
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				failures[j] = append(failures[j], firstLine(err.Error()))
				if len(failures[j]) >= MaxFailures {
					return fmt.Errorf("%s: %d failed boots, the last: %w", s.name, len(failures[j]), err)
				}
				// Every line starts with the prefix: the error carries
				// the console's last lines.
				msg := strings.ReplaceAll(err.Error(), "\n", "\n"+ProgressPrefix+"  ")
				fmt.Fprintf(cfg.Progress, "%s%s %s: FAILED, retrying: %s\n", ProgressPrefix, s.name, run, msg)
			}
		}
	}
	names := make([]string, len(subjects))
	for i, s := range subjects {
		names[i] = s.name
	}
	report(w, cfg, ms, names, results, failures)
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// String is a one-line summary, for progress output.
func (s Sample) String() string {
	var b strings.Builder
	for i, at := range s.At {
		fmt.Fprintf(&b, "m%d %v, ", i, at.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "init %v, exit %s, ", s.Init.Round(time.Millisecond), fmtDur(s.Exit))
	if s.MemOK {
		fmt.Fprintf(&b, "rss %s (guest RAM %s; largest other:", mib(s.Mem.Total), mib(s.Mem.GuestRAM))
		for _, p := range s.Mem.Largest {
			fmt.Fprintf(&b, " %s %s", p.Name, mib(p.RSS))
		}
		b.WriteString(")")
	} else {
		fmt.Fprintf(&b, "rss unknown: %v", s.MemErr)
	}
	return b.String()
}

// Summary is the medians of one VMM's samples; a zero field had no
// sample (no boot exited by itself, or no memory reading worked).
type Summary struct {
	At       []time.Duration
	Init     time.Duration
	Exit     time.Duration
	Exited   int // boots that exited by themselves
	Overhead uint64
	Total    uint64
	MemRuns  int    // boots whose memory was read
	Largest  []Part // the overhead's largest parts in the boot with the median overhead
}

// summarize takes the median of each column over the samples that have it.
func summarize(ms []Milestone, samples []Sample) Summary {
	s := Summary{At: make([]time.Duration, len(ms))}
	for i := range ms {
		var xs []time.Duration
		for _, smp := range samples {
			xs = append(xs, smp.At[i])
		}
		s.At[i] = median(xs)
	}
	var inits, exits []time.Duration
	var over, total []uint64
	for _, smp := range samples {
		inits = append(inits, smp.Init)
		if smp.Exit != 0 {
			exits = append(exits, smp.Exit)
		}
		if smp.MemOK {
			over = append(over, smp.Mem.Overhead())
			total = append(total, smp.Mem.Total)
		}
	}
	s.Init, s.Exit, s.Exited = median(inits), median(exits), len(exits)
	s.Overhead, s.Total, s.MemRuns = median(over), median(total), len(over)
	for _, smp := range samples {
		if smp.MemOK && smp.Mem.Overhead() == s.Overhead {
			s.Largest = smp.Mem.Largest
			break
		}
	}
	return s
}

// median is the middle value (the upper one of the two middle values for
// an even count); zero for none.
func median[T time.Duration | uint64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// ratio is a/b as "0.52x", or "-" when either is missing.
func ratio[T time.Duration | uint64](a, b T) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

func report(w io.Writer, cfg Config, ms []Milestone, names []string, results [][]Sample, failures [][]string) {
	sums := make([]Summary, len(results))
	for i, r := range results {
		sums[i] = summarize(ms, r)
	}
	fmt.Fprintf(w, "KVM: wisp vs qemu-system-x86_64 -accel kvm -machine microvm, kernel %s (ELF vmlinux via PVH), %d vCPU, %d MiB; %d runs each after a warm-up, median\n",
		cfg.KernelTag, cfg.CPUs, cfg.MemoryMiB, len(results[0]))
	if cfg.Nested {
		fmt.Fprintln(w, "  CAVEAT: measured inside a QEMU-TCG VM with nested SVM (this host has no /dev/kvm):")
		fmt.Fprintln(w, "  these are not hardware numbers; every exit to the VMM is emulated, so even the ratios only hint at hardware ratios.")
	}
	fmt.Fprintf(w, "  cmdline %q\n", cfg.Cmdline)
	fmt.Fprintln(w, "  times are from the VMM's process start; RSS is read at init's boot marker (process stopped)")
	cols := []string{}
	for _, m := range ms {
		cols = append(cols, m.Label)
	}
	cols = append(cols, "init marker", "exit", "RSS-guest RAM", "RSS")
	fmt.Fprintf(w, "  %-24s", "")
	for _, c := range cols {
		fmt.Fprintf(w, " %14s", c)
	}
	fmt.Fprintln(w)
	for i, s := range sums {
		fmt.Fprintf(w, "  %-24s", names[i])
		for _, at := range s.At {
			fmt.Fprintf(w, " %14s", fmtDur(at))
		}
		fmt.Fprintf(w, " %14s %14s %14s %14s\n", fmtDur(s.Init), fmtDur(s.Exit), mib(s.Overhead), mib(s.Total))
	}
	if len(sums) == 2 {
		a, b := sums[0], sums[1]
		fmt.Fprintf(w, "  %-24s", "ratio wisp/QEMU")
		for i := range a.At {
			fmt.Fprintf(w, " %14s", ratio(a.At[i], b.At[i]))
		}
		fmt.Fprintf(w, " %14s %14s %14s %14s\n", ratio(a.Init, b.Init), ratio(a.Exit, b.Exit),
			ratio(a.Overhead, b.Overhead), ratio(a.Total, b.Total))
		fmt.Fprintf(w, "  goals: wisp's times <= %.2fx QEMU's; wisp's RSS beyond guest RAM <= %s (measured %s)\n",
			GoalTimeRatio, mib(GoalOverhead), mib(a.Overhead))
		for i, s := range sums {
			if len(s.Largest) > 0 {
				var parts []string
				for _, p := range s.Largest {
					parts = append(parts, p.Name+" "+mib(p.RSS))
				}
				fmt.Fprintf(w, "  %s: largest parts of RSS-guest RAM: %s\n", names[i], strings.Join(parts, ", "))
			}
		}
		for i, s := range sums {
			runs := len(results[i])
			if s.Exited < runs {
				fmt.Fprintf(w, "  note: %s: %d of %d boots did not exit by themselves within %v; exit is over the rest\n", names[i], runs-s.Exited, runs, cfg.Timeout)
			}
			if s.MemRuns < runs {
				fmt.Fprintf(w, "  note: %s: memory read in %d of %d boots\n", names[i], s.MemRuns, runs)
			}
		}
	}
	for i, f := range failures {
		if len(f) > 0 {
			fmt.Fprintf(w, "  note: %s: %d failed boot(s), retried: %s\n", names[i], len(f), strings.Join(f, "; "))
		}
	}
	fmt.Fprintln(w)
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func mib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
