// Command kvmbench runs package kvmcompare's wisp-vs-QEMU comparison on
// this machine's /dev/kvm and prints its report on stdout (progress on
// stderr). test/bench builds it static and runs it inside test/nested's VM
// when the host has no /dev/kvm of its own.
//
//	kvmbench -wisp wisp -qemu qemu-system-x86_64 -kernel vmlinux -initrd initrd -cmdline '...' [-n 5] [-nested]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/wisp-vmm/wisp/test/bench/kvmcompare"
)

func main() {
	var cfg kvmcompare.Config
	flag.StringVar(&cfg.Wisp, "wisp", "/usr/bin/wisp", "the wisp binary")
	flag.StringVar(&cfg.QEMU, "qemu", "/usr/bin/qemu-system-x86_64", "the QEMU binary")
	flag.StringVar(&cfg.Kernel, "kernel", "", "ELF vmlinux with a PVH entry")
	flag.StringVar(&cfg.KernelTag, "kernel-tag", "", "the kernel's name in the report")
	flag.StringVar(&cfg.Initrd, "initrd", "", "initramfs")
	flag.StringVar(&cfg.Cmdline, "cmdline", "", "kernel command line")
	flag.IntVar(&cfg.CPUs, "cpus", kvmcompare.DefaultCPUs, "vCPUs")
	flag.IntVar(&cfg.MemoryMiB, "memory-mib", kvmcompare.DefaultMemoryMiB, "guest RAM in MiB")
	flag.IntVar(&cfg.Runs, "n", kvmcompare.DefaultRuns, "boots per VMM (the median is reported)")
	flag.DurationVar(&cfg.Timeout, "timeout", kvmcompare.DefaultTimeout, "bound on one boot")
	flag.BoolVar(&cfg.Nested, "nested", false, "KVM here is nested inside QEMU TCG: say so in the report")
	flag.Parse()
	cfg.Progress = os.Stderr
	if err := kvmcompare.Run(context.Background(), cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kvmbench: %v\n", err)
		os.Exit(1)
	}
}
