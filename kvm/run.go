package kvm

import (
	"encoding/binary"
	"fmt"
)

// Offsets into struct kvm_run on x86-64 (no s390 fields), checked against
// the C header by abi_test.go. The exit structs all start at the union.
const (
	runRequestInterruptWindow     = 0  // u8, in
	runImmediateExit              = 1  // u8, in
	runExitReason                 = 8  // u32
	runReadyForInterruptInjection = 12 // u8
	runIFFlag                     = 13 // u8
	runCR8                        = 16 // u64
	runAPICBase                   = 24 // u64
	runExit                       = 32 // start of the exit union
	runExitSize                   = 256

	// io
	runIODirection  = runExit + 0 // u8
	runIOSize       = runExit + 1 // u8
	runIOPort       = runExit + 2 // u16
	runIOCount      = runExit + 4 // u32
	runIODataOffset = runExit + 8 // u64, from the start of kvm_run

	// mmio
	runMMIOPhysAddr = runExit + 0  // u64
	runMMIOData     = runExit + 8  // u8[8]
	runMMIOLen      = runExit + 16 // u32
	runMMIOIsWrite  = runExit + 20 // u8

	// fail_entry
	runFailEntryReason = runExit + 0 // u64
	runFailEntryCPU    = runExit + 8 // u32

	// debug.arch (struct kvm_debug_exit_arch)
	runDebugException = runExit + 0  // u32
	runDebugPC        = runExit + 8  // u64
	runDebugDR6       = runExit + 16 // u64
	runDebugDR7       = runExit + 24 // u64

	// internal
	runInternalSuberror = runExit + 0 // u32
	runInternalNData    = runExit + 4 // u32
	runInternalData     = runExit + 8 // u64[16]
	runInternalMaxData  = 16

	// system_event
	runSystemEventType  = runExit + 0 // u32
	runSystemEventNData = runExit + 4 // u32
	runSystemEventData  = runExit + 8 // u64[16]; data[0] is also "flags"
	runSystemEventMax   = 16

	// runMinSize covers every field read here: a mapping shorter than this
	// is refused at vCPU creation.
	runMinSize = runExit + runExitSize
)

// ExitReason is kvm_run.exit_reason: why KVM_RUN returned to user space.
type ExitReason uint32

// Exit reasons (KVM_EXIT_*). Those without a wrapper for their data are
// listed so that String names them in logs.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8 // triple fault
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitWatchdog      ExitReason = 21
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitHyperV        ExitReason = 27
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitDirtyRingFull ExitReason = 31
	ExitAPResetHold   ExitReason = 32
	ExitX86BusLock    ExitReason = 33
	ExitXen           ExitReason = 34
	ExitNotify        ExitReason = 37
)

// String is the KVM_EXIT_ name without its prefix, e.g. "IO", "HLT".
func (r ExitReason) String() string {
	switch r {
	case ExitUnknown:
		return "UNKNOWN"
	case ExitException:
		return "EXCEPTION"
	case ExitIO:
		return "IO"
	case ExitHypercall:
		return "HYPERCALL"
	case ExitDebug:
		return "DEBUG"
	case ExitHLT:
		return "HLT"
	case ExitMMIO:
		return "MMIO"
	case ExitIRQWindowOpen:
		return "IRQ_WINDOW_OPEN"
	case ExitShutdown:
		return "SHUTDOWN"
	case ExitFailEntry:
		return "FAIL_ENTRY"
	case ExitIntr:
		return "INTR"
	case ExitSetTPR:
		return "SET_TPR"
	case ExitTPRAccess:
		return "TPR_ACCESS"
	case ExitNMI:
		return "NMI"
	case ExitInternalError:
		return "INTERNAL_ERROR"
	case ExitWatchdog:
		return "WATCHDOG"
	case ExitSystemEvent:
		return "SYSTEM_EVENT"
	case ExitIOAPICEOI:
		return "IOAPIC_EOI"
	case ExitHyperV:
		return "HYPERV"
	case ExitX86RDMSR:
		return "X86_RDMSR"
	case ExitX86WRMSR:
		return "X86_WRMSR"
	case ExitDirtyRingFull:
		return "DIRTY_RING_FULL"
	case ExitAPResetHold:
		return "AP_RESET_HOLD"
	case ExitX86BusLock:
		return "X86_BUS_LOCK"
	case ExitXen:
		return "XEN"
	case ExitNotify:
		return "NOTIFY"
	}
	return fmt.Sprintf("ExitReason(%d)", uint32(r))
}

// IODirection says whether a port access reads or writes.
type IODirection uint8

// Port I/O directions (KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT).
const (
	IOIn  IODirection = 0
	IOOut IODirection = 1
)

func (d IODirection) String() string {
	switch d {
	case IOIn:
		return "in"
	case IOOut:
		return "out"
	}
	return fmt.Sprintf("IODirection(%d)", uint8(d))
}

// IOExit is a port I/O exit (KVM_EXIT_IO).
type IOExit struct {
	Direction IODirection
	Size      uint8  // bytes per access: 1, 2 or 4
	Port      uint16 // first port
	Count     uint32 // number of accesses; more than 1 for rep ins/outs
	// Data is Size*Count bytes inside the kvm_run mapping: what the guest
	// wrote (IOOut), or where to put what it reads (IOIn) before the next
	// Run. It is only valid until then.
	Data []byte
}

// MMIOExit is a memory-mapped I/O exit (KVM_EXIT_MMIO).
type MMIOExit struct {
	PhysAddr uint64
	// Data is the access (1 to 8 bytes) inside the kvm_run mapping: the
	// value written, or where to put the value read before the next Run.
	Data    []byte
	IsWrite bool
}

// FailEntryExit is KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the
// guest, usually because of an invalid register state.
type FailEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// DebugExit is KVM_EXIT_DEBUG (struct kvm_debug_exit_arch).
type DebugExit struct {
	Exception uint32
	PC        uint64
	DR6       uint64
	DR7       uint64
}

// InternalErrorSuberror says what kind of KVM internal error happened.
type InternalErrorSuberror uint32

// Internal error suberrors (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation            InternalErrorSuberror = 1 // KVM could not emulate an instruction
	InternalErrorSimultaneousEx       InternalErrorSuberror = 2 // exception while delivering another
	InternalErrorDeliveryEvent        InternalErrorSuberror = 3 // unexpected exit while delivering an event
	InternalErrorUnexpectedExitReason InternalErrorSuberror = 4
)

func (s InternalErrorSuberror) String() string {
	switch s {
	case InternalErrorEmulation:
		return "emulation failure"
	case InternalErrorSimultaneousEx:
		return "simultaneous exceptions"
	case InternalErrorDeliveryEvent:
		return "exit during event delivery"
	case InternalErrorUnexpectedExitReason:
		return "unexpected exit reason"
	}
	return fmt.Sprintf("InternalErrorSuberror(%d)", uint32(s))
}

// internalErrorFlagInstructionBytes (KVM_INTERNAL_ERROR_EMULATION_FLAG_
// INSTRUCTION_BYTES) says an emulation failure carries the instruction.
const internalErrorFlagInstructionBytes = 1 << 0

// InternalErrorExit is KVM_EXIT_INTERNAL_ERROR.
type InternalErrorExit struct {
	Suberror InternalErrorSuberror
	NData    uint32   // as the kernel reported it
	Data     []uint64 // a copy of the first min(NData, 16) data words
}

// InstructionBytes returns the bytes of the instruction KVM failed to
// emulate, when the kernel supplied them (Linux 5.14+, suberror 1).
func (e InternalErrorExit) InstructionBytes() ([]byte, bool) {
	// emulation_failure overlays internal.data: data[0] = flags, then
	// insn_size (u8) and insn_bytes[15] in data[1] and data[2].
	if e.Suberror != InternalErrorEmulation || len(e.Data) < 3 || e.Data[0]&internalErrorFlagInstructionBytes == 0 {
		return nil, false
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], e.Data[1])
	binary.LittleEndian.PutUint64(b[8:], e.Data[2])
	n := int(b[0])
	if n > 15 {
		n = 15
	}
	return append([]byte(nil), b[1:1+n]...), true
}

// SystemEventType is the kind of KVM_EXIT_SYSTEM_EVENT.
type SystemEventType uint32

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown SystemEventType = 1
	SystemEventReset    SystemEventType = 2
	SystemEventCrash    SystemEventType = 3
	SystemEventWakeup   SystemEventType = 4
	SystemEventSuspend  SystemEventType = 5
	SystemEventSEVTerm  SystemEventType = 6
)

func (t SystemEventType) String() string {
	switch t {
	case SystemEventShutdown:
		return "shutdown"
	case SystemEventReset:
		return "reset"
	case SystemEventCrash:
		return "crash"
	case SystemEventWakeup:
		return "wakeup"
	case SystemEventSuspend:
		return "suspend"
	case SystemEventSEVTerm:
		return "sev-term"
	}
	return fmt.Sprintf("SystemEventType(%d)", uint32(t))
}

// SystemEventExit is KVM_EXIT_SYSTEM_EVENT.
type SystemEventExit struct {
	Type  SystemEventType
	Flags uint64   // data[0]; what older kernels call flags
	Data  []uint64 // a copy of min(ndata, 16) words (KVM_CAP_SYSTEM_EVENT_DATA)
}

// runPage reads and writes the fields of a vCPU's kvm_run mapping. It is
// plain byte access (the kernel only touches the page during KVM_RUN on the
// same thread), so it needs no unsafe code and can be tested on a buffer.
// Every offset and length is checked against the mapping's size.
type runPage []byte

func (p runPage) ok() bool { return len(p) >= runMinSize }

func (p runPage) exitReason() ExitReason {
	if !p.ok() {
		return ExitUnknown
	}
	return ExitReason(binary.LittleEndian.Uint32(p[runExitReason:]))
}

// expect fails unless the page holds exit reason want.
func (p runPage) expect(want ExitReason) error {
	if !p.ok() {
		return fmt.Errorf("kvm_run mapping of %d bytes (need %d): %w", len(p), runMinSize, ErrBadRunData)
	}
	if got := p.exitReason(); got != want {
		return fmt.Errorf("want exit %v, kvm_run has %v: %w", want, got, ErrWrongExit)
	}
	return nil
}

func (p runPage) io() (IOExit, error) {
	if err := p.expect(ExitIO); err != nil {
		return IOExit{}, err
	}
	e := IOExit{
		Direction: IODirection(p[runIODirection]),
		Size:      p[runIOSize],
		Port:      binary.LittleEndian.Uint16(p[runIOPort:]),
		Count:     binary.LittleEndian.Uint32(p[runIOCount:]),
	}
	off := binary.LittleEndian.Uint64(p[runIODataOffset:])
	if e.Direction != IOIn && e.Direction != IOOut {
		return IOExit{}, fmt.Errorf("KVM_EXIT_IO direction %d: %w", e.Direction, ErrBadRunData)
	}
	if e.Size != 1 && e.Size != 2 && e.Size != 4 {
		return IOExit{}, fmt.Errorf("KVM_EXIT_IO size %d: %w", e.Size, ErrBadRunData)
	}
	// Size <= 4 and Count < 2^32, so n cannot overflow a uint64; off can be
	// anything, so compare without adding to it.
	n := uint64(e.Size) * uint64(e.Count)
	if e.Count == 0 || off > uint64(len(p)) || n > uint64(len(p))-off {
		return IOExit{}, fmt.Errorf("KVM_EXIT_IO data %d bytes at offset %#x in a %d-byte kvm_run: %w", n, off, len(p), ErrBadRunData)
	}
	e.Data = p[off : off+n : off+n]
	return e, nil
}

func (p runPage) mmio() (MMIOExit, error) {
	if err := p.expect(ExitMMIO); err != nil {
		return MMIOExit{}, err
	}
	n := binary.LittleEndian.Uint32(p[runMMIOLen:])
	if n == 0 || n > 8 {
		return MMIOExit{}, fmt.Errorf("KVM_EXIT_MMIO length %d: %w", n, ErrBadRunData)
	}
	end := runMMIOData + int(n)
	return MMIOExit{
		PhysAddr: binary.LittleEndian.Uint64(p[runMMIOPhysAddr:]),
		Data:     p[runMMIOData:end:end],
		IsWrite:  p[runMMIOIsWrite] != 0,
	}, nil
}

func (p runPage) failEntry() (FailEntryExit, error) {
	if err := p.expect(ExitFailEntry); err != nil {
		return FailEntryExit{}, err
	}
	return FailEntryExit{
		HardwareEntryFailureReason: binary.LittleEndian.Uint64(p[runFailEntryReason:]),
		CPU:                        binary.LittleEndian.Uint32(p[runFailEntryCPU:]),
	}, nil
}

func (p runPage) debug() (DebugExit, error) {
	if err := p.expect(ExitDebug); err != nil {
		return DebugExit{}, err
	}
	return DebugExit{
		Exception: binary.LittleEndian.Uint32(p[runDebugException:]),
		PC:        binary.LittleEndian.Uint64(p[runDebugPC:]),
		DR6:       binary.LittleEndian.Uint64(p[runDebugDR6:]),
		DR7:       binary.LittleEndian.Uint64(p[runDebugDR7:]),
	}, nil
}

// words copies min(n, max) u64s starting at off.
func (p runPage) words(off int, n uint32, max int) []uint64 {
	if int64(n) < int64(max) {
		max = int(n)
	}
	out := make([]uint64, max)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(p[off+8*i:])
	}
	return out
}

func (p runPage) internalError() (InternalErrorExit, error) {
	if err := p.expect(ExitInternalError); err != nil {
		return InternalErrorExit{}, err
	}
	n := binary.LittleEndian.Uint32(p[runInternalNData:])
	return InternalErrorExit{
		Suberror: InternalErrorSuberror(binary.LittleEndian.Uint32(p[runInternalSuberror:])),
		NData:    n,
		Data:     p.words(runInternalData, n, runInternalMaxData),
	}, nil
}

func (p runPage) systemEvent() (SystemEventExit, error) {
	if err := p.expect(ExitSystemEvent); err != nil {
		return SystemEventExit{}, err
	}
	n := binary.LittleEndian.Uint32(p[runSystemEventNData:])
	return SystemEventExit{
		Type:  SystemEventType(binary.LittleEndian.Uint32(p[runSystemEventType:])),
		Flags: binary.LittleEndian.Uint64(p[runSystemEventData:]),
		Data:  p.words(runSystemEventData, n, runSystemEventMax),
	}, nil
}

func (p runPage) setByte(off int, v bool) {
	if !p.ok() {
		return
	}
	var b byte
	if v {
		b = 1
	}
	p[off] = b
}

func (p runPage) byteSet(off int) bool { return p.ok() && p[off] != 0 }

func (p runPage) u64(off int) uint64 {
	if !p.ok() {
		return 0
	}
	return binary.LittleEndian.Uint64(p[off:])
}
