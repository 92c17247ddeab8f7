package kvmcompare

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smapsWisp is a trimmed /proc/PID/smaps of wisp on KVM: its binary, its
// heap, the guest RAM memfd and an anonymous mapping of the guest RAM's
// size that is not guest RAM.
const smapsWisp = `00400000-00c4d000 r-xp 00000000 00:02 1234                               /usr/bin/wisp
Size:               8500 kB
KernelPageSize:        4 kB
Rss:                3000 kB
Pss:                3000 kB
VmFlags: rd ex mr mw me
c000000000-c000400000 rw-p 00000000 00:00 0 
Size:               4096 kB
Rss:                1024 kB
THPeligible:    0
7f0000000000-7f0010000000 rw-s 00000000 00:01 42                         /memfd:wisp-guest-ram (deleted)
Size:             262144 kB
Rss:               20480 kB
Pss:               20480 kB
7f1000000000-7f1010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:                 100 kB
`

func TestParseSmaps(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		isGuest GuestRAMFunc
		want    Memory
		wantErr string
	}{
		{"wisp: the memfd is guest RAM", smapsWisp, wispGuestRAM,
			Memory{Total: (3000 + 1024 + 20480 + 100) << 10, GuestRAM: 20480 << 10,
				Largest: []Part{{"/usr/bin/wisp", 3000 << 10}, {"[anon]", 1124 << 10}}}, ""},
		{"qemu: the anonymous mapping of RAM's size is guest RAM", smapsWisp, anonymousOfSize(256 << 20),
			Memory{Total: (3000 + 1024 + 20480 + 100) << 10, GuestRAM: 100 << 10,
				Largest: []Part{{"/memfd:wisp-guest-ram (deleted)", 20480 << 10}, {"/usr/bin/wisp", 3000 << 10}, {"[anon]", 1024 << 10}}}, ""},
		{"nothing is guest RAM", smapsWisp, func(Mapping) bool { return false },
			Memory{Total: (3000 + 1024 + 20480 + 100) << 10,
				Largest: []Part{{"/memfd:wisp-guest-ram (deleted)", 20480 << 10}, {"/usr/bin/wisp", 3000 << 10}, {"[anon]", 1124 << 10}}}, ""},
		{"empty", "", wispGuestRAM, Memory{}, "no mappings"},
		{"bad Rss", "00400000-00401000 r-xp 00000000 00:02 1 /x\nSize: 4 kB\nRss: lots\n", wispGuestRAM, Memory{}, "Rss"},
		{"bad Size", "00400000-00401000 r-xp 00000000 00:02 1 /x\nSize: 4 MB\n", wispGuestRAM, Memory{}, "Size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSmaps(strings.NewReader(tt.text), tt.isGuest)
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, got.Total-got.GuestRAM, got.Overhead())
		})
	}
}

func TestParseMappingHeader(t *testing.T) {
	tests := []struct {
		line string
		want Mapping
		ok   bool
	}{
		{"7f0000000000-7f0010000000 rw-s 00000000 00:01 42    /memfd:wisp-guest-ram (deleted)", Mapping{Name: "/memfd:wisp-guest-ram (deleted)"}, true},
		{"c000000000-c000400000 rw-p 00000000 00:00 0 ", Mapping{}, true},
		{"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]", Mapping{Name: "[vsyscall]"}, true},
		{"55d0-55d1 r--p 00000000 fe:00 7 /path with spaces/x", Mapping{Name: "/path with spaces/x"}, true},
		{"Rss:                 100 kB", Mapping{}, false},
		{"VmFlags: rd wr mr mw me ac sd", Mapping{}, false},
		{"zz-yy rw-p 0 0 0", Mapping{}, false},
	}
	for _, tt := range tests {
		got, ok := parseMappingHeader(tt.line)
		assert.Equal(t, tt.ok, ok, tt.line)
		assert.Equal(t, tt.want, got, tt.line)
	}
}

func TestMatchMilestone(t *testing.T) {
	ms := Milestones()
	tests := []struct {
		line string
		want int
	}{
		{"Linux version 6.1.192 (wisp@wisp) (gcc ...) #2 SMP 1970-01-01", 0},
		{"[    0.000000] Linux version 6.1.192", 0},
		{"ACPI: DSDT 0x00000000000EFD00 000150 (v02 BOCHS  BXPC     00000001 BXPC 00000001)", 1},
		{"ACPI: Reserving DSDT table memory at [mem 0xefd00-0xefe4f]", -1},
		{"ACPI: RSDP 0x00000000000F34D0 000024 (v02 BOCHS )", -1},
		{"Command line: console=ttyS0", -1},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, matchMilestone(ms, tt.line), tt.line)
	}
}

func TestIsWispInitMarker(t *testing.T) {
	assert.True(t, isWispInitMarker("wisp: boot marker 0x7f at 1.234567s"))
	assert.False(t, isWispInitMarker("wisp: boot marker 0x7e at 1.2s"))
	assert.False(t, isWispInitMarker("Linux version 6.1"))
}

func TestProcState(t *testing.T) {
	tests := []struct {
		stat  string
		state byte
		ok    bool
	}{
		{"1234 (wisp) T 1 1234 1 0 -1", 'T', true},
		{"1234 (qemu-system-x86) S 1 2 3", 'S', true},
		{"1234 (a) b) t 1", 't', true},
		{"garbage", 0, false},
		{"1 (x) ", 0, false},
	}
	for _, tt := range tests {
		state, ok := procState(tt.stat)
		assert.Equal(t, tt.ok, ok, tt.stat)
		assert.Equal(t, tt.state, state, tt.stat)
	}
}

func TestMedian(t *testing.T) {
	assert.Equal(t, time.Duration(0), median[time.Duration](nil))
	assert.Equal(t, 3*time.Second, median([]time.Duration{5 * time.Second, time.Second, 3 * time.Second}))
	assert.Equal(t, uint64(4), median([]uint64{4, 1, 9, 2}), "upper middle for an even count")
}

func TestSummarize(t *testing.T) {
	ms := Milestones()
	samples := []Sample{
		{At: []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}, Init: time.Second, Exit: 2 * time.Second,
			Mem: Memory{Total: 30 << 20, GuestRAM: 27 << 20}, MemOK: true},
		{At: []time.Duration{30 * time.Millisecond, 70 * time.Millisecond}, Init: 3 * time.Second,
			MemErr: errNotStopped},
		{At: []time.Duration{20 * time.Millisecond, 60 * time.Millisecond}, Init: 2 * time.Second, Exit: 4 * time.Second,
			Mem: Memory{Total: 40 << 20, GuestRAM: 35 << 20, Largest: []Part{{"[anon]", 4 << 20}}}, MemOK: true},
	}
	got := summarize(ms, samples)
	assert.Equal(t, Summary{
		At:   []time.Duration{20 * time.Millisecond, 60 * time.Millisecond},
		Init: 2 * time.Second, Exit: 4 * time.Second, Exited: 2,
		Overhead: 5 << 20, Total: 40 << 20, MemRuns: 2, Largest: []Part{{"[anon]", 4 << 20}},
	}, got)
}

func TestReport(t *testing.T) {
	ms := Milestones()
	wisp := Sample{At: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, Init: time.Second, Exit: 2 * time.Second,
		Mem: Memory{Total: 23 << 20, GuestRAM: 20 << 20, Largest: []Part{{"[anon]", 2 << 20}, {"/usr/bin/wisp", 1 << 20}}}, MemOK: true}
	qemu := Sample{At: []time.Duration{400 * time.Millisecond, 500 * time.Millisecond}, Init: 2 * time.Second,
		Mem: Memory{Total: 40 << 20, GuestRAM: 20 << 20}, MemOK: true}
	cfg := Config{KernelTag: "minimal 6.1", CPUs: 1, MemoryMiB: 256, Cmdline: "console=ttyS0", Nested: true, Timeout: time.Minute}
	var buf bytes.Buffer
	report(&buf, cfg, ms, []string{"wisp", "qemu"}, [][]Sample{{wisp}, {qemu}}, [][]string{nil, {"exited without init's boot marker"}})
	out := buf.String()
	for _, want := range []string{
		"CAVEAT", "not hardware numbers",
		"Linux version", "ACPI: DSDT", "init marker", "RSS-guest RAM",
		"0.25x", // Linux version: 100ms / 400ms
		"0.40x", // ACPI: DSDT
		"0.50x", // init marker
		"0.15x", // overhead: 3 MiB / 20 MiB
		"3.0 MiB",
		"goals: wisp's times <= 0.70x QEMU's; wisp's RSS beyond guest RAM <= 4.0 MiB (measured 3.0 MiB)",
		"qemu: 1 of 1 boots did not exit by themselves",
		"wisp: largest parts of RSS-guest RAM: [anon] 2.0 MiB, /usr/bin/wisp 1.0 MiB",
		"qemu: 1 failed boot(s), retried: exited without init's boot marker",
	} {
		assert.Contains(t, out, want)
	}
	cfg.Nested = false
	buf.Reset()
	report(&buf, cfg, ms, []string{"wisp", "qemu"}, [][]Sample{{wisp}, {qemu}}, [][]string{nil, nil})
	assert.NotContains(t, buf.String(), "CAVEAT")
	assert.NotContains(t, buf.String(), "failed boot")
}

func TestArgs(t *testing.T) {
	cfg := Config{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 x", CPUs: 2, MemoryMiB: 256}
	assert.Equal(t, []string{"run", "--accel", "kvm", "--console", "stdio", "--kernel", "/k", "--initrd", "/i",
		"--cmdline", "console=ttyS0 x", "--cpus", "2", "--memory", "256M"}, cfg.WispArgs())
	q := strings.Join(cfg.QEMUArgs(), " ")
	for _, want := range []string{"-accel kvm -machine microvm -cpu host", "-smp 2 -m 256M", "-kernel /k -initrd /i",
		"-serial stdio", "isa-debugcon,iobase=0x440,chardev=marker", "path=/proc/self/fd/3"} {
		assert.Contains(t, q, want)
	}
	assert.Contains(t, cfg.QEMUArgs(), "console=ttyS0 x", "the command line is one argument")
}

func TestConfigCheck(t *testing.T) {
	err := Config{}.withDefaults().check()
	assert.ErrorIs(t, err, ErrConfig)
	err = Config{Wisp: "/nonexistent/wisp", QEMU: "/", Kernel: "/", Initrd: "/"}.withDefaults().check()
	assert.ErrorIs(t, err, ErrConfig)
	assert.ErrorContains(t, err, "wisp")
	assert.NoError(t, Config{Wisp: "/", QEMU: "/", Kernel: "/", Initrd: "/"}.withDefaults().check())
}

// The boot tests drive boot with /bin/sh standing in for a VMM: it prints
// the milestone lines and the init marker the way wisp and QEMU do, so
// the timing, the stop-and-read of smaps and the fd-3 pipe are exercised
// on a real process.
func shSubject(script string, marker markerSource) subject {
	return subject{name: "sh", path: "/bin/sh", args: []string{"-c", script}, marker: marker,
		guestRAM: func(Mapping) bool { return false }}
}

func TestBootTimesAndReadsMemory(t *testing.T) {
	const lines = `echo "Linux version 6.1"; echo "ACPI: DSDT 0x0"; sleep 0.1; `
	for _, tt := range []struct {
		name   string
		script string
		marker markerSource
	}{
		{"marker in a wisp log line", lines + `echo "wisp: boot marker 0x7f at 1s" >&2; sleep 0.2`, markerInStderrLog},
		{"marker byte on fd 3", lines + `printf '\177' >&3; sleep 0.2`, markerOnFD3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			smp, err := boot(t.Context(), shSubject(tt.script, tt.marker), Milestones(), time.Minute)
			require.NoError(t, err)
			require.Len(t, smp.At, 2)
			assert.NotZero(t, smp.At[0])
			assert.LessOrEqual(t, smp.At[0], smp.At[1])
			assert.Less(t, smp.At[1], smp.Init, "the marker comes after the sleep")
			assert.Less(t, smp.Init, smp.Exit)
			require.True(t, smp.MemOK, "%v", smp.MemErr)
			assert.NotZero(t, smp.Mem.Total)
			assert.Zero(t, smp.Mem.GuestRAM)
		})
	}
}

func TestBootErrors(t *testing.T) {
	ms := Milestones()
	_, err := boot(t.Context(), shSubject(`echo "Linux version 6.1"; echo booting >&2; sleep 30`, markerInStderrLog), ms, 300*time.Millisecond)
	assert.ErrorContains(t, err, "no init marker")
	assert.ErrorContains(t, err, "booting", "the error shows the last stderr lines")

	_, err = boot(t.Context(), shSubject(`echo "Linux version 6.1"; exit 3`, markerInStderrLog), ms, time.Minute)
	assert.ErrorContains(t, err, "exit status 3")

	_, err = boot(t.Context(), shSubject(`echo "wisp: boot marker 0x7f" >&2`, markerInStderrLog), ms, time.Minute)
	assert.ErrorContains(t, err, `no console line with "Linux version "`)

	smp, err := boot(t.Context(), shSubject(`echo "Linux version 6.1"; echo "ACPI: DSDT 0"; printf '\177' >&3; sleep 30`, markerOnFD3), ms, 500*time.Millisecond)
	require.NoError(t, err, "booted but did not power off: a sample without an exit time")
	assert.NotZero(t, smp.Init)
	assert.Zero(t, smp.Exit)
}
