package kvmvm

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/boot/acpi"
	"github.com/wisp-vmm/wisp/devices"
	"github.com/wisp-vmm/wisp/devices/legacy"
	pcibus "github.com/wisp-vmm/wisp/devices/pci"
	vpci "github.com/wisp-vmm/wisp/devices/virtio/pci"
	"github.com/wisp-vmm/wisp/internal/ratelog"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/memory"
)

// Fixed guest-physical addresses KVM needs for its own use on x86 (the TSS
// and identity map of real-mode emulation on Intel); they sit just below
// the 4 GiB boundary, inside the PCI hole and away from the LAPIC/IOAPIC.
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// Legacy I/O ports and IRQs, the same as a PC's (and as wisp's ACPI tables
// and QEMU's q35 say).
const (
	com1Port       = 0x3f8
	com1IRQ        = 4
	rtcPort        = 0x70
	bootMarkerPort = 0x440
	pvpanicPort    = 0x505
	pm1aEventPort  = 0x600
	pm1aCtrlPort   = 0x604
	pmTimerPort    = 0x608
	sciIRQ         = 9
)

// instance is one boot of a VM: a KVM VM, its memory, devices and vCPUs.
// A reset under --on-reboot=restart throws the instance away and builds a
// new one, so no state leaks from one boot into the next.
type instance struct {
	opts Options
	sys  *kvm.System
	vm   *kvm.VM
	mem  *memory.Memory

	pio, mmio *devices.Bus
	gsi       *gsiTable
	pci       *pcibus.Bus
	// transports are the virtio-pci functions of Options.Virtio.
	transports []*vpci.Transport
	serial     *legacy.Serial
	pm         *legacy.ACPIPM
	vcpus      []*vcpu
	// accessLog limits the lines failed guest accesses log (see serve).
	accessLog *ratelog.Limiter[accessKey]

	// finishOnce records the first reason the instance ends; every later
	// one (other vCPUs noticing the stop) is dropped.
	finishOnce sync.Once
	status     vmm.ExitStatus
	runErr     error
	ended      chan struct{}

	pauseMu sync.Mutex
	paused  bool
	parked  sync.WaitGroup // vCPUs acknowledging a pause
	unpause chan struct{}

	running sync.WaitGroup // vCPU goroutines
}

// newInstance builds everything up to the point where vCPUs can run. On
// error everything made so far is released.
func newInstance(cfg vmm.Config, out io.Writer, opts Options) (_ *instance, err error) {
	inst := &instance{opts: opts, ended: make(chan struct{}), pio: devices.NewBus(), mmio: devices.NewBus(),
		accessLog: ratelog.New[accessKey](ratelog.Config{})}
	defer func() {
		if err != nil {
			_ = inst.close()
		}
	}()
	if inst.sys, err = kvm.Open(cfg.KVMDevice); err != nil {
		return nil, err
	}
	if inst.vm, err = inst.sys.CreateVM(); err != nil {
		return nil, err
	}
	if err = inst.vm.SetTSSAddr(tssAddr); err != nil {
		return nil, err
	}
	if err = inst.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return nil, err
	}
	// The in-kernel PIC, IOAPIC and LAPICs and the PIT: interrupt delivery
	// and timers never leave the kernel, which keeps exits rare.
	if err = inst.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	inst.gsi = newGSITable(inst.vm, gsiRoutes())
	if err = inst.gsi.commit(); err != nil {
		return nil, err
	}
	if err = inst.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, err
	}
	if inst.mem, err = memory.New(cfg.MemoryBytes); err != nil {
		return nil, err
	}
	host := inst.mem.Host()
	for i, r := range inst.mem.Regions() {
		if err = inst.vm.SetUserMemoryRegion(uint32(i), r.GuestAddr, host[r.Offset:r.Offset+r.Size]); err != nil {
			return nil, err
		}
	}
	if err = inst.addDevices(out); err != nil {
		return nil, err
	}
	if err = inst.addPCI(); err != nil {
		return nil, err
	}
	cpu, err := inst.load(cfg)
	if err != nil {
		return nil, err
	}
	if opts.AfterLoad != nil {
		if err = opts.AfterLoad(inst.mem); err != nil {
			return nil, fmt.Errorf("after load: %w", err)
		}
	}
	if err = inst.createVCPUs(cfg.CPUs, cpu); err != nil {
		return nil, err
	}
	return inst, nil
}

// ioapicPins is how many inputs KVM's in-kernel IOAPIC has.
const ioapicPins = 24

// gsiRoutes is the interrupt routing a PC has and wisp's MADT and MP table
// describe: ISA IRQs on the two PICs (2 is the cascade), every GSI on the
// IOAPIC pin of the same number, except that the PIT's IRQ 0 arrives on
// pin 2 (the MADT's interrupt source override). KVM's default routing puts
// GSI 0 on pin 0, where Linux would not find its timer.
func gsiRoutes() []kvm.RoutingEntry {
	var routes []kvm.RoutingEntry
	for gsi := uint32(0); gsi < 16; gsi++ {
		switch {
		case gsi == 2:
		case gsi < 8:
			routes = append(routes, kvm.IRQChipRoute(gsi, kvm.IRQChipPICMaster, gsi))
		default:
			routes = append(routes, kvm.IRQChipRoute(gsi, kvm.IRQChipPICSlave, gsi-8))
		}
	}
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		switch gsi {
		case 0:
			routes = append(routes, kvm.IRQChipRoute(0, kvm.IRQChipIOAPIC, 2))
		case 2:
		default:
			routes = append(routes, kvm.IRQChipRoute(gsi, kvm.IRQChipIOAPIC, gsi))
		}
	}
	return routes
}

// irqLine pulses an interrupt line of the in-kernel PIC/IOAPIC.
type irqLine struct {
	vm  *kvm.VM
	irq uint32
}

func (l irqLine) Trigger() error {
	if err := l.vm.IRQLine(l.irq, true); err != nil {
		return err
	}
	return l.vm.IRQLine(l.irq, false)
}

func (inst *instance) addDevices(out io.Writer) error {
	inst.serial = legacy.NewSerial(irqLine{inst.vm, com1IRQ}, out)
	i8042 := legacy.NewI8042(func() {
		inst.finish(vmm.ExitStatus{Reason: vmm.ExitReset, Detail: "reset through the i8042 controller"})
	})
	marker := legacy.NewBootMarker(inst.opts.Start, time.Now, inst.opts.OnBootMarker)
	pvpanic := legacy.NewPVPanic(func(ev legacy.PVPanicEvent) {
		if ev&legacy.PVPanicPanicked != 0 {
			inst.finish(vmm.ExitStatus{Reason: vmm.ExitPanic, Detail: "the guest kernel panicked (pvpanic)"})
		}
	})
	inst.pm = legacy.NewACPIPM(irqLine{inst.vm, sciIRQ}, func() {
		inst.finish(vmm.ExitStatus{Reason: vmm.ExitPoweroff, Detail: "ACPI S5"})
	})
	pio := []struct {
		dev  devices.Device
		base uint64
		len  uint64
	}{
		{inst.serial, com1Port, 8},
		{i8042.DataPort(), 0x60, 1},
		{i8042.CommandPort(), 0x64, 1},
		{legacy.NewRTC(time.Now), rtcPort, 2},
		{marker, bootMarkerPort, 1},
		{pvpanic, pvpanicPort, 1},
		{inst.pm.EventBlock(), pm1aEventPort, 4},
		{inst.pm.ControlBlock(), pm1aCtrlPort, 2},
		{legacy.NewPMTimer(time.Now(), nil), pmTimerPort, legacy.PMTimerSize},
	}
	for _, d := range pio {
		if err := inst.pio.Insert(d.dev, d.base, d.len); err != nil {
			return fmt.Errorf("port %#x: %w", d.base, err)
		}
	}
	for _, d := range inst.opts.MMIO {
		if err := inst.mmio.Insert(d.Device, d.Base, d.Length); err != nil {
			return fmt.Errorf("MMIO %#x: %w", d.Base, err)
		}
	}
	return nil
}

// load puts the kernel in guest memory and returns the boot CPU's state.
// The kernel and initrd are mapped, not read, so they never sit on the Go
// heap: the loader copies them straight into guest RAM.
func (inst *instance) load(cfg vmm.Config) (boot.CPUState, error) {
	kernel := inst.opts.KernelImage
	if kernel == nil {
		f, err := memory.MapFile(cfg.Kernel)
		if err != nil {
			return boot.CPUState{}, fmt.Errorf("read kernel: %w", err)
		}
		defer f.Close()
		kernel = f.Bytes()
	}
	if inst.opts.FlatBinary {
		if err := inst.mem.WriteAt(kernel, FlatBinaryAddr); err != nil {
			return boot.CPUState{}, fmt.Errorf("load flat binary (%d bytes) at %#x: %w", len(kernel), FlatBinaryAddr, err)
		}
		return realModeState(FlatBinaryAddr), nil
	}
	var initrd []byte
	if cfg.Initrd != "" {
		f, err := memory.MapFile(cfg.Initrd)
		if err != nil {
			return boot.CPUState{}, fmt.Errorf("read initrd: %w", err)
		}
		defer f.Close()
		initrd = f.Bytes()
	}
	var ram []boot.Region
	for _, r := range inst.mem.Regions() {
		ram = append(ram, boot.Region{GuestAddr: r.GuestAddr, Size: r.Size})
	}
	res, err := boot.Load(inst.mem, boot.Config{
		Kernel:  kernel,
		Initrd:  initrd,
		Cmdline: cfg.Cmdline,
		RAM:     ram,
		CPUs:    cfg.CPUs,
		ACPI: acpi.Config{
			PM1aEventPort:   pm1aEventPort,
			PM1aControlPort: pm1aCtrlPort,
			PMTimerPort:     pmTimerPort,
			PVPanicPort:     pvpanicPort,
		},
	})
	if err != nil {
		return boot.CPUState{}, fmt.Errorf("load %s: %w", cfg.Kernel, err)
	}
	return res.CPU, nil
}

// start launches the vCPU threads.
func (inst *instance) start() {
	for _, c := range inst.vcpus {
		inst.running.Add(1)
		go inst.runVCPU(c)
	}
}

// finish ends the instance for reason st (the first reason wins) and
// kicks every vCPU out of the guest.
func (inst *instance) finish(st vmm.ExitStatus) { inst.finishErr(st, nil) }

func (inst *instance) finishErr(st vmm.ExitStatus, err error) {
	inst.finishOnce.Do(func() {
		inst.status, inst.runErr = st, err
		close(inst.ended)
		inst.pauseMu.Lock()
		if inst.paused {
			inst.paused = false
			close(inst.unpause)
		}
		inst.pauseMu.Unlock()
		inst.kickAll()
	})
}

// wait blocks until the instance has ended and all its vCPU threads left.
func (inst *instance) wait() (vmm.ExitStatus, error) {
	<-inst.ended
	inst.running.Wait()
	return inst.status, inst.runErr
}

func (inst *instance) kickAll() {
	for _, c := range inst.vcpus {
		c.kick()
	}
}

// pause parks every vCPU and returns once all of them are out of the guest.
func (inst *instance) pause() error {
	inst.pauseMu.Lock()
	select {
	case <-inst.ended:
		inst.pauseMu.Unlock()
		return ErrNotRunning
	default:
	}
	if inst.paused {
		inst.pauseMu.Unlock()
		return nil
	}
	inst.paused = true
	inst.unpause = make(chan struct{})
	inst.parked.Add(len(inst.vcpus))
	inst.pauseMu.Unlock()
	inst.kickAll()
	allParked := make(chan struct{})
	go func() {
		inst.parked.Wait()
		close(allParked)
	}()
	select {
	case <-allParked:
		return nil
	case <-inst.ended:
		// A vCPU that ended never parks; the waiter above is released
		// when the remaining ones leave through pausePoint.
		return ErrNotRunning
	}
}

func (inst *instance) resume() error {
	inst.pauseMu.Lock()
	defer inst.pauseMu.Unlock()
	if !inst.paused {
		return nil
	}
	inst.paused = false
	close(inst.unpause)
	return nil
}

// pausePoint parks the calling vCPU while the instance is paused. It
// returns false when the instance has ended.
func (inst *instance) pausePoint() bool {
	inst.pauseMu.Lock()
	if !inst.paused {
		inst.pauseMu.Unlock()
		return true
	}
	unpause := inst.unpause
	inst.pauseMu.Unlock()
	inst.parked.Done()
	select {
	case <-unpause:
	case <-inst.ended:
	}
	select {
	case <-inst.ended:
		return false
	default:
		return true
	}
}

// close stops the virtio devices and releases KVM and guest memory; call
// only after wait (or on a failed build, before any vCPU ran).
func (inst *instance) close() error {
	var errs []error
	for _, c := range inst.vcpus {
		errs = append(errs, c.Close())
	}
	// Before the memory goes: device goroutines write into it.
	errs = append(errs, inst.closePCI())
	if inst.vm != nil {
		errs = append(errs, inst.vm.Close())
	}
	if inst.sys != nil {
		errs = append(errs, inst.sys.Close())
	}
	if inst.mem != nil {
		errs = append(errs, inst.mem.Close())
	}
	return errors.Join(errs...)
}

// threadID is the calling OS thread's id, for kicking it with a signal.
func threadID() int { return unix.Gettid() }
