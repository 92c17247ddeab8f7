// Package accel decides which engine runs a guest: wisp's KVM VMM when
// /dev/kvm exists, may be opened, and can run what an unmodified Linux
// kernel executes early; QEMU's TCG emulator otherwise. Whenever it falls
// back it gives one line saying why.
package accel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
)

// Host describes the machine for the checks; tests point it at fakes.
type Host struct {
	KVMDevice string // normally /dev/kvm
	SysModule string // normally /sys/module
	CPUInfo   string // normally /proc/cpuinfo
}

// DefaultHost is this machine.
func DefaultHost(kvmDevice string) Host {
	if kvmDevice == "" {
		kvmDevice = vmm.DefaultKVM
	}
	return Host{KVMDevice: kvmDevice, SysModule: "/sys/module", CPUInfo: "/proc/cpuinfo"}
}

// GuestProbe runs the probe guest on the KVM device and returns nil when it
// completed, or an error whose text names the step that failed.
type GuestProbe func(ctx context.Context, kvmDevice string) error

// Result is what the probe found.
type Result struct {
	// KVM is true when the KVM backend can run unmodified guests here.
	KVM bool
	// Reason is one line on why KVM is not used; empty when it is.
	Reason string
	// Findings are the individual observations, for `wisp doctor`.
	Findings []string
	// Took is how long the probe ran.
	Took time.Duration
}

// Choose returns the accelerator to use for the requested one: auto takes
// KVM only when the probe passed.
func (r Result) Choose(requested vmm.Accel) vmm.Accel {
	switch requested {
	case vmm.AccelKVM, vmm.AccelTCG:
		return requested
	}
	if r.KVM {
		return vmm.AccelKVM
	}
	return vmm.AccelTCG
}

// Probe checks the host and, if KVM opens, runs the probe guest. It never
// fails: every problem becomes the Reason.
func Probe(ctx context.Context, h Host, guest GuestProbe) Result {
	start := time.Now()
	r := probe(ctx, h, guest)
	r.Took = time.Since(start)
	return r
}

func probe(ctx context.Context, h Host, guest GuestProbe) Result {
	var r Result
	pvm := h.isPVM()
	virtFlag := h.cpuVirtFlag()
	if virtFlag != "" {
		r.Findings = append(r.Findings, "CPU flag: "+virtFlag)
	} else {
		r.Findings = append(r.Findings, "CPU flags: no vmx or svm (virtualization not exposed to this machine)")
	}
	if pvm {
		r.Findings = append(r.Findings, "kvm_pvm module present: KVM here is PVM (Pagetable-based Virtual Machine)")
	}

	sys, err := kvm.Open(h.KVMDevice)
	switch {
	case errors.Is(err, kvm.ErrNoDevice):
		r.Reason = "no " + h.KVMDevice
		if _, statErr := os.Stat(h.KVMDevice); statErr == nil {
			r.Reason = h.KVMDevice + " has no KVM driver behind it"
		}
		r.Findings = append(r.Findings, err.Error())
		return r
	case errors.Is(err, kvm.ErrPermission):
		r.Reason = "permission denied on " + h.KVMDevice + " (add the user to group kvm)"
		r.Findings = append(r.Findings, err.Error())
		return r
	case err != nil:
		r.Reason = "cannot use " + h.KVMDevice + ": " + err.Error()
		r.Findings = append(r.Findings, err.Error())
		return r
	}
	r.Findings = append(r.Findings, fmt.Sprintf("%s opened, KVM API version %d", h.KVMDevice, sys.APIVersion()))
	sys.Close()

	if guest == nil {
		r.Reason = "no probe guest to run"
		return r
	}
	if err := guest(ctx, h.KVMDevice); err != nil {
		r.Findings = append(r.Findings, "probe guest: "+err.Error())
		if pvm {
			r.Reason = "KVM here is PVM and cannot run unmodified guests (" + err.Error() + ")"
		} else {
			r.Reason = "KVM cannot run unmodified guests here (" + err.Error() + ")"
		}
		return r
	}
	r.Findings = append(r.Findings, "probe guest: every step passed")
	r.KVM = true
	return r
}

// KVMIsPVM reports whether KVM on this host is PVM: the kvm_pvm module is
// there and the CPU exposes no vmx or svm, so unmodified guests cannot run.
func (h Host) KVMIsPVM() bool { return h.isPVM() && h.cpuVirtFlag() == "" }

func (h Host) isPVM() bool {
	_, err := os.Stat(h.SysModule + "/kvm_pvm")
	return err == nil
}

// cpuVirtFlag returns "vmx", "svm" or "" from the cpuinfo flags line.
func (h Host) cpuVirtFlag() string {
	data, err := os.ReadFile(h.CPUInfo)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
		return ""
	}
	return ""
}
