package kvmvm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices"
	"github.com/wisp-vmm/wisp/internal/ratelog"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
)

// vcpu is one virtual CPU and the OS thread that runs it.
type vcpu struct {
	*kvm.VCPU
	mem GuestMemory  // for reading the faulting instruction in error reports
	tid atomic.Int32 // OS thread id while running, 0 before
}

// kick forces the vCPU out of KVM_RUN: immediate_exit covers the window
// before it enters the guest, the signal the time inside it. SIGURG is the
// Go runtime's own preemption signal, so it has a handler already and
// interrupting a goroutine with it is harmless.
func (c *vcpu) kick() {
	c.SetImmediateExit(true)
	if tid := c.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

// runVCPU is a vCPU thread: enter the guest, serve the exit, repeat.
func (inst *instance) runVCPU(c *vcpu) {
	defer inst.running.Done()
	// KVM ties a vCPU to the thread that runs it; a goroutine hopping
	// threads would make every KVM_RUN pay for a migration.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(threadID()))
	defer c.tid.Store(0)

	for {
		select {
		case <-inst.ended:
			return
		default:
		}
		if !inst.pausePoint() {
			return
		}
		err := c.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			c.SetImmediateExit(false)
			continue
		}
		if err != nil {
			inst.finishErr(vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: fmt.Sprintf("vCPU %d: %v", c.ID(), err)}, err)
			return
		}
		if st, done := inst.handleExit(c); done {
			inst.finish(st)
			return
		}
	}
}

// handleExit serves one exit. It returns done when the exit ends the VM.
func (inst *instance) handleExit(c *vcpu) (vmm.ExitStatus, bool) {
	switch reason := c.ExitReason(); reason {
	case kvm.ExitIO:
		io, err := c.IO()
		if err != nil {
			return backendFailure(c, err), true
		}
		inst.serveIO(io)
	case kvm.ExitMMIO:
		mmio, err := c.MMIO()
		if err != nil {
			return backendFailure(c, err), true
		}
		inst.serve(inst.mmio, mmio.PhysAddr, mmio.Data, mmio.IsWrite)
	case kvm.ExitIntr:
		// A signal arrived while in the guest; the loop checks why.
	case kvm.ExitHLT:
		// Only without an in-kernel LAPIC, which wisp always creates; a
		// halted CPU with nothing to wake it stays halted until the end.
		<-inst.ended
	case kvm.ExitShutdown:
		return vmm.ExitStatus{Reason: vmm.ExitReset, Detail: fmt.Sprintf("vCPU %d: triple fault (shutdown)", c.ID())}, true
	case kvm.ExitSystemEvent:
		ev, err := c.SystemEvent()
		if err != nil {
			return backendFailure(c, err), true
		}
		return systemEventStatus(c.ID(), ev), true
	case kvm.ExitInternalError:
		return emulationFailure(c), true
	case kvm.ExitFailEntry:
		fe, err := c.FailEntry()
		if err != nil {
			return backendFailure(c, err), true
		}
		return vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: fmt.Sprintf("vCPU %d: KVM could not enter the guest (hardware entry failure reason %#x)", c.ID(), fe.HardwareEntryFailureReason)}, true
	default:
		return vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: fmt.Sprintf("vCPU %d: unexpected KVM exit %v", c.ID(), reason)}, true
	}
	return vmm.ExitStatus{}, false
}

func backendFailure(c *vcpu, err error) vmm.ExitStatus {
	return vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: fmt.Sprintf("vCPU %d: %v", c.ID(), err)}
}

func systemEventStatus(id int, ev kvm.SystemEventExit) vmm.ExitStatus {
	switch ev.Type {
	case kvm.SystemEventShutdown:
		return vmm.ExitStatus{Reason: vmm.ExitPoweroff, Detail: "system event: shutdown"}
	case kvm.SystemEventReset:
		return vmm.ExitStatus{Reason: vmm.ExitReset, Detail: "system event: reset"}
	case kvm.SystemEventCrash:
		return vmm.ExitStatus{Reason: vmm.ExitPanic, Detail: "system event: crash"}
	}
	return vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: fmt.Sprintf("vCPU %d: system event %v", id, ev.Type)}
}

// serveIO runs a port I/O exit, including string I/O (count > 1), whose
// data KVM lays out back to back.
func (inst *instance) serveIO(io kvm.IOExit) {
	size := int(io.Size)
	for i := 0; i < int(io.Count); i++ {
		chunk := io.Data[i*size : (i+1)*size]
		inst.serve(inst.pio, uint64(io.Port), chunk, io.Direction == kvm.IOOut)
	}
}

// accessKey is where a failed guest access went: its log lines are
// limited per address.
type accessKey struct {
	mmio bool
	addr uint64
}

// serve dispatches one access. Nothing answering at an address is normal
// (Linux probes for hardware that is not there): reads float high like an
// empty ISA bus, writes vanish. A device error is the guest's problem, not
// the host's, and is only logged, rate-limited: a guest repeating the
// access must not flood the host's log nor stall this vCPU on writing it.
func (inst *instance) serve(bus *devices.Bus, addr uint64, data []byte, write bool) {
	var err error
	if write {
		err = bus.Write(addr, data)
	} else {
		err = bus.Read(addr, data)
	}
	if err == nil {
		return
	}
	if !write {
		for i := range data {
			data[i] = 0xff
		}
	}
	if errors.Is(err, devices.ErrNoDevice) {
		return
	}
	ok, suppressed := inst.accessLog.Allow(accessKey{mmio: bus == inst.mmio, addr: addr})
	if !ok {
		return
	}
	if suppressed > 0 {
		fmt.Fprintf(inst.opts.Log, "wisp: %#x: %v\n", addr, ratelog.Suppressed(suppressed))
	}
	fmt.Fprintf(inst.opts.Log, "wisp: %#x: %v\n", addr, err)
}
