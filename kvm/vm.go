package kvm

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine. Its methods are safe for concurrent use
// (devices may raise interrupts from their own goroutines); Close waits for
// calls in progress and must come after every vCPU has stopped running.
type VM struct {
	mu       sync.RWMutex
	fd       int // -1 once closed
	mmapSize int // size of each vCPU's kvm_run mapping
}

// use runs f with the VM fd, which Close cannot close meanwhile.
func (vm *VM) use(f func(fd int) error) error {
	vm.mu.RLock()
	defer vm.mu.RUnlock()
	if vm.fd < 0 {
		return fmt.Errorf("VM: %w", ErrClosed)
	}
	return f(vm.fd)
}

// Fd is the VM's file descriptor, or -1 after Close.
func (vm *VM) Fd() int {
	vm.mu.RLock()
	defer vm.mu.RUnlock()
	return vm.fd
}

// Close closes the VM fd. The kernel frees the VM once its vCPU fds are
// closed too.
func (vm *VM) Close() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	if err != nil {
		return fmt.Errorf("close VM fd: %w", err)
	}
	return nil
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM, which answers for this
// VM (for example CapMaxVCPUs) where the System's answer is host-wide.
func (vm *VM) CheckExtension(c Cap) (int, error) {
	var n int
	err := vm.use(func(fd int) (err error) {
		n, err = ioctl(fd, reqCheckExtension, uintptr(c))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%v: %w", c, err)
	}
	return n, nil
}

// MemoryFlags are flags of a memory slot (KVM_MEM_*).
type MemoryFlags uint32

// Memory slot flags.
const (
	MemLogDirtyPages MemoryFlags = 1 << 0 // track writes for KVM_GET_DIRTY_LOG
	MemReadonly      MemoryFlags = 1 << 1 // guest writes exit as MMIO (CapReadonlyMem)
)

// SetUserMemoryRegion maps host at guest-physical address gpa as memory
// slot slot. An empty host deletes the slot. host must be page aligned
// memory that stays mapped (an mmap, not the Go heap) until the slot is
// deleted or the VM closed: the guest keeps using it after this returns.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, host []byte) error {
	return vm.SetUserMemoryRegionFlags(slot, 0, gpa, host)
}

// SetUserMemoryRegionFlags is SetUserMemoryRegion with slot flags.
func (vm *VM) SetUserMemoryRegionFlags(slot uint32, flags MemoryFlags, gpa uint64, host []byte) error {
	r := kvmUserspaceMemoryRegion{
		Slot:          slot,
		Flags:         uint32(flags),
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(host)),
		UserspaceAddr: sliceAddr(host),
	}
	err := vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqSetUserMemoryRegion, &r)
		return err
	})
	if err != nil {
		return fmt.Errorf("slot %d at guest %#x, %#x bytes: %w", slot, gpa, len(host), err)
	}
	return nil
}

// SetTSSAddr places the three pages KVM needs for real-mode emulation on
// Intel (KVM_SET_TSS_ADDR) at guest-physical addr; they must not overlap
// RAM or MMIO the guest uses.
func (vm *VM) SetTSSAddr(addr uint64) error {
	return vm.use(func(fd int) error {
		_, err := ioctl(fd, reqSetTSSAddr, uintptr(addr))
		return err
	})
}

// SetIdentityMapAddr places the one page KVM needs for the EPT identity
// map on Intel (KVM_SET_IDENTITY_MAP_ADDR) at guest-physical addr.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	return vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqSetIdentityMapAddr, &addr)
		return err
	})
}

// CreateIRQChip creates the in-kernel PICs, IOAPIC and local APICs
// (KVM_CREATE_IRQCHIP). Call it before creating vCPUs. With it, HLT no
// longer exits to user space: the kernel waits for the interrupt.
func (vm *VM) CreateIRQChip() error {
	return vm.use(func(fd int) error {
		_, err := ioctl(fd, reqCreateIRQChip, 0)
		return err
	})
}

// PITSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes the in-kernel PIT answer
// port 0x61 reads itself.
const PITSpeakerDummy = 1

// CreatePIT2 creates the in-kernel i8254 timer (KVM_CREATE_PIT2) with
// flags (0 or PITSpeakerDummy). It needs the irqchip.
func (vm *VM) CreatePIT2(flags uint32) error {
	cfg := kvmPITConfig{Flags: flags}
	return vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqCreatePIT2, &cfg)
		return err
	})
}

// IRQLine sets the level of the in-kernel irqchip's input irq (a GSI:
// 0-15 reach the PICs and IOAPIC, 16-23 the IOAPIC). An edge-triggered
// interrupt is IRQLine(irq, true) followed by IRQLine(irq, false).
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := kvmIRQLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	err := vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqIRQLine, &l)
		return err
	})
	if err != nil {
		return fmt.Errorf("irq %d: %w", irq, err)
	}
	return nil
}

// KVM_IRQFD flags.
const (
	irqfdFlagDeassign = 1 << 0
	irqfdFlagResample = 1 << 1
)

// IRQFD makes a write to the eventfd fd inject an edge on gsi (KVM_IRQFD).
func (vm *VM) IRQFD(fd int, gsi uint32) error {
	return vm.irqfd(kvmIRQFD{FD: uint32(fd), GSI: gsi})
}

// IRQFDResample is IRQFD for a level-triggered gsi: the line stays asserted
// until the guest acknowledges it, then KVM lowers it and signals the
// eventfd resampleFD so the device can assert it again if still pending.
func (vm *VM) IRQFDResample(fd, resampleFD int, gsi uint32) error {
	return vm.irqfd(kvmIRQFD{FD: uint32(fd), GSI: gsi, Flags: irqfdFlagResample, ResampleFD: uint32(resampleFD)})
}

// IRQFDDeassign undoes IRQFD or IRQFDResample for fd and gsi.
func (vm *VM) IRQFDDeassign(fd int, gsi uint32) error {
	return vm.irqfd(kvmIRQFD{FD: uint32(fd), GSI: gsi, Flags: irqfdFlagDeassign})
}

func (vm *VM) irqfd(arg kvmIRQFD) error {
	if int32(arg.FD) < 0 {
		return fmt.Errorf("%v: eventfd %d: %w", reqIRQFD, int32(arg.FD), ErrInvalidArgument)
	}
	err := vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqIRQFD, &arg)
		return err
	})
	if err != nil {
		return fmt.Errorf("eventfd %d, gsi %d: %w", arg.FD, arg.GSI, err)
	}
	return nil
}

// KVM_IOEVENTFD flags.
const (
	ioeventfdFlagDatamatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// ioeventfdArg builds struct kvm_ioeventfd, rejecting what the kernel
// would reject with a bare EINVAL.
func ioeventfdArg(fd int, addr uint64, length uint32, isPIO bool, datamatch *uint64, deassign bool) (kvmIOEventFD, error) {
	switch length {
	case 0, 1, 2, 4, 8:
	default:
		return kvmIOEventFD{}, fmt.Errorf("%v: length %d (want 0, 1, 2, 4 or 8): %w", reqIOEventFD, length, ErrInvalidArgument)
	}
	if fd < 0 {
		return kvmIOEventFD{}, fmt.Errorf("%v: eventfd %d: %w", reqIOEventFD, fd, ErrInvalidArgument)
	}
	if datamatch != nil && length == 0 {
		return kvmIOEventFD{}, fmt.Errorf("%v: datamatch needs a length: %w", reqIOEventFD, ErrInvalidArgument)
	}
	a := kvmIOEventFD{Addr: addr, Len: length, FD: int32(fd)}
	if isPIO {
		a.Flags |= ioeventfdFlagPIO
	}
	if datamatch != nil {
		a.Flags |= ioeventfdFlagDatamatch
		a.Datamatch = *datamatch
	}
	if deassign {
		a.Flags |= ioeventfdFlagDeassign
	}
	return a, nil
}

// IOEventFD makes a guest write of length bytes (0: any length, with
// CapIOEventFDAnyLength) to addr (a port if isPIO, else guest-physical)
// signal the eventfd fd instead of exiting to user space (KVM_IOEVENTFD).
// With datamatch, only writes of that value do.
func (vm *VM) IOEventFD(fd int, addr uint64, length uint32, isPIO bool, datamatch *uint64) error {
	return vm.ioeventfd(fd, addr, length, isPIO, datamatch, false)
}

// IOEventFDDeassign undoes IOEventFD; the arguments must be the same.
func (vm *VM) IOEventFDDeassign(fd int, addr uint64, length uint32, isPIO bool, datamatch *uint64) error {
	return vm.ioeventfd(fd, addr, length, isPIO, datamatch, true)
}

func (vm *VM) ioeventfd(fd int, addr uint64, length uint32, isPIO bool, datamatch *uint64, deassign bool) error {
	a, err := ioeventfdArg(fd, addr, length, isPIO, datamatch, deassign)
	if err != nil {
		return err
	}
	err = vm.use(func(vmfd int) error {
		_, err := ioctlPtr(vmfd, reqIOEventFD, &a)
		return err
	})
	if err != nil {
		return fmt.Errorf("eventfd %d at %#x (%d bytes, pio %v): %w", fd, addr, length, isPIO, err)
	}
	return nil
}

// RoutingKind is the type of a GSI route.
type RoutingKind uint32

// GSI route kinds (KVM_IRQ_ROUTING_*).
const (
	RoutingIRQChip RoutingKind = 1 // to a pin of the PIC or IOAPIC
	RoutingMSI     RoutingKind = 2 // to an MSI message
)

// In-kernel irqchips a route can target (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// RoutingEntry is one GSI route: where an interrupt on GSI goes. Build it
// with IRQChipRoute or MSIRoute.
type RoutingEntry struct {
	GSI  uint32
	Kind RoutingKind

	// RoutingIRQChip.
	IRQChip uint32 // IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC
	Pin     uint32

	// RoutingMSI.
	MSIAddress uint64
	MSIData    uint32
}

// IRQChipRoute routes gsi to pin of an in-kernel irqchip.
func IRQChipRoute(gsi, chip, pin uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Kind: RoutingIRQChip, IRQChip: chip, Pin: pin}
}

// MSIRoute routes gsi to the MSI message (address, data).
func MSIRoute(gsi uint32, address uint64, data uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Kind: RoutingMSI, MSIAddress: address, MSIData: data}
}

// encode builds struct kvm_irq_routing_entry.
func (r RoutingEntry) encode() (kvmIRQRoutingEntry, error) {
	e := kvmIRQRoutingEntry{GSI: r.GSI, Type: uint32(r.Kind)}
	switch r.Kind {
	case RoutingIRQChip:
		e.U[0], e.U[1] = r.IRQChip, r.Pin
	case RoutingMSI:
		e.U[0], e.U[1], e.U[2] = uint32(r.MSIAddress), uint32(r.MSIAddress>>32), r.MSIData
	default:
		return kvmIRQRoutingEntry{}, fmt.Errorf("GSI %d: route kind %d: %w", r.GSI, r.Kind, ErrInvalidArgument)
	}
	return e, nil
}

// SetGSIRouting replaces the VM's whole GSI routing table with routes
// (KVM_SET_GSI_ROUTING). Note that the table CreateIRQChip installs (GSI
// 0-15 to the PICs and IOAPIC, 16-23 to the IOAPIC) is replaced too, so
// include those routes to keep them.
func (vm *VM) SetGSIRouting(routes []RoutingEntry) error {
	hdr, entries := flexBuffer[kvmIRQRoutingHeader, kvmIRQRoutingEntry](len(routes))
	hdr.NR = uint32(len(routes))
	for i, r := range routes {
		e, err := r.encode()
		if err != nil {
			return fmt.Errorf("%v: %w", reqSetGSIRouting, err)
		}
		entries[i] = e
	}
	return vm.use(func(fd int) error {
		_, err := ioctlPtr(fd, reqSetGSIRouting, hdr)
		return err
	})
}

// SignalMSI injects the MSI message (address, data) directly
// (KVM_SIGNAL_MSI). delivered is false when the guest has the interrupt
// blocked (masked in the LAPIC, no destination).
func (vm *VM) SignalMSI(address uint64, data uint32) (delivered bool, err error) {
	m := kvmMSI{AddressLo: uint32(address), AddressHi: uint32(address >> 32), Data: data}
	var n int
	err = vm.use(func(fd int) (err error) {
		n, err = ioctlPtr(fd, reqSignalMSI, &m)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("MSI %#x/%#x: %w", address, data, err)
	}
	return n > 0, nil
}

// CreateVCPU creates vCPU id (its APIC id; KVM_CREATE_VCPU) and maps its
// kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	if id < 0 {
		return nil, fmt.Errorf("%v: id %d: %w", reqCreateVCPU, id, ErrInvalidArgument)
	}
	var v *VCPU
	err := vm.use(func(fd int) error {
		vfd, err := ioctl(fd, reqCreateVCPU, uintptr(id))
		if err != nil {
			return err
		}
		run, err := unix.Mmap(vfd, 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			unix.Close(vfd)
			return fmt.Errorf("mmap kvm_run (%d bytes): %w", vm.mmapSize, err)
		}
		v = &VCPU{fd: vfd, id: id, run: runPage(run)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vCPU %d: %w", id, err)
	}
	return v, nil
}
