package main

// The image bench: how long `wisp image build debian` takes, cold and
// cached, and how long the built image takes to reach its login prompt
// under `wisp run --vm DIR` against a bare QEMU command booting the same
// files with QEMU's own virtio devices.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/image/vmdir"
)

func imageBench(ctx context.Context, n int, wispBin, qemu string, cold bool) error {
	if os.Geteuid() != 0 {
		fmt.Println("image: skipped (wisp image build needs root)")
		return nil
	}
	work, err := os.MkdirTemp("", "wisp-bench-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	build := func(name string, extra ...string) (time.Duration, error) {
		out := filepath.Join(work, name)
		start := time.Now()
		cmd := exec.CommandContext(ctx, wispBin, append([]string{"image", "build", "debian", "--root-password", "wisp", "-o", out}, extra...)...)
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("wisp image build: %v: %s", err, lastLine(log.String()))
		}
		return time.Since(start), nil
	}
	fmt.Println("image build (wisp image build debian)")
	if cold {
		d, err := build("cold", "--no-cache")
		if err != nil {
			return err
		}
		fmt.Printf("  cold (--no-cache, packages from the local apt cache) %10v   (goal <= 60s)\n", d.Round(100*time.Millisecond))
	}
	var cached []int64
	for i := 0; i < n; i++ {
		d, err := build(fmt.Sprintf("cached%d", i))
		if err != nil {
			return err
		}
		cached = append(cached, int64(d))
	}
	fmt.Printf("  cached (median of %d)                                %10v   (goal <= 1s)\n\n", n, time.Duration(median(cached)).Round(time.Millisecond))

	dir := filepath.Join(work, "cached0")
	m, err := vmdir.Load(dir)
	if err != nil {
		return err
	}
	wispArgv := []string{wispBin, "run", "--accel", "tcg", "--rng=false", "--vm", dir}
	qemuArgv := []string{qemu, "-nodefaults", "-no-user-config", "-nographic",
		"-accel", "tcg", "-machine", "q35", "-cpu", "max",
		"-smp", fmt.Sprint(m.CPUs), "-m", fmt.Sprintf("%dM", m.MemoryBytes>>20),
		"-kernel", m.Kernel, "-initrd", m.Initrd, "-append", m.Cmdline,
		"-drive", "file=" + m.Disks[0].Path + ",format=" + m.Disks[0].Format + ",if=virtio",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
		"-serial", "stdio", "-no-reboot"}
	if _, err := os.Stat(qbootROM); err == nil {
		qemuArgv = append(qemuArgv, "-bios", qbootROM)
	}
	var w, q []int64
	for i := 0; i < n; i++ {
		d, err := timeToLogin(ctx, wispArgv)
		if err != nil {
			return fmt.Errorf("wisp run --vm: %w", err)
		}
		w = append(w, int64(d))
		d, err = timeToLogin(ctx, qemuArgv)
		if err != nil {
			return fmt.Errorf("bare QEMU: %w", err)
		}
		q = append(q, int64(d))
	}
	mw, mq := time.Duration(median(w)), time.Duration(median(q))
	fmt.Printf("boot to the login prompt (TCG, %d vCPU, %d MiB, median of %d)\n", m.CPUs, m.MemoryBytes>>20, n)
	fmt.Printf("  %-34s %10v\n  %-34s %10v\n  %-34s %9.3fx   (goal <= 1.05)\n\n",
		"wisp run --vm DIR", mw.Round(time.Millisecond), "bare QEMU, same files, its devices", mq.Round(time.Millisecond),
		"ratio", float64(mw)/float64(mq))
	return nil
}

// timeToLogin starts argv and returns how long until "login:" shows on its
// stdout (the serial console), then kills it.
func timeToLogin(ctx context.Context, argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stdin = nil
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	found := make(chan time.Duration, 1)
	go func() {
		r := bufio.NewReader(stdout)
		var tail string
		buf := make([]byte, 4096)
		for {
			k, err := r.Read(buf)
			tail += string(buf[:k])
			if strings.Contains(tail, "login:") {
				found <- time.Since(start)
				_, _ = io.Copy(io.Discard, r)
				return
			}
			if len(tail) > 64 {
				tail = tail[len(tail)-64:]
			}
			if err != nil {
				close(found)
				return
			}
		}
	}()
	d, ok := <-found
	if !ok {
		return 0, fmt.Errorf("no login prompt")
	}
	return d, nil
}
