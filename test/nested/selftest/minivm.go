// Package selftest proves the nested harness (test/nested) and the test
// guests (test/guests) on a real KVM: its tests run each guest on a tiny
// VMM made of package kvm and a few lines of setup, where /dev/kvm exists
// (inside the nested VM, or on a host with KVM).
//
// The VMM here is not wisp's: it is just enough to enter a guest in real
// mode, 32-bit protected mode (PVH) or long mode, and to serve COM1, the
// marker port, ACPI power-off and MMIO callbacks. wisp's own backend
// (vmm/kvmvm) is tested with the same guests by its own tests.
package selftest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/test/guests"
)

// Guest-physical layout of the mini VM.
const (
	memSize       = 16 << 20
	gdtAddr       = 0x500
	startInfoAddr = 0x6000 // PVH hvm_start_info
	zeroPageAddr  = 0x7000 // RSI for long-mode guests
	pml4Addr      = 0x20000
	pdptAddr      = 0x21000
	pdAddr        = 0x22000 // four page directories: 4 GiB in 2 MiB pages

	sel64Code = 0x08
	selData   = 0x10
	sel32Code = 0x18

	// maxExits bounds one vCPU's run loop, so a guest that loops on
	// exits ends the test instead of hanging it.
	maxExits = 1 << 20
)

// Exit is how a vCPU's run ended.
type Exit int

// Exits.
const (
	ExitPoweroff Exit = iota // ACPI S5 written to the PM1a control port
	ExitHalt                 // HLT exit (no in-kernel irqchip)
	ExitShutdown             // triple fault
	ExitEmulationFailure
)

func (e Exit) String() string {
	return [...]string{"poweroff", "halt", "shutdown", "emulation failure"}[e]
}

// Machine is a mini VM: memory at guest-physical 0 and a few vCPUs.
type Machine struct {
	sys   *kvm.System
	vm    *kvm.VM
	mem   []byte
	vcpus []*kvm.VCPU

	// MMIO is called for every MMIO exit; nil: writes are dropped and
	// reads return all ones.
	MMIO func(addr uint64, data []byte, isWrite bool)

	mu      sync.Mutex
	console bytes.Buffer
	markers []byte
}

// ErrNoKVM wraps the reason /dev/kvm cannot be used here.
var ErrNoKVM = errors.New("no usable /dev/kvm")

// New creates a VM with cpus vCPUs whose CPUID is KVM's supported list,
// with each vCPU's APIC ID in CPUID.1:EBX[31:24]. irqchip adds the
// in-kernel LAPICs (and makes HLT wait in the kernel).
func New(cpus int, irqchip bool) (*Machine, error) {
	sys, err := kvm.Open("/dev/kvm")
	if err != nil {
		if errors.Is(err, kvm.ErrNoDevice) || errors.Is(err, kvm.ErrPermission) {
			return nil, fmt.Errorf("%w: %w", ErrNoKVM, err)
		}
		return nil, err
	}
	m := &Machine{sys: sys}
	if err := m.init(cpus, irqchip); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Machine) init(cpus int, irqchip bool) error {
	var err error
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	// Intel needs these pages for real mode; they lie above our RAM.
	if err := m.vm.SetTSSAddr(0xfffbd000); err != nil {
		return err
	}
	m.mem, err = unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("mmap guest memory: %w", err)
	}
	if err := m.vm.SetUserMemoryRegion(0, 0, m.mem); err != nil {
		return err
	}
	if irqchip {
		if err := m.vm.CreateIRQChip(); err != nil {
			return err
		}
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	for id := range cpus {
		v, err := m.vm.CreateVCPU(id)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		c := supported.Clone()
		if e, ok := c.Find(1, 0); ok {
			e.EBX = e.EBX&0x00ffffff | uint32(id)<<24
		}
		if err := v.SetCPUID(c); err != nil {
			return err
		}
	}
	return nil
}

// Close frees the VM.
func (m *Machine) Close() {
	for _, v := range m.vcpus {
		v.Close()
	}
	if m.vm != nil {
		m.vm.Close()
	}
	if m.mem != nil {
		unix.Munmap(m.mem)
	}
	m.sys.Close()
}

// Console is what the guest wrote to COM1.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// Markers are the bytes the guest wrote to the marker port, in order.
func (m *Machine) Markers() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.markers...)
}

// Write copies data into guest memory at addr.
func (m *Machine) Write(addr uint64, data []byte) error {
	if addr > uint64(len(m.mem)) || uint64(len(data)) > uint64(len(m.mem))-addr {
		return fmt.Errorf("guest write %d bytes at %#x: outside %d bytes of RAM", len(data), addr, len(m.mem))
	}
	copy(m.mem[addr:], data)
	return nil
}

// LoadELF loads the PT_LOAD segments of an ELF image at their physical
// addresses and returns its entry and, if it has a Xen PVH note, the PVH
// entry (0 if none).
func (m *Machine) LoadELF(image []byte) (entry, pvhEntry uint64, err error) {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return 0, 0, fmt.Errorf("parse ELF: %w", err)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			if p.Filesz > p.Memsz {
				return 0, 0, fmt.Errorf("ELF segment at %#x: filesz > memsz", p.Paddr)
			}
			data := make([]byte, p.Filesz)
			if _, err := p.ReadAt(data, 0); err != nil {
				return 0, 0, fmt.Errorf("ELF segment at %#x: %w", p.Paddr, err)
			}
			if p.Paddr > memSize || p.Memsz > memSize-p.Paddr {
				return 0, 0, fmt.Errorf("ELF segment [%#x, +%#x) outside RAM", p.Paddr, p.Memsz)
			}
			clear(m.mem[p.Paddr : p.Paddr+p.Memsz])
			copy(m.mem[p.Paddr:], data)
		case elf.PT_NOTE:
			data := make([]byte, p.Filesz)
			if _, err := p.ReadAt(data, 0); err != nil {
				return 0, 0, fmt.Errorf("ELF note: %w", err)
			}
			if e, ok := xenPVHEntry(data); ok {
				pvhEntry = e
			}
		}
	}
	return f.Entry, pvhEntry, nil
}

// xenPVHEntry walks ELF notes for Xen's XEN_ELFNOTE_PHYS32_ENTRY (18).
func xenPVHEntry(notes []byte) (uint64, bool) {
	align := func(n uint32) int { return int((n + 3) &^ 3) }
	for len(notes) >= 12 {
		namesz := binary.LittleEndian.Uint32(notes[0:])
		descsz := binary.LittleEndian.Uint32(notes[4:])
		typ := binary.LittleEndian.Uint32(notes[8:])
		if namesz > 64 || descsz > 64 || 12+align(namesz)+align(descsz) > len(notes) {
			return 0, false
		}
		name := notes[12 : 12+namesz]
		desc := notes[12+align(namesz) : 12+align(namesz)+int(descsz)]
		if string(name) == "Xen\x00" && typ == 18 {
			switch descsz {
			case 4:
				return uint64(binary.LittleEndian.Uint32(desc)), true
			case 8:
				return binary.LittleEndian.Uint64(desc), true
			}
		}
		notes = notes[12+align(namesz)+align(descsz):]
	}
	return 0, false
}

func (m *Machine) writeGDT() {
	gdt := []uint64{
		0,
		0x00af9b000000ffff, // 0x08: 64-bit code
		0x00cf93000000ffff, // 0x10: flat data
		0x00cf9b000000ffff, // 0x18: flat 32-bit code
	}
	for i, d := range gdt {
		binary.LittleEndian.PutUint64(m.mem[gdtAddr+8*i:], d)
	}
}

func segment(sel uint16, typ uint8, long bool) kvm.Segment {
	s := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: sel, Type: typ, Present: 1, S: 1, G: 1, DB: 1}
	if long {
		s.L, s.DB = 1, 0
	}
	return s
}

// RealMode sets vCPU id to start at 0:ip in real mode.
func (m *Machine) RealMode(id int, ip uint64) error {
	v := m.vcpus[id]
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: ip, RFlags: 2})
}

// LongMode sets vCPU id to start at entry in 64-bit mode, with paging
// identity-mapping 4 GiB, a flat GDT and RSI = the (empty) zero page.
func (m *Machine) LongMode(id int, entry uint64) error {
	m.writeGDT()
	binary.LittleEndian.PutUint64(m.mem[pml4Addr:], pdptAddr|3)
	for i := range uint64(4) {
		binary.LittleEndian.PutUint64(m.mem[pdptAddr+8*i:], (pdAddr+i*0x1000)|3)
		for j := range uint64(512) {
			binary.LittleEndian.PutUint64(m.mem[pdAddr+i*0x1000+8*j:], (i*512+j)<<21|0x83)
		}
	}
	v := m.vcpus[id]
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	s.CS = segment(sel64Code, 0xb, true)
	s.DS, s.ES, s.FS, s.GS, s.SS = segment(selData, 3, false), segment(selData, 3, false),
		segment(selData, 3, false), segment(selData, 3, false), segment(selData, 3, false)
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: 4*8 - 1}
	s.CR3 = pml4Addr
	s.CR4 = 1 << 5                            // PAE
	s.CR0 = 1<<0 | 1<<1 | 1<<4 | 1<<5 | 1<<31 // PE MP ET NE PG
	s.EFER = 1<<8 | 1<<10                     // LME LMA
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: entry, RSI: zeroPageAddr, RFlags: 2})
}

// PVH sets vCPU id to start at entry in flat 32-bit protected mode with
// paging off and EBX = an hvm_start_info carrying only its magic.
func (m *Machine) PVH(id int, entry uint64) error {
	m.writeGDT()
	binary.LittleEndian.PutUint32(m.mem[startInfoAddr:], guests.PVHStartMagic)
	binary.LittleEndian.PutUint32(m.mem[startInfoAddr+4:], 1) // version
	v := m.vcpus[id]
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	s.CS = segment(sel32Code, 0xb, false)
	s.DS, s.ES, s.FS, s.GS, s.SS = segment(selData, 3, false), segment(selData, 3, false),
		segment(selData, 3, false), segment(selData, 3, false), segment(selData, 3, false)
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: 4*8 - 1}
	s.CR0 = 1<<0 | 1<<4 // PE ET
	s.CR4, s.EFER = 0, 0
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: entry, RBX: startInfoAddr, RFlags: 2})
}

// Result is how one vCPU's run ended.
type Result struct {
	Exit   Exit
	Detail string
}

// Run runs vCPU id on the calling goroutine's thread until it powers off,
// halts, shuts down or fails.
func (m *Machine) Run(id int) (Result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v := m.vcpus[id]
	for range maxExits {
		if err := v.Run(); err != nil {
			if errors.Is(err, kvm.ErrInterrupted) {
				continue
			}
			return Result{}, err
		}
		switch reason := v.ExitReason(); reason {
		case kvm.ExitIO:
			io, err := v.IO()
			if err != nil {
				return Result{}, err
			}
			if m.port(io) {
				return Result{Exit: ExitPoweroff}, nil
			}
		case kvm.ExitMMIO:
			mm, err := v.MMIO()
			if err != nil {
				return Result{}, err
			}
			if m.MMIO != nil {
				m.MMIO(mm.PhysAddr, mm.Data, mm.IsWrite)
			} else if !mm.IsWrite {
				for i := range mm.Data {
					mm.Data[i] = 0xff
				}
			}
		case kvm.ExitHLT:
			return Result{Exit: ExitHalt}, nil
		case kvm.ExitShutdown:
			return Result{Exit: ExitShutdown}, nil
		case kvm.ExitInternalError:
			ie, err := v.InternalError()
			if err != nil {
				return Result{}, err
			}
			detail := fmt.Sprintf("KVM internal error %v", ie.Suberror)
			if b, ok := ie.InstructionBytes(); ok {
				detail += fmt.Sprintf(", instruction % x", b)
			}
			if regs, err := v.Regs(); err == nil {
				detail += fmt.Sprintf(", rip %#x", regs.RIP)
			}
			return Result{Exit: ExitEmulationFailure, Detail: detail}, nil
		default:
			return Result{}, fmt.Errorf("vCPU %d: unexpected exit %v", id, reason)
		}
	}
	return Result{}, fmt.Errorf("vCPU %d: still running after %d exits", id, maxExits)
}

// port serves one port I/O exit and reports whether it powered off.
func (m *Machine) port(io kvm.IOExit) (poweroff bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if io.Direction == kvm.IOIn {
		for i := range io.Data {
			io.Data[i] = 0xff
		}
		switch {
		case io.Port == guests.COM1Port+5: // LSR: transmitter empty
			for i := range io.Data {
				io.Data[i] = 0x60
			}
		case io.Port >= guests.COM1Port && io.Port < guests.COM1Port+8:
			clear(io.Data)
		}
		return false
	}
	switch io.Port {
	case guests.COM1Port:
		m.console.Write(io.Data)
	case guests.MarkerPort:
		m.markers = append(m.markers, io.Data...)
	case guests.PowerOffPort:
		// SLP_EN with SLP_TYP 5 (S5) is power-off.
		if v := binary.LittleEndian.Uint16(io.Data); io.Size == 2 && v&(1<<13) != 0 && v>>10&7 == 5 {
			return true
		}
	}
	return false
}
