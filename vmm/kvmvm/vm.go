// Package kvmvm is wisp's own VMM: it builds a VM from /dev/kvm, loads a
// kernel with package boot, wires the legacy devices onto port-I/O and MMIO
// buses and runs one locked OS thread per vCPU. It implements vmm.Backend.
package kvmvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-vmm/wisp/devices"
	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

// MMIODevice is an extra device placed on the MMIO bus (tests use it to
// watch a guest's MMIO accesses).
type MMIODevice struct {
	Base, Length uint64
	Device       devices.Device
}

// Options tune a VM beyond what vmm.Config says.
type Options struct {
	// Start is when wisp started; boot markers are timed from it.
	Start time.Time
	// OnBootMarker is called for each byte the guest writes to the boot
	// marker port.
	OnBootMarker func(code byte, since time.Duration)
	// Log receives diagnostics (a device failing a guest access, limited
	// to a few lines per address a minute; a guest reset, ...).
	Log io.Writer
	// FlatBinary loads the kernel file as a raw real-mode image at
	// FlatBinaryAddr and enters it at CS:IP = 0:FlatBinaryAddr, for small
	// test guests; a Linux kernel never needs it.
	FlatBinary bool
	// StartAllCPUs enters every vCPU at the kernel's entry with the boot
	// CPU's state, for test guests that do their own SMP rendezvous. Linux
	// brings its other CPUs up itself through INIT/SIPI, so it is off by
	// default and the other vCPUs wait for a SIPI in the in-kernel LAPIC.
	StartAllCPUs bool
	// KernelImage, when set, is the kernel itself and cfg.Kernel is only
	// its name (the accelerator probe carries its guest in the binary).
	KernelImage []byte
	// MMIO places extra devices on the MMIO bus.
	MMIO []MMIODevice
	// AfterLoad runs once the kernel is in guest memory and before any
	// vCPU runs; tests use it to poke parameters into guest RAM.
	AfterLoad func(mem GuestMemory) error
	// Virtio devices become virtio-pci functions on PCI bus 0, in order
	// from slot 1 (so the first disk is Linux's vda). A guest reset
	// resets them and the VM stops them when it ends, but the caller owns
	// them and closes them (vmm/machine does, for every backend).
	Virtio []virtio.Device
}

// GuestMemory is the view of guest RAM AfterLoad gets.
type GuestMemory interface {
	ReadAt(p []byte, gpa uint64) error
	WriteAt(p []byte, gpa uint64) error
}

// FlatBinaryAddr is where Options.FlatBinary images are loaded and entered.
const FlatBinaryAddr = 0x1000

// ErrNotRunning is returned by Pause, Resume and Stop on a VM that has not
// started or has already ended.
var ErrNotRunning = errors.New("VM is not running")

// VM is a guest run by wisp's KVM VMM. Under --on-reboot=restart a guest
// reset tears the instance down and boots a fresh one in its place.
type VM struct {
	cfg  vmm.Config
	con  vmm.Console
	opts Options

	mu      sync.Mutex
	current *instance
	started bool
	// stopping holds why the host ended the VM; once set, a reset no
	// longer boots a new instance.
	stopping *vmm.ExitStatus

	// out batches the UART's byte-at-a-time output for the console.
	out *console.AsyncWriter

	done   chan struct{} // closed when the VM has ended for good
	status vmm.ExitStatus
	err    error

	input atomic.Pointer[inputSink]
}

// New prepares a VM for a validated cfg; nothing touches KVM until Start.
func New(cfg vmm.Config, con vmm.Console, opts Options) (*VM, error) {
	if cfg.Boot == vmm.BootFirmware {
		return nil, vmm.Invalidf("--boot firmware runs on the TCG backend (wisp's KVM VMM has no BIOS): use --accel tcg or auto")
	}
	if con.Out == nil {
		con.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	return &VM{cfg: cfg, con: con, opts: opts, done: make(chan struct{})}, nil
}

// Start builds the VM and starts its vCPUs. The VM runs until the guest
// ends it, Stop is called, or ctx is cancelled.
func (v *VM) Start(ctx context.Context) error {
	v.mu.Lock()
	if v.started {
		v.mu.Unlock()
		return fmt.Errorf("start: already started")
	}
	v.started = true
	v.mu.Unlock()

	v.out = console.NewAsyncWriter(v.con.Out)
	inst, err := newInstance(v.cfg, v.out, v.opts)
	if err != nil {
		_ = v.out.Close()
		return err
	}
	v.setCurrent(inst)
	if v.con.In != nil {
		go v.pumpInput()
	}
	inst.start()
	go v.supervise(ctx, inst)
	return nil
}

// setCurrent makes inst the running instance, unless the host has asked
// the VM to stop meanwhile; then it returns false.
func (v *VM) setCurrent(inst *instance) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopping != nil {
		return false
	}
	v.current = inst
	v.input.Store(&inputSink{queue: inst.serial.Queue})
	return true
}

// requestStop records that the host ends the VM with st and ends the
// current instance. Holding mu while reading current means a restart
// cannot slip a new instance in between.
func (v *VM) requestStop(st vmm.ExitStatus) {
	v.mu.Lock()
	if v.stopping == nil {
		v.stopping = &st
	}
	inst := v.current
	v.mu.Unlock()
	if inst != nil {
		inst.finish(st)
	}
}

func (v *VM) instance() *instance {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.current
}

// supervise waits for each instance to end, boots a new one after a reset
// when asked to, and records the final status.
func (v *VM) supervise(ctx context.Context, inst *instance) {
	stopOnCancel := context.AfterFunc(ctx, func() {
		v.requestStop(vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: context.Cause(ctx).Error()})
	})
	defer stopOnCancel()
	for {
		st, runErr := inst.wait()
		closeErr := inst.close()
		restart := st.Reason == vmm.ExitReset && v.cfg.OnReboot == vmm.RebootRestart && ctx.Err() == nil
		if !restart {
			// Console output errors (a closed terminal) do not change how
			// the guest ended.
			_ = v.out.Close()
			v.status, v.err = st, errors.Join(runErr, closeErr)
			close(v.done)
			return
		}
		fmt.Fprintf(v.opts.Log, "wisp: guest reset (%s): booting it again\n", st.Detail)
		next, err := newInstance(v.cfg, v.out, v.opts)
		if err != nil {
			_ = v.out.Close()
			v.status = vmm.ExitStatus{Reason: vmm.ExitBackendFailure, Detail: "restart after reset: " + err.Error()}
			v.err = err
			close(v.done)
			return
		}
		if !v.setCurrent(next) {
			// Stopped while the new instance was being built: it never ran.
			_ = next.close()
			_ = v.out.Close()
			v.mu.Lock()
			v.status = *v.stopping
			v.mu.Unlock()
			close(v.done)
			return
		}
		next.start()
		inst = next
	}
}

// inputSink is where console input currently goes (the running instance's
// UART); it is swapped when a reset boots a new instance.
type inputSink struct{ queue func([]byte) (int, error) }

// pumpInput copies console input into the UART. A full UART buffer drops
// bytes (a person typing into a stuck guest) rather than blocking wisp.
func (v *VM) pumpInput() {
	buf := make([]byte, 1024)
	for {
		n, err := v.con.In.Read(buf)
		if n > 0 {
			if sink := v.input.Load(); sink != nil {
				_, _ = sink.queue(buf[:n])
			}
		}
		if err != nil {
			return
		}
		select {
		case <-v.done:
			return
		default:
		}
	}
}

// Wait blocks until the VM has ended and returns how.
func (v *VM) Wait() (vmm.ExitStatus, error) {
	<-v.done
	return v.status, v.err
}

// Pause stops every vCPU between exits; guest time stands still for the
// guest's code (its clocks catch up on resume).
func (v *VM) Pause() error {
	inst := v.instance()
	if inst == nil {
		return ErrNotRunning
	}
	return inst.pause()
}

// Resume lets paused vCPUs run again.
func (v *VM) Resume() error {
	inst := v.instance()
	if inst == nil {
		return ErrNotRunning
	}
	return inst.resume()
}

// Stop ends the VM. StopGraceful presses the ACPI power button and waits
// for the guest to power off until ctx is done, then forces it.
func (v *VM) Stop(ctx context.Context, how vmm.StopMode) error {
	inst := v.instance()
	if inst == nil {
		return ErrNotRunning
	}
	if how == vmm.StopGraceful {
		if err := inst.pm.PressPowerButton(); err != nil {
			fmt.Fprintf(v.opts.Log, "wisp: power button: %v\n", err)
		}
		select {
		case <-v.done:
			return nil
		case <-ctx.Done():
		}
	}
	v.requestStop(vmm.ExitStatus{Reason: vmm.ExitStopped, Detail: "stopped by the host"})
	<-v.done
	return nil
}

var _ vmm.Backend = (*VM)(nil)
