// Command bench measures wisp against bare QEMU on the same kernels,
// initramfs and command line, in one run, and prints medians and ratios.
// `make bench` runs it; nothing here asserts a time.
//
// First wisp's TCG backend against bare QEMU TCG (Debian's and the minimal
// kernel), then the accelerator probe, then wisp's KVM backend against
// QEMU's microvm on KVM (package kvmcompare): on this host's /dev/kvm if
// it has one, else inside test/nested's VM, with nested KVM under TCG.
//
// Then disks and networks (devices.go): fio and iperf3 in the same guest,
// wisp's vhost-user devices against QEMU's built-in ones.
//
// Then images (image.go): build time cold and cached, and time to the login
// prompt of the built image against bare QEMU.
//
// Then the host agent (agent.go): its start-up, API latency with 100 VMs
// defined, VMs started per second until the host is full, and the memory
// of the agent and of one VM's VMM processes.
//
//	go run ./test/bench [-n 5] [-wisp bin/wisp] [-kvm-only] [-devices-only] [-image-only [-cold-build=false]] [-agent-only]
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
)

// userspaceMarker is what wisp's init writes to the boot-marker port once
// it runs: the boot is over when it arrives.
const userspaceMarker = 0x7f

type sample struct {
	toMarker time.Duration // process start → init's boot marker
	total    time.Duration // process start → exit (the guest ran `true` and powered off)
	peakRSS  uint64        // bytes, the process tree's largest sum of RSS
}

type subject struct {
	name string
	run  func(ctx context.Context) (sample, error)
}

func main() {
	n := flag.Int("n", 5, "runs per subject (the median is reported)")
	wispBin := flag.String("wisp", "bin/wisp", "the wisp binary to measure")
	kvmOnly := flag.Bool("kvm-only", false, "only the KVM comparison (no TCG tables, no probe timing)")
	devicesOnly := flag.Bool("devices-only", false, "only the disk and network comparison")
	imageOnly := flag.Bool("image-only", false, "only the image build and boot-to-login comparison")
	coldBuild := flag.Bool("cold-build", true, "time one image build from scratch (--no-cache) too")
	agentOnly := flag.Bool("agent-only", false, "only the host agent's numbers (wisp agent driven through package client)")
	flag.Parse()
	if *agentOnly {
		bin, err := filepath.Abs(*wispBin)
		if err == nil {
			err = agentBench(context.Background(), *n, bin)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *imageOnly {
		qemu, err := exec.LookPath("qemu-system-x86_64")
		if err == nil {
			err = imageBench(context.Background(), *n, *wispBin, qemu, *coldBuild)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(*n, *wispBin, *kvmOnly, *devicesOnly); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func bench(n int, wispBin string, kvmOnly, devicesOnly bool) error {
	ctx := context.Background()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	wispBin, err = filepath.Abs(wispBin)
	if err != nil {
		return err
	}
	kit := &guest.Kit{CacheDir: guest.DefaultCacheDir(), Progress: os.Stderr}
	debian, err := kit.DebianKernel(ctx)
	if err != nil {
		return err
	}
	minimal, err := kit.MinimalKernel(ctx)
	if err != nil {
		return err
	}
	if devicesOnly {
		return deviceBenches(ctx, kit, n, wispBin, qemu, debian)
	}
	if kvmOnly {
		initrd, err := kit.DefaultInitramfs(ctx, minimal)
		if err != nil {
			return err
		}
		return kvmBench(ctx, n, wispBin, minimal, initrd)
	}
	param, err := initproto.EncodeCmd([]string{"true"})
	if err != nil {
		return err
	}
	cmdline := "console=ttyS0 reboot=k panic=-1 quiet " + param + " " + initproto.ParamTTY + "=raw"

	fmt.Printf("wisp bench: %d runs each, median; TCG (this host has no usable KVM); cmdline %q\n\n", n, cmdline)
	var minimalInitrd string
	for _, k := range []struct {
		name string
		kern *guest.Kernel
	}{{"debian " + debian.Version, debian}, {"minimal " + minimal.Version, minimal}} {
		initrd, err := kit.DefaultInitramfs(ctx, k.kern)
		if err != nil {
			return err
		}
		if k.kern == minimal {
			minimalInitrd = initrd
		}
		subjects := []subject{
			{"wisp run --accel tcg", func(ctx context.Context) (sample, error) {
				// --rng=false: bare QEMU gets no RNG either, so both boot
				// the same device set.
				return measure(ctx, exec.Command(wispBin, "run", "--accel", "tcg", "--console", "none", "--rng=false",
					"--kernel", k.kern.Image, "--initrd", initrd, "--cmdline", cmdline), markerFromWispLog)
			}},
			{"bare qemu-system-x86_64", func(ctx context.Context) (sample, error) {
				return measure(ctx, exec.Command(qemu, bareQEMUArgs(k.kern.Image, initrd, cmdline)...), markerFromDebugcon)
			}},
		}
		results, err := runInterleaved(ctx, subjects, n)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		report(os.Stdout, k.name, subjects, results)
	}
	if err := deviceBenches(ctx, kit, n, wispBin, qemu, debian); err != nil {
		return err
	}
	if err := imageBench(ctx, n, wispBin, qemu, true); err != nil {
		return fmt.Errorf("image bench: %w", err)
	}
	if err := probeTime(wispBin, n); err != nil {
		return err
	}
	if err := agentBench(ctx, n, wispBin); err != nil {
		return fmt.Errorf("agent bench: %w", err)
	}
	return kvmBench(ctx, n, wispBin, minimal, minimalInitrd)
}

// deviceBenches runs the disk and network comparisons on Debian's kernel
// and the default initramfs, with their images cached in $WISP_CACHE/bench.
func deviceBenches(ctx context.Context, kit *guest.Kit, n int, wispBin, qemu string, kern *guest.Kernel) error {
	initrd, err := kit.DefaultInitramfs(ctx, kern)
	if err != nil {
		return err
	}
	dir := filepath.Join(kit.CacheDir, "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := diskBench(ctx, n, wispBin, qemu, kern, initrd, dir); err != nil {
		return fmt.Errorf("disk bench: %w", err)
	}
	if err := netBench(ctx, n, wispBin, qemu, kern, initrd, dir); err != nil {
		return fmt.Errorf("network bench: %w", err)
	}
	return nil
}

// bareQEMUArgs is the QEMU command wisp's TCG backend amounts to, without
// wisp: same machine, CPU, memory, firmware and boot files; the boot marker
// port goes to QEMU's stdout, where the bench reads it.
func bareQEMUArgs(kernel, initrd, cmdline string) []string {
	args := []string{
		"-nodefaults", "-no-user-config", "-nographic",
		"-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1", "-m", "256M",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-serial", "null",
		"-chardev", "stdio,id=marker", "-device", "isa-debugcon,iobase=0x440,chardev=marker",
		"-no-reboot",
	}
	if _, err := os.Stat(qbootROM); err == nil {
		args = append(args, "-bios", qbootROM)
	}
	return args
}

const qbootROM = "/usr/share/qemu/qboot.rom"

func runInterleaved(ctx context.Context, subjects []subject, n int) ([][]sample, error) {
	results := make([][]sample, len(subjects))
	for i := 0; i < n; i++ {
		for j, s := range subjects {
			r, err := s.run(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			results[j] = append(results[j], r)
		}
	}
	return results, nil
}

// markerWatcher returns when the userspace marker appeared in a stream.
type markerWatcher func(stdout, stderr io.Reader, seen func())

func markerFromDebugcon(stdout, _ io.Reader, seen func()) {
	buf := make([]byte, 64)
	for {
		n, err := stdout.Read(buf)
		if bytes.IndexByte(buf[:n], userspaceMarker) >= 0 {
			seen()
		}
		if err != nil {
			return
		}
	}
}

func markerFromWispLog(_, stderr io.Reader, seen func()) {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), fmt.Sprintf("boot marker %#02x", userspaceMarker)) {
			seen()
		}
	}
}

// measure runs cmd to its end, timing the boot marker and sampling the
// RSS of the process and its children.
func measure(ctx context.Context, cmd *exec.Cmd, watch markerWatcher) (sample, error) {
	cmd.Env = append(os.Environ(), "WISP_BOOT_MARKERS=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return sample{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return sample{}, err
	}
	var s sample
	var mu sync.Mutex
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	var tail bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watch(stdout, io.TeeReader(stderr, &tail), func() {
			mu.Lock()
			if s.toMarker == 0 {
				s.toMarker = time.Since(start)
			}
			mu.Unlock()
		})
		_, _ = io.Copy(io.Discard, stdout)
	}()
	stopSampling := make(chan struct{})
	peak := make(chan uint64)
	go func() { peak <- samplePeakRSS(cmd.Process.Pid, stopSampling) }()
	err = cmd.Wait()
	s.total = time.Since(start)
	close(stopSampling)
	s.peakRSS = <-peak
	wg.Wait()
	if err != nil {
		return sample{}, fmt.Errorf("%v: %s", err, lastLine(tail.String()))
	}
	if s.toMarker == 0 {
		return sample{}, fmt.Errorf("no boot marker %#02x seen", userspaceMarker)
	}
	return s, nil
}

// samplePeakRSS polls the RSS of pid and its descendants every 10 ms and
// returns the largest sum seen.
func samplePeakRSS(pid int, stop <-chan struct{}) uint64 {
	var peak uint64
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if sum := treeRSS(pid); sum > peak {
			peak = sum
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

func treeRSS(pid int) uint64 {
	sum := rss(pid)
	for _, child := range children(pid) {
		sum += treeRSS(child)
	}
	return sum
}

func rss(pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func median[T int64 | uint64](xs []T) T {
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func report(w io.Writer, kernel string, subjects []subject, results [][]sample) {
	fmt.Fprintf(w, "kernel %s\n", kernel)
	fmt.Fprintf(w, "  %-26s %14s %12s %14s\n", "", "to init marker", "total", "peak RSS")
	med := make([][3]float64, len(subjects))
	for i, s := range subjects {
		var m, t []int64
		var r []uint64
		for _, x := range results[i] {
			m, t, r = append(m, int64(x.toMarker)), append(t, int64(x.total)), append(r, x.peakRSS)
		}
		med[i] = [3]float64{float64(median(m)), float64(median(t)), float64(median(r))}
		fmt.Fprintf(w, "  %-26s %14v %12v %11.1f MiB\n", s.name,
			time.Duration(med[i][0]).Round(time.Millisecond), time.Duration(med[i][1]).Round(time.Millisecond), med[i][2]/(1<<20))
	}
	fmt.Fprintf(w, "  %-26s %13.3fx %11.3fx %13.3fx   (wisp / bare QEMU; goal <= 1.05)\n\n", "ratio",
		med[0][0]/med[1][0], med[0][1]/med[1][1], med[0][2]/med[1][2])
}

// probeTime times `wisp doctor`, which is the accelerator probe and nothing
// else.
func probeTime(wispBin string, n int) error {
	var ds []int64
	for i := 0; i < n; i++ {
		start := time.Now()
		if out, err := exec.Command(wispBin, "doctor").CombinedOutput(); err != nil {
			return fmt.Errorf("wisp doctor: %v: %s", err, out)
		}
		ds = append(ds, int64(time.Since(start)))
	}
	fmt.Printf("accelerator probe (wisp doctor, whole process): median %v\n", time.Duration(median(ds)).Round(time.Microsecond))
	return nil
}
