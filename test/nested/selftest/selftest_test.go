package selftest

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/guests"
	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
)

// newMachine creates a mini VM, or skips the test loudly where /dev/kvm
// cannot be used (run `go test ./test/nested/` to run it nested).
func newMachine(t *testing.T, cpus int, irqchip bool) *Machine {
	t.Helper()
	m, err := New(cpus, irqchip)
	if errors.Is(err, ErrNoKVM) {
		t.Skipf("SKIP: %v; `go test ./test/nested/` runs this test inside a nested VM", err)
	}
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func loadELF(t *testing.T, m *Machine, name string) (entry, pvhEntry uint64) {
	t.Helper()
	image, err := os.ReadFile(guests.Build(t, name))
	require.NoError(t, err)
	entry, pvhEntry, err = m.LoadELF(image)
	require.NoError(t, err)
	return entry, pvhEntry
}

// TestRealModeGuestPrints is the harness's own proof: a real-mode guest
// prints over port I/O and halts.
func TestRealModeGuestPrints(t *testing.T) {
	image, err := os.ReadFile(guests.Build(t, guests.RealMode))
	require.NoError(t, err)
	m := newMachine(t, 1, false)
	require.NoError(t, m.Write(guests.RealModeAddr, image))
	require.NoError(t, m.RealMode(0, guests.RealModeAddr))
	res, err := m.Run(0)
	require.NoError(t, err)
	assert.Equal(t, ExitHalt, res.Exit, res.Detail)
	assert.Equal(t, guests.RealModeOutput, m.Console())
}

func TestLongModeGuestPrintsMarksAndPowersOff(t *testing.T) {
	m := newMachine(t, 1, false)
	entry, pvh := loadELF(t, m, guests.LongMode)
	assert.Zero(t, pvh, "no PVH note")
	require.NoError(t, m.LongMode(0, entry))
	res, err := m.Run(0)
	require.NoError(t, err)
	assert.Equal(t, ExitPoweroff, res.Exit, res.Detail)
	assert.Equal(t, guests.LongModeOutput, m.Console())
	assert.Equal(t, []byte{guests.BootMarker}, m.Markers())
}

func TestPVHGuestEntersThroughItsNote(t *testing.T) {
	m := newMachine(t, 1, false)
	_, pvh := loadELF(t, m, guests.PVH)
	require.NotZero(t, pvh, "PVH note")
	require.NoError(t, m.PVH(0, pvh))
	res, err := m.Run(0)
	require.NoError(t, err)
	assert.Equal(t, ExitPoweroff, res.Exit, res.Detail)
	assert.Equal(t, guests.PVHOutput, m.Console())
}

func TestMMIOGuestWritesAndReadsBack(t *testing.T) {
	m := newMachine(t, 1, false)
	var writes []uint32
	m.MMIO = func(addr uint64, data []byte, isWrite bool) {
		if isWrite {
			if addr == guests.MMIOWriteAddr && len(data) == 4 {
				writes = append(writes, binary.LittleEndian.Uint32(data))
			}
			return
		}
		if addr == guests.MMIOReadAddr && len(data) == 4 {
			binary.LittleEndian.PutUint32(data, 0xcafef00d)
		}
	}
	entry, _ := loadELF(t, m, guests.MMIO)
	require.NoError(t, m.LongMode(0, entry))
	res, err := m.Run(0)
	require.NoError(t, err)
	assert.Equal(t, ExitPoweroff, res.Exit, res.Detail)
	assert.Equal(t, []uint32{guests.MMIOWriteValue}, writes, "one 32-bit write of MMIOWriteValue")
	assert.Equal(t, guests.MMIOOutput(0xcafef00d), m.Console())
}

func TestTripleFaultGuestShutsDown(t *testing.T) {
	m := newMachine(t, 1, false)
	entry, _ := loadELF(t, m, guests.TripleFault)
	require.NoError(t, m.LongMode(0, entry))
	res, err := m.Run(0)
	require.NoError(t, err)
	assert.Equal(t, ExitShutdown, res.Exit, res.Detail)
	assert.Equal(t, guests.TripleFaultOutput, m.Console())
}

func TestSMPGuestHearsFromEveryVCPU(t *testing.T) {
	const cpus = 2
	m := newMachine(t, cpus, false)
	entry, _ := loadELF(t, m, guests.SMP)
	require.NoError(t, m.Write(guests.SMPExpectedAddr, binary.LittleEndian.AppendUint32(nil, cpus)))
	results := make([]Result, cpus)
	errs := make([]error, cpus)
	var wg sync.WaitGroup
	for id := range cpus {
		require.NoError(t, m.LongMode(id, entry))
	}
	for id := range cpus {
		wg.Go(func() { results[id], errs[id] = m.Run(id) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	var poweroffs, halts int
	for _, r := range results {
		switch r.Exit {
		case ExitPoweroff:
			poweroffs++
		case ExitHalt:
			halts++
		default:
			t.Errorf("vCPU ended with %v %s", r.Exit, r.Detail)
		}
	}
	assert.Equal(t, 1, poweroffs, "the first vCPU to arrive powers off")
	assert.Equal(t, cpus-1, halts, "the others park")
	out := m.Console()
	for id := range cpus {
		assert.Contains(t, out, guests.SMPCPUOutput(id))
	}
	assert.True(t, strings.HasSuffix(out, guests.SMPOutput(cpus)), "ends with %q: %q", guests.SMPOutput(cpus), out)
}

// TestProbePassesOnRealKVM: on a KVM that runs unmodified guests (here,
// nested SVM) every step of the usability probe passes.
func TestProbePassesOnRealKVM(t *testing.T) {
	m := newMachine(t, 1, true)
	entry, _ := loadELF(t, m, guests.Probe)
	require.NoError(t, m.LongMode(0, entry))
	res, err := m.Run(0)
	require.NoError(t, err)
	passed, reason := probe.Summarize(m.Markers())
	t.Logf("probe: %s; codes % x; exit %v %s", reason, m.Markers(), res.Exit, res.Detail)
	assert.Equal(t, ExitPoweroff, res.Exit, res.Detail)
	assert.True(t, passed, reason)
}

// TestTripleFaultedVCPURunsAgain re-enters a vCPU after its triple fault,
// as a VMM's restart policy does: KVM has put it through INIT, so the VMM
// sets the entry state again and the guest boots (and faults) once more.
func TestTripleFaultedVCPURunsAgain(t *testing.T) {
	m := newMachine(t, 1, false)
	entry, _ := loadELF(t, m, guests.TripleFault)
	for boot := 1; boot <= 3; boot++ {
		require.NoError(t, m.LongMode(0, entry))
		res, err := m.Run(0)
		require.NoError(t, err)
		require.Equal(t, ExitShutdown, res.Exit, "boot %d: %s", boot, res.Detail)
	}
	assert.Equal(t, strings.Repeat(guests.TripleFaultOutput, 3), m.Console())
}
