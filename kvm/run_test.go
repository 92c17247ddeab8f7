package kvm

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRun is a kvm_run mapping of the usual three pages, filled by hand the
// way the kernel would, to test the accessors without /dev/kvm.
type fakeRun struct{ p runPage }

func newFakeRun(reason ExitReason) fakeRun {
	f := fakeRun{p: make(runPage, 3*4096)}
	f.u32(runExitReason, uint32(reason))
	return f
}

func (f fakeRun) u8(off int, v uint8)   { f.p[off] = v }
func (f fakeRun) u16(off int, v uint16) { binary.LittleEndian.PutUint16(f.p[off:], v) }
func (f fakeRun) u32(off int, v uint32) { binary.LittleEndian.PutUint32(f.p[off:], v) }
func (f fakeRun) u64(off int, v uint64) { binary.LittleEndian.PutUint64(f.p[off:], v) }

func (f fakeRun) io(dir IODirection, size uint8, port uint16, count uint32, dataOffset uint64) {
	f.u8(runIODirection, uint8(dir))
	f.u8(runIOSize, size)
	f.u16(runIOPort, port)
	f.u32(runIOCount, count)
	f.u64(runIODataOffset, dataOffset)
}

func TestIOExit(t *testing.T) {
	f := newFakeRun(ExitIO)
	f.io(IOOut, 1, 0x3f8, 3, 4096)
	copy(f.p[4096:], "abc")
	v := &VCPU{run: f.p}

	require.Equal(t, ExitIO, v.ExitReason())
	e, err := v.IO()
	require.NoError(t, err)
	assert.Equal(t, IOOut, e.Direction)
	assert.Equal(t, uint8(1), e.Size)
	assert.Equal(t, uint16(0x3f8), e.Port)
	assert.Equal(t, uint32(3), e.Count)
	assert.Equal(t, []byte("abc"), e.Data)
	assert.Equal(t, 3, cap(e.Data), "Data cannot be resliced past the access")

	// For an IN, writing Data writes the kvm_run mapping the kernel reads.
	f.io(IOIn, 2, 0x60, 1, 4096)
	e, err = v.IO()
	require.NoError(t, err)
	binary.LittleEndian.PutUint16(e.Data, 0xbeef)
	assert.Equal(t, []byte{0xef, 0xbe}, []byte(f.p[4096:4098]))
}

func TestIOExitRejectsOutOfBounds(t *testing.T) {
	const pageLen = 3 * 4096
	tests := []struct {
		name   string
		dir    IODirection
		size   uint8
		count  uint32
		offset uint64
	}{
		{"offset past the mapping", IOOut, 1, 1, pageLen},
		{"data runs off the end", IOOut, 4, 2, pageLen - 4},
		{"huge count", IOOut, 4, 0xffffffff, 4096},
		{"offset near 2^64", IOOut, 1, 16, ^uint64(0) - 8},
		{"zero count", IOOut, 1, 0, 4096},
		{"size 3", IOOut, 3, 1, 4096},
		{"size 8", IOIn, 8, 1, 4096},
		{"bad direction", IODirection(2), 1, 1, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRun(ExitIO)
			f.io(tt.dir, tt.size, 0x3f8, tt.count, tt.offset)
			_, err := (&VCPU{run: f.p}).IO()
			require.ErrorIs(t, err, ErrBadRunData)
		})
	}

	// The last bytes of the mapping are still fine.
	f := newFakeRun(ExitIO)
	f.io(IOOut, 4, 0x3f8, 2, pageLen-8)
	e, err := (&VCPU{run: f.p}).IO()
	require.NoError(t, err)
	assert.Len(t, e.Data, 8)
}

func TestMMIOExit(t *testing.T) {
	f := newFakeRun(ExitMMIO)
	f.u64(runMMIOPhysAddr, 0xfee00020)
	f.u32(runMMIOLen, 4)
	f.u8(runMMIOIsWrite, 1)
	copy(f.p[runMMIOData:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	v := &VCPU{run: f.p}

	e, err := v.MMIO()
	require.NoError(t, err)
	assert.Equal(t, uint64(0xfee00020), e.PhysAddr)
	assert.True(t, e.IsWrite)
	assert.Equal(t, []byte{1, 2, 3, 4}, e.Data)
	assert.Equal(t, 4, cap(e.Data))

	for _, n := range []uint32{0, 9, 0xffffffff} {
		f.u32(runMMIOLen, n)
		_, err := v.MMIO()
		assert.ErrorIs(t, err, ErrBadRunData, "len %d", n)
	}
}

func TestAccessorsCheckExitReason(t *testing.T) {
	v := &VCPU{run: newFakeRun(ExitHLT).p}
	_, err := v.IO()
	assert.ErrorIs(t, err, ErrWrongExit)
	_, err = v.MMIO()
	assert.ErrorIs(t, err, ErrWrongExit)
	_, err = v.InternalError()
	assert.ErrorIs(t, err, ErrWrongExit)
	_, err = v.SystemEvent()
	assert.ErrorIs(t, err, ErrWrongExit)
	_, err = v.FailEntry()
	assert.ErrorIs(t, err, ErrWrongExit)
	_, err = v.Debug()
	assert.ErrorIs(t, err, ErrWrongExit)
	assert.Contains(t, err.Error(), "want exit DEBUG, kvm_run has HLT")
}

func TestShortOrClosedMappingIsSafe(t *testing.T) {
	for _, p := range []runPage{nil, make(runPage, runMinSize-1)} {
		v := &VCPU{run: p}
		assert.Equal(t, ExitUnknown, v.ExitReason())
		_, err := v.IO()
		assert.ErrorIs(t, err, ErrBadRunData)
		v.SetImmediateExit(true) // must not panic
		assert.False(t, v.InterruptFlag())
		assert.Zero(t, v.CR8())
	}
}

func TestInternalError(t *testing.T) {
	f := newFakeRun(ExitInternalError)
	f.u32(runInternalSuberror, uint32(InternalErrorEmulation))
	f.u32(runInternalNData, 4)
	f.u64(runInternalData, internalErrorFlagInstructionBytes)
	// insn_size 3, then the bytes of "lock cmpxchg16b" (truncated) and junk.
	copy(f.p[runInternalData+8:], []byte{3, 0xf0, 0x48, 0x0f, 0xaa, 0xbb})
	f.u64(runInternalData+24, 0x1234)
	v := &VCPU{run: f.p}

	e, err := v.InternalError()
	require.NoError(t, err)
	assert.Equal(t, InternalErrorEmulation, e.Suberror)
	assert.Equal(t, "emulation failure", e.Suberror.String())
	require.Len(t, e.Data, 4)
	assert.Equal(t, uint64(0x1234), e.Data[3])
	insn, ok := e.InstructionBytes()
	require.True(t, ok)
	assert.Equal(t, []byte{0xf0, 0x48, 0x0f}, insn)

	// ndata beyond the array is clamped, not trusted.
	f.u32(runInternalNData, 1000)
	e, err = v.InternalError()
	require.NoError(t, err)
	assert.Equal(t, uint32(1000), e.NData)
	assert.Len(t, e.Data, runInternalMaxData)

	// insn_size beyond 15 is clamped.
	f.u8(runInternalData+8, 200)
	e, _ = v.InternalError()
	insn, ok = e.InstructionBytes()
	require.True(t, ok)
	assert.Len(t, insn, 15)

	// Without the flag, or for another suberror, there are no bytes.
	f.u64(runInternalData, 0)
	e, _ = v.InternalError()
	_, ok = e.InstructionBytes()
	assert.False(t, ok)
	f.u64(runInternalData, internalErrorFlagInstructionBytes)
	f.u32(runInternalSuberror, uint32(InternalErrorDeliveryEvent))
	e, _ = v.InternalError()
	_, ok = e.InstructionBytes()
	assert.False(t, ok)
	f.u32(runInternalSuberror, uint32(InternalErrorEmulation))
	f.u32(runInternalNData, 2)
	e, _ = v.InternalError()
	_, ok = e.InstructionBytes()
	assert.False(t, ok, "ndata too small to hold the bytes")
}

func TestSystemEvent(t *testing.T) {
	f := newFakeRun(ExitSystemEvent)
	f.u32(runSystemEventType, uint32(SystemEventReset))
	f.u32(runSystemEventNData, 2)
	f.u64(runSystemEventData, 7)
	f.u64(runSystemEventData+8, 9)
	e, err := (&VCPU{run: f.p}).SystemEvent()
	require.NoError(t, err)
	assert.Equal(t, SystemEventReset, e.Type)
	assert.Equal(t, "reset", e.Type.String())
	assert.Equal(t, uint64(7), e.Flags)
	assert.Equal(t, []uint64{7, 9}, e.Data)
}

func TestFailEntryAndDebug(t *testing.T) {
	f := newFakeRun(ExitFailEntry)
	f.u64(runFailEntryReason, 0x80000021)
	f.u32(runFailEntryCPU, 1)
	fe, err := (&VCPU{run: f.p}).FailEntry()
	require.NoError(t, err)
	assert.Equal(t, FailEntryExit{HardwareEntryFailureReason: 0x80000021, CPU: 1}, fe)

	f = newFakeRun(ExitDebug)
	f.u32(runDebugException, 3)
	f.u64(runDebugPC, 0x1000)
	f.u64(runDebugDR6, 0xffff0ff0)
	f.u64(runDebugDR7, 0x400)
	d, err := (&VCPU{run: f.p}).Debug()
	require.NoError(t, err)
	assert.Equal(t, DebugExit{Exception: 3, PC: 0x1000, DR6: 0xffff0ff0, DR7: 0x400}, d)
}

func TestRunControlFields(t *testing.T) {
	f := newFakeRun(ExitIRQWindowOpen)
	v := &VCPU{run: f.p}
	v.SetImmediateExit(true)
	v.SetRequestInterruptWindow(true)
	assert.Equal(t, byte(1), f.p[runImmediateExit])
	assert.Equal(t, byte(1), f.p[runRequestInterruptWindow])
	v.SetImmediateExit(false)
	assert.Equal(t, byte(0), f.p[runImmediateExit])

	f.u8(runReadyForInterruptInjection, 1)
	f.u8(runIFFlag, 1)
	f.u64(runCR8, 5)
	f.u64(runAPICBase, 0xfee00900)
	assert.True(t, v.ReadyForInterruptInjection())
	assert.True(t, v.InterruptFlag())
	assert.Equal(t, uint64(5), v.CR8())
	assert.Equal(t, uint64(0xfee00900), v.APICBase())
}

func TestExitReasonString(t *testing.T) {
	for r, want := range map[ExitReason]string{
		ExitIO: "IO", ExitMMIO: "MMIO", ExitHLT: "HLT", ExitShutdown: "SHUTDOWN",
		ExitFailEntry: "FAIL_ENTRY", ExitInternalError: "INTERNAL_ERROR",
		ExitSystemEvent: "SYSTEM_EVENT", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
		ExitIntr: "INTR", ExitDebug: "DEBUG", ExitReason(99): "ExitReason(99)",
	} {
		assert.Equal(t, want, r.String())
	}
	assert.Equal(t, "out", IOOut.String())
	assert.Equal(t, "IODirection(7)", IODirection(7).String())
}
