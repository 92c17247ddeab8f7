package legacy

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices"
)

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

func readPM16(t *testing.T, d devices.Device, offset uint64) uint16 {
	t.Helper()
	var b [2]byte
	require.NoError(t, d.Read(offset, b[:]))
	return binary.LittleEndian.Uint16(b[:])
}

func TestACPIPMResetValues(t *testing.T) {
	p := NewACPIPM(nil, nil)
	assert.Equal(t, uint16(0), readPM16(t, p, 0), "PM1_STS")
	assert.Equal(t, uint16(0), readPM16(t, p, 2), "PM1_EN")
	assert.Equal(t, uint16(pm1CntSciEn), readPM16(t, p, 4), "PM1_CNT: already in ACPI mode")
}

func TestACPIPMSleepDecode(t *testing.T) {
	tests := []struct {
		name         string
		offset       uint64
		data         []byte
		wantPowerOff bool
		wantCNT      uint16
	}{
		{"S5 with SLP_EN, SCI_EN kept (ACPICA's write)", 4, le16(0x3401), true, 0x1401},
		{"S5 with SLP_EN, bare", 4, le16(0x3400), true, 0x1400},
		{"SLP_TYP alone only stages", 4, le16(0x1401), false, 0x1401},
		{"SLP_EN with S0", 4, le16(0x2001), false, 0x0001},
		{"SLP_EN with type 7", 4, le16(0x3c01), false, 0x1c01},
		{"byte write of the high half", 5, []byte{0x34}, true, 0x1401},
		{"byte write of the high half, S0", 5, []byte{0x20}, false, 0x0001},
		{"low byte cannot carry SLP_EN", 4, []byte{0xff}, false, 0x0003},
		{"dword at the control block overruns it: ignored", 4, []byte{0x01, 0x34, 0, 0}, false, 0x0001},
		{"word across the two blocks: ignored", 3, []byte{0x00, 0x34}, false, 0x0001},
		{"qword: ignored", 0, make([]byte, 8), false, 0x0001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var offs counter
			p := NewACPIPM(nil, offs.inc)
			require.NoError(t, p.Write(tt.offset, tt.data))
			assert.Equal(t, tt.wantPowerOff, offs.count() == 1)
			assert.Equal(t, tt.wantCNT, readPM16(t, p, 4), "SLP_EN reads back as 0")
		})
	}
}

type pmStep struct {
	name       string
	do         func(t *testing.T, p *ACPIPM)
	wantPulses int64
	wantSTS    uint16
}

func pmWrite(offset uint64, data []byte) func(*testing.T, *ACPIPM) {
	return func(t *testing.T, p *ACPIPM) { require.NoError(t, p.Write(offset, data)) }
}

func press(t *testing.T, p *ACPIPM) { require.NoError(t, p.PressPowerButton()) }

func TestACPIPMPowerButton(t *testing.T) {
	sci := &countingIRQ{}
	p := NewACPIPM(sci, nil)
	steps := []pmStep{
		{"press while disabled: status only", press, 0, pm1PwrBtnSts},
		{"enabling with the event pending raises SCI", pmWrite(2, le16(pm1PwrBtnSts)), 1, pm1PwrBtnSts},
		{"press again while pending: no new edge", press, 1, pm1PwrBtnSts},
		{"writing 0 clears nothing", pmWrite(0, le16(0)), 1, pm1PwrBtnSts},
		{"writing 1 clears", pmWrite(0, le16(pm1PwrBtnSts)), 1, 0},
		{"press raises SCI", press, 2, pm1PwrBtnSts},
		{"byte write of 1 to the high half clears", pmWrite(1, []byte{0x01}), 2, 0},
		{"SCI_EN off: press is latched but silent", func(t *testing.T, p *ACPIPM) {
			require.NoError(t, p.Write(4, le16(0)))
			press(t, p)
		}, 2, pm1PwrBtnSts},
		{"SCI_EN back on delivers it", pmWrite(4, le16(pm1CntSciEn)), 3, pm1PwrBtnSts},
		{"dword write clears status and keeps enable", pmWrite(0, []byte{0x00, 0x01, 0x00, 0x01}), 3, 0},
		{"still enabled", press, 4, pm1PwrBtnSts},
	}
	for _, st := range steps {
		st.do(t, p)
		assert.Equal(t, st.wantPulses, sci.count(), "SCI pulses after %q", st.name)
		assert.Equal(t, st.wantSTS, readPM16(t, p, 0), "PM1_STS after %q", st.name)
	}
}

func TestACPIPMEnableBits(t *testing.T) {
	p := NewACPIPM(nil, nil)
	require.NoError(t, p.Write(2, le16(0xffff)))
	assert.Equal(t, uint16(0x4721), readPM16(t, p, 2), "TMR, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE_DIS only")

	require.NoError(t, p.PressPowerButton())
	var dword [4]byte
	require.NoError(t, p.Read(0, dword[:]))
	assert.Equal(t, uint32(0x4721_0100), binary.LittleEndian.Uint32(dword[:]), "status low, enable high")
}

func TestACPIPMInterruptFailureIsReturned(t *testing.T) {
	sci := &countingIRQ{err: errIRQ}
	p := NewACPIPM(sci, nil)
	require.NoError(t, p.PressPowerButton(), "not enabled: no pulse, no error")
	assert.ErrorIs(t, p.Write(2, le16(pm1PwrBtnSts)), errIRQ)
	require.NoError(t, p.Write(0, le16(pm1PwrBtnSts)))
	assert.ErrorIs(t, p.PressPowerButton(), errIRQ)
}

func TestACPIPMOnTheBus(t *testing.T) {
	tests := []struct {
		name   string
		insert func(*devices.Bus, *ACPIPM) error
	}{
		{"one range", func(b *devices.Bus, p *ACPIPM) error {
			return b.Insert(p, ACPIPM1aEvtPort, ACPIPMSize)
		}},
		{"two views", func(b *devices.Bus, p *ACPIPM) error {
			if err := b.Insert(p.EventBlock(), ACPIPM1aEvtPort, ACPIPMEventSize); err != nil {
				return err
			}
			return b.Insert(p.ControlBlock(), ACPIPM1aCntPort, ACPIPMControlSize)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var offs counter
			sci := &countingIRQ{}
			p := NewACPIPM(sci, offs.inc)
			bus := devices.NewBus()
			require.NoError(t, tt.insert(bus, p))

			require.NoError(t, bus.Write(ACPIPM1aEvtPort+2, le16(pm1PwrBtnSts)))
			require.NoError(t, p.PressPowerButton())
			assert.Equal(t, int64(1), sci.count())
			var sts [2]byte
			require.NoError(t, bus.Read(ACPIPM1aEvtPort, sts[:]))
			assert.Equal(t, le16(pm1PwrBtnSts), sts[:])

			require.NoError(t, bus.Write(ACPIPM1aCntPort, le16(pm1CntSciEn|ACPISleepTypeS5<<pm1CntSlpTypShift|pm1CntSlpEn)))
			assert.Equal(t, int64(1), offs.count())
		})
	}
}

func TestACPIPMViewsRejectOutOfRange(t *testing.T) {
	var offs counter
	p := NewACPIPM(nil, offs.inc)
	ctl := p.ControlBlock()
	require.NoError(t, ctl.Write(1, le16(0x3401)), "word at the last port overruns the view")
	require.NoError(t, ctl.Write(2, []byte{0x34}))
	assert.Zero(t, offs.count())
	require.NoError(t, ctl.Write(1, []byte{0x34}))
	assert.Equal(t, int64(1), offs.count(), "the view maps its offset 1 to PM1_CNT's high byte")

	var b [4]byte
	require.NoError(t, p.EventBlock().Read(4, b[:1]))
	assert.Equal(t, byte(0xff), b[0], "the event view ends before the control block")
}
