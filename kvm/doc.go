// Package kvm is a thin, typed layer over the /dev/kvm ioctls wisp needs:
// the system handle (capabilities, supported CPUID, MSR list), VMs (memory
// slots, in-kernel irqchip and PIT, irqfd/ioeventfd, GSI routing, MSIs) and
// vCPUs (KVM_RUN and its shared kvm_run page, registers, CPUID, MSRs, LAPIC).
//
// It holds no policy: it does not choose memory layouts, CPUID features or
// register values, and it does not decide what an exit means. Callers do.
//
// Every error names the ioctl that failed and wraps its errno, so both
// errors.Is(err, unix.EEXIST) and a log line like
// "KVM_CREATE_VCPU: file exists" work. Opening the device maps the usual
// failures to ErrNoDevice and ErrPermission with a hint how to fix them.
//
// The package is x86-64 only: the structs mirror <asm/kvm.h> for x86. All
// code that needs package unsafe lives in files named *_unsafe.go; the
// struct layouts and ioctl numbers are checked against the kernel's own
// headers by the tests (gcc against <linux/kvm.h>).
package kvm
