package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Tests in this file need a working /dev/kvm and skip loudly without one.
// The guests are real-mode code assembled at test time with GNU as from
// the sources below; each is loaded at guest-physical 0x1000 and runs with
// every segment at 0x100:0 (base 0x1000), so the offsets as computes for
// labels are the addresses the guest uses.

const (
	guestMemSize = 64 << 10 // one slot at guest-physical 0
	guestLoad    = 0x1000
	guestSeg     = guestLoad >> 4
)

// ioGuest: byte and word OUTs, a rep OUTSB and an IN whose value it echoes.
const ioGuest = `
.code16
	mov $0x3f8, %dx
	mov $'H', %al
	out %al, %dx
	mov $'i', %al
	out %al, %dx
	mov $0x1234, %ax
	out %ax, $0x80
	mov $msg, %si
	mov $(msg_end - msg), %cx
	cld
	rep outsb
	in $0x81, %al
	out %al, $0x82
	hlt
msg:
	.ascii "wisp"
msg_end:
`

// mmioGuest writes and reads outside the only memory slot.
const mmioGuest = `
.code16
	mov $0x2000, %ax
	mov %ax, %ds
	movw $0xbeef, 0x10
	movl $0xcafef00d, 0x20
	mov 0x30, %ax
	out %ax, $0x80
	hlt
`

// tripleFaultGuest loads an empty IDT and raises #UD: #UD, then #GP, then
// #DF find no vector, and the CPU shuts down.
const tripleFaultGuest = `
.code16
	lidt idt
	ud2
idt:
	.word 0
	.long 0
`

// ioeventfdGuest writes to ports that have ioeventfds; only the writes
// that do not match one exit.
const ioeventfdGuest = `
.code16
	mov $0x41, %al
	out %al, $0x90
	out %al, $0x92
	mov $0x42, %al
	out %al, $0x92
	out %al, $0x93
	hlt
`

// cpuidGuest reports EBX of CPUID leaf 0x40000000 on port 0x80.
const cpuidGuest = `
.code16
	mov $0x40000000, %eax
	xor %ecx, %ecx
	cpuid
	mov %ebx, %eax
	out %eax, $0x80
	hlt
`

// assemble turns real-mode source into a flat binary with as and objcopy.
func assemble(t *testing.T, src string) []byte {
	t.Helper()
	as, err := exec.LookPath("as")
	if err != nil {
		t.Skipf("SKIPPING: GNU as not found (%v); install Debian package binutils", err)
	}
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skipf("SKIPPING: objcopy not found (%v); install Debian package binutils", err)
	}
	dir := t.TempDir()
	s, o, bin := filepath.Join(dir, "guest.s"), filepath.Join(dir, "guest.o"), filepath.Join(dir, "guest.bin")
	require.NoError(t, os.WriteFile(s, []byte(src), 0o644))
	out, err := exec.Command(as, "--32", "-o", o, s).CombinedOutput()
	require.NoError(t, err, "as: %s", out)
	out, err = exec.Command(objcopy, "-O", "binary", "-j", ".text", o, bin).CombinedOutput()
	require.NoError(t, err, "objcopy: %s", out)
	code, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NotEmpty(t, code)
	return code
}

// TestGuestSourcesAssemble runs without KVM, so a broken guest source shows
// up on every machine and not only where KVM tests run.
func TestGuestSourcesAssemble(t *testing.T) {
	for name, src := range map[string]string{
		"io": ioGuest, "mmio": mmioGuest, "triple fault": tripleFaultGuest,
		"ioeventfd": ioeventfdGuest, "cpuid": cpuidGuest,
	} {
		t.Run(name, func(t *testing.T) {
			code := assemble(t, src)
			assert.Less(t, len(code), guestMemSize-guestLoad)
		})
	}
	// The labels must come out as offsets from the start of the code.
	code := assemble(t, ioGuest)
	msg := strings.Index(string(code), "wisp")
	require.Positive(t, msg)
	assert.Contains(t, string(code), string([]byte{0xbe, byte(msg), byte(msg >> 8)}), "mov $msg, %%si")
}

func openKVM(t *testing.T) *System {
	t.Helper()
	s, err := Open("/dev/kvm")
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

func createVM(t *testing.T, s *System) *VM {
	t.Helper()
	vm, err := s.CreateVM()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, vm.Close()) })
	return vm
}

func createVCPU(t *testing.T, vm *VM, id int) *VCPU {
	t.Helper()
	v, err := vm.CreateVCPU(id)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, v.Close()) })
	return v
}

// anonMemory is page-aligned host memory outside the Go heap.
func anonMemory(t *testing.T, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, unix.Munmap(mem)) })
	return mem
}

type realModeGuest struct {
	sys  *System
	vm   *VM
	vcpu *VCPU
	mem  []byte
}

// newRealModeGuest builds a VM with 64 KiB of RAM and one vCPU in real mode
// at 0x100:0, where it loads code.
func newRealModeGuest(t *testing.T, code []byte) *realModeGuest {
	t.Helper()
	s := openKVM(t)
	vm := createVM(t, s)
	// Intel needs these pages for real mode without unrestricted guest;
	// AMD ignores them. Above the RAM, below 4 GiB, as QEMU places them.
	require.NoError(t, vm.SetIdentityMapAddr(0xfeffc000))
	require.NoError(t, vm.SetTSSAddr(0xfeffd000))

	mem := anonMemory(t, guestMemSize)
	copy(mem[guestLoad:], code)
	require.NoError(t, vm.SetUserMemoryRegion(0, 0, mem))

	v := createVCPU(t, vm, 0)
	cpuid, err := s.SupportedCPUID()
	require.NoError(t, err)
	require.NoError(t, v.SetCPUID(cpuid))

	sregs, err := v.Sregs()
	require.NoError(t, err)
	for _, seg := range []*Segment{&sregs.CS, &sregs.DS, &sregs.ES, &sregs.FS, &sregs.GS, &sregs.SS} {
		seg.Selector = guestSeg
		seg.Base = guestLoad
	}
	require.NoError(t, v.SetSregs(sregs))
	require.NoError(t, v.SetRegs(Regs{RIP: 0, RSP: 0xe000, RFlags: 2}))
	return &realModeGuest{sys: s, vm: vm, vcpu: v, mem: mem}
}

// step runs the vCPU to its next exit, retrying when a signal (the Go
// runtime's preemption, for one) interrupts KVM_RUN.
func step(t *testing.T, v *VCPU) ExitReason {
	t.Helper()
	for {
		err := v.Run()
		if errors.Is(err, ErrInterrupted) {
			continue
		}
		require.NoError(t, err)
		return v.ExitReason()
	}
}

// describe says where the guest is and why it stopped, for failure messages.
func describe(v *VCPU) string {
	var b strings.Builder
	fmt.Fprintf(&b, "exit %v", v.ExitReason())
	if r, err := v.Regs(); err == nil {
		fmt.Fprintf(&b, " rip=%#x rax=%#x", r.RIP, r.RAX)
	}
	switch v.ExitReason() {
	case ExitIO:
		e, err := v.IO()
		fmt.Fprintf(&b, " io=%+v err=%v", e, err)
	case ExitMMIO:
		e, err := v.MMIO()
		fmt.Fprintf(&b, " mmio=%+v err=%v", e, err)
	case ExitInternalError:
		e, err := v.InternalError()
		insn, _ := e.InstructionBytes()
		fmt.Fprintf(&b, " internal=%v data=%#x insn=% x err=%v", e.Suberror, e.Data, insn, err)
	case ExitFailEntry:
		e, err := v.FailEntry()
		fmt.Fprintf(&b, " fail_entry=%#x err=%v", e.HardwareEntryFailureReason, err)
	}
	return b.String()
}

const maxExits = 64 // bounds every exit loop; the guests need far fewer

func TestKVMSystem(t *testing.T) {
	s := openKVM(t)
	assert.Equal(t, 12, s.APIVersion())

	n, err := s.CheckExtension(CapUserMemory)
	require.NoError(t, err)
	assert.Positive(t, n)

	size, err := s.VCPUMmapSize()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, size, runMinSize)

	msrs, err := s.MSRIndexList()
	require.NoError(t, err)
	assert.Contains(t, msrs, uint32(0x174), "IA32_SYSENTER_CS is saved by every KVM")

	cpuid, err := s.SupportedCPUID()
	require.NoError(t, err)
	leaf0, ok := cpuid.Find(0, 0)
	require.True(t, ok, "leaf 0 in %d entries", len(cpuid.Entries))
	assert.Positive(t, leaf0.EAX, "max basic leaf")

	vm := createVM(t, s)
	n, err = vm.CheckExtension(CapMaxVCPUs)
	require.NoError(t, err)
	assert.Positive(t, n)
}

func TestKVMCloseIsIdempotent(t *testing.T) {
	s := openKVM(t)
	vm, err := s.CreateVM()
	require.NoError(t, err)
	v, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	require.NoError(t, v.Close())
	require.NoError(t, v.Close())
	assert.ErrorIs(t, v.Run(), ErrClosed)
	assert.Equal(t, ExitUnknown, v.ExitReason())
	require.NoError(t, vm.Close())
	require.NoError(t, vm.Close())
	assert.ErrorIs(t, vm.IRQLine(1, true), ErrClosed)
	_, err = vm.CreateVCPU(1)
	assert.ErrorIs(t, err, ErrClosed)
}

func TestKVMErrorsCarryIoctlAndErrno(t *testing.T) {
	s := openKVM(t)
	vm := createVM(t, s)
	createVCPU(t, vm, 0)

	_, err := vm.CreateVCPU(0)
	require.ErrorIs(t, err, unix.EEXIST)
	assert.Contains(t, err.Error(), "KVM_CREATE_VCPU")

	// No irqchip yet: the kernel refuses interrupt lines.
	err = vm.IRQLine(4, true)
	require.ErrorIs(t, err, unix.ENXIO)
	assert.Contains(t, err.Error(), "KVM_IRQ_LINE")
}

func TestKVMPortIO(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := newRealModeGuest(t, assemble(t, ioGuest))

	var serial, port80, port82 []byte
	sawIn := false
	reason := ExitUnknown
	for range maxExits {
		reason = step(t, g.vcpu)
		if reason != ExitIO {
			break
		}
		e, err := g.vcpu.IO()
		require.NoError(t, err)
		require.Len(t, e.Data, int(e.Size)*int(e.Count))
		switch e.Port {
		case 0x3f8:
			require.Equal(t, IOOut, e.Direction)
			require.Equal(t, uint8(1), e.Size)
			serial = append(serial, e.Data...)
		case 0x80:
			require.Equal(t, IOOut, e.Direction)
			require.Equal(t, uint8(2), e.Size)
			port80 = append(port80, e.Data...)
		case 0x81:
			require.Equal(t, IOIn, e.Direction)
			require.Equal(t, uint8(1), e.Size)
			e.Data[0] = 0x5a // what the guest's IN reads
			sawIn = true
		case 0x82:
			require.Equal(t, IOOut, e.Direction)
			port82 = append(port82, e.Data...)
		default:
			t.Fatalf("unexpected port: %s", describe(g.vcpu))
		}
	}
	require.Equal(t, ExitHLT, reason, describe(g.vcpu))
	assert.Equal(t, "Hiwisp", string(serial), "byte OUTs then rep OUTSB")
	assert.Equal(t, []byte{0x34, 0x12}, port80, "word OUT")
	assert.True(t, sawIn)
	assert.Equal(t, []byte{0x5a}, port82, "the guest echoes what IN read")

	regs, err := g.vcpu.Regs()
	require.NoError(t, err)
	assert.Equal(t, uint64(0x5a), regs.RAX&0xff)
	assert.Zero(t, regs.RCX&0xffff, "rep OUTSB ran to the end")
}

func TestKVMMMIO(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := newRealModeGuest(t, assemble(t, mmioGuest))

	type access struct {
		addr  uint64
		data  []byte
		write bool
	}
	var got []access
	var port80 []byte
	reason := ExitUnknown
	for range maxExits {
		reason = step(t, g.vcpu)
		if reason == ExitIO {
			e, err := g.vcpu.IO()
			require.NoError(t, err)
			require.Equal(t, uint16(0x80), e.Port, describe(g.vcpu))
			port80 = append(port80, e.Data...)
			continue
		}
		if reason != ExitMMIO {
			break
		}
		e, err := g.vcpu.MMIO()
		require.NoError(t, err)
		if !e.IsWrite {
			binary.LittleEndian.PutUint16(e.Data, 0x4321) // what the guest reads
		}
		got = append(got, access{e.PhysAddr, append([]byte(nil), e.Data...), e.IsWrite})
	}
	require.Equal(t, ExitHLT, reason, describe(g.vcpu))
	assert.Equal(t, []access{
		{0x20010, []byte{0xef, 0xbe}, true},
		{0x20020, []byte{0x0d, 0xf0, 0xfe, 0xca}, true},
		{0x20030, []byte{0x21, 0x43}, false},
	}, got)
	assert.Equal(t, []byte{0x21, 0x43}, port80, "the guest echoes what the MMIO read returned")
}

func TestKVMTripleFaultShutsDown(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := newRealModeGuest(t, assemble(t, tripleFaultGuest))
	reason := step(t, g.vcpu)
	assert.Equal(t, ExitShutdown, reason, describe(g.vcpu))
}

func TestKVMIOEventFD(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := newRealModeGuest(t, assemble(t, ioeventfdGuest))

	anyValue, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(anyValue)
	matched, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(matched)
	want := uint64(0x42)
	require.NoError(t, g.vm.IOEventFD(anyValue, 0x90, 1, true, nil))
	require.NoError(t, g.vm.IOEventFD(matched, 0x92, 1, true, &want))

	var exits []string
	reason := ExitUnknown
	for range maxExits {
		reason = step(t, g.vcpu)
		if reason != ExitIO {
			break
		}
		e, err := g.vcpu.IO()
		require.NoError(t, err)
		exits = append(exits, fmt.Sprintf("%#x=%#x", e.Port, e.Data))
	}
	require.Equal(t, ExitHLT, reason, describe(g.vcpu))
	assert.Equal(t, []string{"0x92=0x41", "0x93=0x42"}, exits, "only writes without a matching ioeventfd exit")
	assert.Equal(t, uint64(1), readEventfd(t, anyValue))
	assert.Equal(t, uint64(1), readEventfd(t, matched))

	require.NoError(t, g.vm.IOEventFDDeassign(anyValue, 0x90, 1, true, nil))
	require.NoError(t, g.vm.IOEventFDDeassign(matched, 0x92, 1, true, &want))
	assert.ErrorIs(t, g.vm.IOEventFDDeassign(matched, 0x92, 1, true, &want), unix.ENOENT)
}

func readEventfd(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	require.NoError(t, err)
	require.Equal(t, 8, n)
	return binary.LittleEndian.Uint64(b[:])
}

func TestKVMSetCPUIDReachesTheGuest(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := newRealModeGuest(t, assemble(t, cpuidGuest))

	cpuid, err := g.sys.SupportedCPUID()
	require.NoError(t, err)
	const wisp = 0x70736977 // "wisp"
	cpuid.Set(CPUIDEntry{Function: 0x40000000, EAX: 0x40000000, EBX: wisp})
	require.NoError(t, g.vcpu.SetCPUID(cpuid))

	back, err := g.vcpu.CPUID()
	require.NoError(t, err)
	assert.True(t, back.Has(0x40000000, 0, EBX, wisp), "KVM_GET_CPUID2 returns what was set")

	require.Equal(t, ExitIO, step(t, g.vcpu), describe(g.vcpu))
	e, err := g.vcpu.IO()
	require.NoError(t, err)
	assert.Equal(t, uint8(4), e.Size)
	assert.Equal(t, "wisp", string(e.Data))
	assert.Equal(t, ExitHLT, step(t, g.vcpu), describe(g.vcpu))
}

func TestKVMImmediateExit(t *testing.T) {
	s := openKVM(t)
	if n, err := s.CheckExtension(CapImmediateExit); err != nil || n == 0 {
		t.Skipf("SKIPPING: KVM_CAP_IMMEDIATE_EXIT not supported (%d, %v)", n, err)
	}
	g := newRealModeGuest(t, assemble(t, ioGuest))
	g.vcpu.SetImmediateExit(true)
	err := g.vcpu.Run()
	require.ErrorIs(t, err, ErrInterrupted)
	assert.ErrorIs(t, err, unix.EINTR)
	g.vcpu.SetImmediateExit(false)
	assert.Equal(t, ExitIO, step(t, g.vcpu), "runs normally once cleared")
}

func TestKVMRegisterRoundTrips(t *testing.T) {
	g := newRealModeGuest(t, assemble(t, ioGuest))
	v := g.vcpu

	regs := Regs{RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 7, RBP: 8, R8: 9, R15: 10, RIP: 0x100, RFlags: 0x202}
	require.NoError(t, v.SetRegs(regs))
	back, err := v.Regs()
	require.NoError(t, err)
	assert.Equal(t, regs, back)

	sregs, err := v.Sregs()
	require.NoError(t, err)
	sregs.GDT = DTable{Base: 0x5000, Limit: 0x17}
	sregs.IDT = DTable{Base: 0x6000, Limit: 0x3ff}
	require.NoError(t, v.SetSregs(sregs))
	sback, err := v.Sregs()
	require.NoError(t, err)
	assert.Equal(t, sregs.GDT, sback.GDT)
	assert.Equal(t, sregs.IDT, sback.IDT)
	assert.Equal(t, uint64(guestLoad), sback.CS.Base)
	assert.Equal(t, uint16(guestSeg), sback.CS.Selector)

	fpu, err := v.FPU()
	require.NoError(t, err)
	fpu.FCW = 0x27f
	fpu.FPR[1][0] = 0x55
	fpu.XMM[3][0] = 0xaa
	fpu.LastIP = 0x1234
	require.NoError(t, v.SetFPU(fpu))
	fback, err := v.FPU()
	require.NoError(t, err)
	assert.Equal(t, uint16(0x27f), fback.FCW)
	assert.Equal(t, byte(0x55), fback.FPR[1][0])
	assert.Equal(t, byte(0xaa), fback.XMM[3][0])
	assert.Equal(t, uint64(0x1234), fback.LastIP)

	require.NoError(t, v.SetMSRs([]MSR{{Index: 0x174, Data: 0x10}})) // IA32_SYSENTER_CS
	msrs, err := v.MSRs([]uint32{0x174})
	require.NoError(t, err)
	require.Len(t, msrs, 1)
	assert.Equal(t, uint64(0x10), msrs[0].Data)

	if ignored, _ := os.ReadFile("/sys/module/kvm/parameters/ignore_msrs"); strings.TrimSpace(string(ignored)) == "Y" {
		t.Log("kvm.ignore_msrs=Y: not checking that an unknown MSR is rejected")
	} else {
		_, err = v.MSRs([]uint32{0x174, 0xdeadbeef})
		assert.ErrorIs(t, err, ErrMSRRejected)
		assert.Contains(t, err.Error(), "0xdeadbeef")
	}

	// Paging is off in real mode: linear addresses are physical.
	gpa, valid, err := v.TranslateAddr(0x1234)
	require.NoError(t, err)
	assert.True(t, valid)
	assert.Equal(t, uint64(0x1234), gpa)
}

func TestKVMIRQChip(t *testing.T) {
	s := openKVM(t)
	vm := createVM(t, s)
	require.NoError(t, vm.CreateIRQChip())
	require.NoError(t, vm.CreatePIT2(PITSpeakerDummy))
	v := createVCPU(t, vm, 0)

	lapic, err := v.LAPIC()
	require.NoError(t, err)
	version, err := lapic.Register(0x30)
	require.NoError(t, err)
	assert.NotZero(t, version&0xff, "APIC version register")
	require.NoError(t, lapic.SetRegister(0x350, 0x700)) // LVT LINT0: ExtINT
	require.NoError(t, v.SetLAPIC(lapic))
	lapic, err = v.LAPIC()
	require.NoError(t, err)
	lint0, err := lapic.Register(0x350)
	require.NoError(t, err)
	assert.Equal(t, uint32(0x700), lint0)

	require.NoError(t, vm.IRQLine(4, true))
	require.NoError(t, vm.IRQLine(4, false))

	// The default routes plus one MSI route on GSI 24.
	var routes []RoutingEntry
	for gsi := uint32(0); gsi < 24; gsi++ {
		if gsi < 16 && gsi != 2 {
			chip, pin := uint32(IRQChipPICMaster), gsi
			if gsi >= 8 {
				chip, pin = IRQChipPICSlave, gsi-8
			}
			routes = append(routes, IRQChipRoute(gsi, chip, pin))
		}
		pin := gsi
		if gsi == 0 {
			pin = 2 // the PIT's IRQ 0 reaches IOAPIC pin 2
		}
		routes = append(routes, IRQChipRoute(gsi, IRQChipIOAPIC, pin))
	}
	routes = append(routes, MSIRoute(24, 0xfee00000, 0x4030))
	require.NoError(t, vm.SetGSIRouting(routes))

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(efd)
	require.NoError(t, vm.IRQFD(efd, 24))
	require.NoError(t, vm.IRQFDDeassign(efd, 24))
	require.NoError(t, vm.IRQFD(efd, 5))
	require.NoError(t, vm.IRQFDDeassign(efd, 5))

	_, err = vm.SignalMSI(0xfee00000, 0x4030)
	require.NoError(t, err)
}
