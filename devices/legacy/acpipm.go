package legacy

import (
	"fmt"
	"sync"

	"github.com/wisp-vmm/wisp/devices"
)

// The ACPI PM1a blocks as wisp's FADT lays them out: the 4-byte event block
// (PM1_STS then PM1_EN, 16 bits each) directly followed by the 2-byte
// control block, so the whole device fits one 6-port range. EventBlock and
// ControlBlock give the two halves separately for a layout that splits them.
const (
	ACPIPMEventOffset   = 0
	ACPIPMEventSize     = 4
	ACPIPMControlOffset = 4
	ACPIPMControlSize   = 2
	ACPIPMSize          = 6

	// ACPISleepTypeS5 is the SLP_TYP value of the DSDT's \_S5 package:
	// writing it with SLP_EN powers the machine off.
	ACPISleepTypeS5 = 5
)

// PM1 register bits (ACPI 6.5, section 4.8.3.1).
const (
	pm1TmrSts    = 1 << 0
	pm1GblSts    = 1 << 5
	pm1PwrBtnSts = 1 << 8
	pm1SlpBtnSts = 1 << 9
	pm1RtcSts    = 1 << 10
	// Status bits whose enable bit sits at the same position and which
	// raise an SCI when both are set.
	pm1SCIEvents = pm1TmrSts | pm1GblSts | pm1PwrBtnSts | pm1SlpBtnSts | pm1RtcSts

	pm1PciExpWakeDis = 1 << 14
	pm1EnableMask    = pm1SCIEvents | pm1PciExpWakeDis

	pm1CntSciEn       = 1 << 0
	pm1CntBmRld       = 1 << 1
	pm1CntSlpTypShift = 10
	pm1CntSlpTypMask  = 7 << pm1CntSlpTypShift
	pm1CntSlpEn       = 1 << 13 // write-only: reads as 0
	// GBL_RLS and SLP_EN are write-only; the rest is reserved.
	pm1CntStored = pm1CntSciEn | pm1CntBmRld | pm1CntSlpTypMask
)

// ACPIPM is the ACPI PM1a event and control registers of a fixed-hardware
// ACPI platform. The guest powers off by writing SLP_TYP = S5 with SLP_EN to
// PM1_CNT, which calls the power-off callback; the host asks the guest to
// shut down with PressPowerButton, which sets PWRBTN_STS and raises the SCI
// if the guest enabled that event. SCI_EN starts set: the machine is always
// in ACPI mode (the FADT has no SMI command port).
//
// Registers are 16 bits wide but byte, word and dword accesses are all
// accepted at any offset, as long as the access stays within one block.
type ACPIPM struct {
	sci      devices.IRQ
	powerOff func()

	mu      sync.Mutex
	sts     uint16
	en      uint16
	cnt     uint16
	sciLine bool // level of the SCI as last computed
}

var _ devices.Device = (*ACPIPM)(nil)

// NewACPIPM returns PM1a registers that pulse sci (nil: no SCI) when an
// enabled event becomes pending and call powerOff (which may be nil) when
// the guest enters S5.
func NewACPIPM(sci devices.IRQ, powerOff func()) *ACPIPM {
	return &ACPIPM{sci: sci, powerOff: powerOff, cnt: pm1CntSciEn}
}

// EventBlock returns the 4-port view of PM1a_EVT_BLK.
func (p *ACPIPM) EventBlock() devices.Device {
	return window{dev: p, base: ACPIPMEventOffset, size: ACPIPMEventSize}
}

// ControlBlock returns the 2-port view of PM1a_CNT_BLK.
func (p *ACPIPM) ControlBlock() devices.Device {
	return window{dev: p, base: ACPIPMControlOffset, size: ACPIPMControlSize}
}

// PressPowerButton sets PWRBTN_STS and raises the SCI if the guest enabled
// the power button event, asking an ACPI-aware guest to shut down cleanly.
// The error is only ever a failure to raise the SCI.
func (p *ACPIPM) PressPowerButton() error {
	p.mu.Lock()
	p.sts |= pm1PwrBtnSts
	raise := p.updateSCI()
	p.mu.Unlock()
	return p.pulse(raise)
}

// validAccess reports whether an access is 1, 2 or 4 bytes wide and stays
// inside either the event block or the control block.
func validAccess(offset uint64, width int) bool {
	if width != 1 && width != 2 && width != 4 {
		return false
	}
	if offset < ACPIPMControlOffset {
		return within(offset, width, ACPIPMEventSize)
	}
	return within(offset-ACPIPMControlOffset, width, ACPIPMControlSize)
}

// Read serves a read of the PM1a registers, little-endian byte by byte.
func (p *ACPIPM) Read(offset uint64, data []byte) error {
	if !validAccess(offset, len(data)) {
		floatBus(data)
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range data {
		data[i] = p.readByte(offset + uint64(i))
	}
	return nil
}

// Write serves a write of the PM1a registers, little-endian byte by byte:
// status bits are cleared by writing 1, enable bits are stored, and a
// control write with SLP_EN requests the sleep state in SLP_TYP.
func (p *ACPIPM) Write(offset uint64, data []byte) error {
	if !validAccess(offset, len(data)) {
		return nil
	}
	p.mu.Lock()
	sleep := false
	for i, v := range data {
		if p.writeByte(offset+uint64(i), v) {
			sleep = true
		}
	}
	raise := p.updateSCI()
	p.mu.Unlock()
	err := p.pulse(raise)
	if sleep && p.powerOff != nil {
		p.powerOff()
	}
	return err
}

func (p *ACPIPM) readByte(offset uint64) byte {
	switch offset {
	case 0:
		return byte(p.sts)
	case 1:
		return byte(p.sts >> 8)
	case 2:
		return byte(p.en)
	case 3:
		return byte(p.en >> 8)
	case 4:
		return byte(p.cnt)
	default: // 5
		return byte(p.cnt >> 8)
	}
}

// writeByte applies one byte and reports whether it asked for S5. SLP_EN
// and SLP_TYP share the control register's high byte, so a byte write there
// carries a complete request.
func (p *ACPIPM) writeByte(offset uint64, v byte) (powerOff bool) {
	switch offset {
	case 0, 1:
		p.sts &^= uint16(v) << (8 * offset)
	case 2, 3:
		shift := 8 * (offset - 2)
		p.en = (p.en&^(0xff<<shift) | uint16(v)<<shift) & pm1EnableMask
	default: // 4, 5
		shift := 8 * (offset - 4)
		val := uint16(v) << shift
		p.cnt = p.cnt&^(0xff<<shift) | val&pm1CntStored
		if val&pm1CntSlpEn != 0 {
			// Only S5 is offered in the DSDT; a request for any other
			// state is ignored and the guest carries on, as if it had
			// woken at once.
			return (val&pm1CntSlpTypMask)>>pm1CntSlpTypShift == ACPISleepTypeS5
		}
	}
	return false
}

// updateSCI recomputes the SCI level and reports a low-to-high transition.
func (p *ACPIPM) updateSCI() bool {
	line := p.cnt&pm1CntSciEn != 0 && p.sts&p.en&pm1SCIEvents != 0
	rising := line && !p.sciLine
	p.sciLine = line
	return rising
}

func (p *ACPIPM) pulse(raise bool) error {
	if !raise || p.sci == nil {
		return nil
	}
	if err := p.sci.Trigger(); err != nil {
		return fmt.Errorf("acpi pm: raise SCI: %w", err)
	}
	return nil
}
