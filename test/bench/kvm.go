package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/test/bench/kvmcompare"
	"github.com/wisp-vmm/wisp/test/nested"
)

// nestedBenchTimeout bounds the whole comparison in the nested VM: a boot
// there takes seconds, the nested VM's own boot about a minute.
const nestedBenchTimeout = 30 * time.Minute

// kvmCmdline is the comparison's kernel command line, the same for both
// VMMs: the console on COM1 and not quiet (the bench times console
// lines), noxsave as test/kvm's Linux test has it, and init runs `true`
// and powers off.
func kvmCmdline() (string, error) {
	param, err := initproto.EncodeCmd([]string{"true"})
	if err != nil {
		return "", err
	}
	return "console=ttyS0 noxsave reboot=k panic=-1 " + param + " " + initproto.ParamTTY + "=raw", nil
}

// kvmBench compares wisp's KVM backend with QEMU's microvm on KVM, on the
// minimal kernel's ELF vmlinux: here if the host has /dev/kvm, else inside
// test/nested's VM.
func kvmBench(ctx context.Context, n int, wispBin string, kern *guest.Kernel, initrd string) error {
	fmt.Println()
	if kern.ELF == "" {
		return fmt.Errorf("KVM comparison: the minimal kernel %s has no ELF vmlinux", kern.Version)
	}
	cmdline, err := kvmCmdline()
	if err != nil {
		return err
	}
	cfg := kvmcompare.Config{
		Kernel: kern.ELF, KernelTag: "minimal " + kern.Version, Initrd: initrd, Cmdline: cmdline, Runs: n,
	}
	if nested.HostHasKVM() {
		qemu, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return fmt.Errorf("KVM comparison: %w", err)
		}
		cfg.Wisp, cfg.QEMU, cfg.Progress = wispBin, qemu, os.Stderr
		return kvmcompare.Run(ctx, cfg, os.Stdout)
	}
	return kvmBenchNested(ctx, cfg)
}

// kvmBenchNested runs test/bench/kvmbench in the nested VM with static
// builds of it and wisp, the host's QEMU with its libraries and the
// firmware microvm loads, and the kernel and initramfs. kvmbench prints
// the report; its progress lines go to stderr here.
func kvmBenchNested(ctx context.Context, cfg kvmcompare.Config) error {
	fmt.Fprintln(os.Stderr, "bench: no /dev/kvm here: running the KVM comparison inside test/nested's VM (nested KVM under QEMU TCG)")
	ctx, cancel := context.WithTimeout(ctx, nestedBenchTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "wisp-kvmbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wisp, bench := filepath.Join(dir, "wisp"), filepath.Join(dir, "kvmbench")
	for pkg, out := range map[string]string{"./cmd/wisp": wisp, "./test/bench/kvmbench": bench} {
		if err := nested.BuildMain(ctx, pkg, out); err != nil {
			return fmt.Errorf("KVM comparison: %w", err)
		}
	}
	const (
		insideWisp = "/usr/bin/wisp"
		insideQEMU = "/usr/bin/" + nested.QEMUBinary
		insideDir  = "/files/"
	)
	kernel, initrd := insideDir+filepath.Base(cfg.Kernel), insideDir+filepath.Base(cfg.Initrd)
	files := map[string]string{insideWisp: wisp, kernel: cfg.Kernel, initrd: cfg.Initrd}
	for _, f := range kvmcompare.QEMUDataFiles() {
		files[f] = f
	}
	prog := nested.Program{
		Binary: bench,
		Args: []string{
			"-wisp", insideWisp, "-qemu", insideQEMU,
			"-kernel", kernel, "-kernel-tag", cfg.KernelTag, "-initrd", initrd, "-cmdline", cfg.Cmdline,
			"-n", strconv.Itoa(cfg.Runs), "-nested",
		},
		Files:     files,
		HostTools: []string{nested.QEMUBinary},
	}
	code, err := nested.RunProgram(ctx, prog, func(line string) {
		if isNestedNoise(line) {
			fmt.Fprintln(os.Stderr, "  "+line)
			return
		}
		fmt.Println(line)
	})
	if errors.Is(err, nested.ErrNoKernel) || errors.Is(err, nested.ErrNoQEMU) {
		fmt.Printf("KVM comparison skipped: no /dev/kvm here and no nested VM either: %v\n", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("KVM comparison in the nested VM: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("KVM comparison in the nested VM: kvmbench exited with code %d", code)
	}
	return nil
}

// isNestedNoise tells the lines of the nested run that are not the report:
// kvmcompare's progress, kvmbench's error and the kernel's warnings that
// the nested VM's init slips in.
func isNestedNoise(line string) bool {
	for _, p := range []string{kvmcompare.ProgressPrefix, "kvmbench: ", "kernel: "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}
