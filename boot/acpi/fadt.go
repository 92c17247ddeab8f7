package acpi

import "encoding/binary"

// FADT, signature "FACP" (ACPI 6.5, 5.2.9, table 5.9). Offsets are from the
// table's start.
const (
	fadtSize = 276 // revision 6: through the hypervisor vendor identity

	fadtFirmwareCtrlOff  = 36  // u32 FIRMWARE_CTRL (0: X_FIRMWARE_CTRL is used)
	fadtDSDTOff          = 40  // u32 DSDT (0: X_DSDT is used)
	fadtPMProfileOff     = 45  // u8 Preferred_PM_Profile
	fadtSCIIntOff        = 46  // u16 SCI_INT
	fadtSMICmdOff        = 48  // u32 SMI_CMD: 0 = always in ACPI mode
	fadtPM1aEvtBlkOff    = 56  // u32 PM1a_EVT_BLK
	fadtPM1aCntBlkOff    = 64  // u32 PM1a_CNT_BLK
	fadtPMTmrBlkOff      = 76  // u32 PM_TMR_BLK
	fadtPM1EvtLenOff     = 88  // u8 PM1_EVT_LEN
	fadtPM1CntLenOff     = 89  // u8 PM1_CNT_LEN
	fadtPMTmrLenOff      = 91  // u8 PM_TMR_LEN
	fadtIAPCBootArchOff  = 109 // u16 IAPC_BOOT_ARCH
	fadtFlagsOff         = 112 // u32 Flags
	fadtResetRegOff      = 116 // GAS RESET_REG
	fadtResetValueOff    = 128 // u8 RESET_VALUE
	fadtMinorVersionOff  = 131 // u8 FADT minor version
	fadtXFirmwareCtrlOff = 132 // u64 X_FIRMWARE_CTRL
	fadtXDSDTOff         = 140 // u64 X_DSDT
	fadtXPM1aEvtBlkOff   = 148 // GAS X_PM1a_EVT_BLK
	fadtXPM1aCntBlkOff   = 172 // GAS X_PM1a_CNT_BLK
	fadtXPMTmrBlkOff     = 208 // GAS X_PM_TMR_BLK
	fadtHypervisorIDOff  = 268 // u64 hypervisor vendor identity

	// Flags (table 5.10).
	fadtFlagWBINVD      = 1 << 0  // WBINVD works (required for ACPI 1.0+)
	fadtFlagProcC1      = 1 << 2  // C1 (HLT) supported on all processors
	fadtFlagPwrButton   = 1 << 4  // no fixed-feature power button: deliberately not set, PM1's PWRBTN_STS is the button
	fadtFlagSlpButton   = 1 << 5  // no fixed-feature sleep button
	fadtFlagResetRegSup = 1 << 10 // RESET_REG is valid
	fadtFlagHWReduced   = 1 << 20 // HW_REDUCED_ACPI: deliberately not set

	// IAPC_BOOT_ARCH (table 5.11).
	iapcLegacyDevices = 1 << 0 // ISA-style devices (COM1, RTC) exist
	iapc8042          = 1 << 1 // an i8042 keyboard controller exists
	iapcVGANotPresent = 1 << 2 // do not probe VGA

	// Generic Address Structure (5.2.3.2).
	gasSize         = 12
	gasSystemIO     = 1
	gasAccessByte   = 1
	gasAccessWord   = 2
	gasAccessDWord  = 3
	pmProfileUnspec = 0
)

// hypervisorID is what the FADT's hypervisor vendor identity holds.
const hypervisorID = "WISPVMM\x00"

// gas encodes a Generic Address Structure for an I/O port register.
func gas(port uint16, bitWidth, accessSize uint8) []byte {
	b := make([]byte, gasSize)
	b[0] = gasSystemIO
	b[1] = bitWidth
	b[3] = accessSize
	binary.LittleEndian.PutUint64(b[4:], uint64(port))
	return b
}

// buildFADT describes a full (not hardware-reduced) ACPI platform: PM1a
// event and control blocks the guest powers off through (SLP_TYP from \_S5
// plus SLP_EN into PM1a_CNT), an optional PM timer, SCI on IRQ 9, and a
// reset register. Each 32-bit field and its 64-bit X_ twin carry the same
// value, as ACPICA checks; the DSDT and FACS are given only in the X_
// fields, which ACPI 2.0+ says take precedence.
func buildFADT(c Config, dsdt, facs uint64) []byte {
	b := make([]byte, fadtSize)
	le := binary.LittleEndian
	b[fadtPMProfileOff] = pmProfileUnspec
	le.PutUint16(b[fadtSCIIntOff:], SCIIRQ)
	le.PutUint32(b[fadtPM1aEvtBlkOff:], uint32(c.PM1aEventPort))
	le.PutUint32(b[fadtPM1aCntBlkOff:], uint32(c.PM1aControlPort))
	b[fadtPM1EvtLenOff] = pm1EventLen
	b[fadtPM1CntLenOff] = pm1ControlLen
	copy(b[fadtXPM1aEvtBlkOff:], gas(c.PM1aEventPort, pm1EventLen*8, gasAccessWord))
	copy(b[fadtXPM1aCntBlkOff:], gas(c.PM1aControlPort, pm1ControlLen*8, gasAccessWord))
	if c.PMTimerPort != 0 {
		le.PutUint32(b[fadtPMTmrBlkOff:], uint32(c.PMTimerPort))
		b[fadtPMTmrLenOff] = pmTimerLen
		copy(b[fadtXPMTmrBlkOff:], gas(c.PMTimerPort, pmTimerLen*8, gasAccessDWord))
	}

	arch := uint16(iapcLegacyDevices | iapcVGANotPresent)
	if c.I8042 {
		arch |= iapc8042
	}
	le.PutUint16(b[fadtIAPCBootArchOff:], arch)
	le.PutUint32(b[fadtFlagsOff:], fadtFlagWBINVD|fadtFlagProcC1|fadtFlagSlpButton|fadtFlagResetRegSup)
	copy(b[fadtResetRegOff:], gas(ResetPort, 8, gasAccessByte))
	b[fadtResetValueOff] = ResetValue
	b[fadtMinorVersionOff] = fadtMinorRevision
	le.PutUint64(b[fadtXFirmwareCtrlOff:], facs)
	le.PutUint64(b[fadtXDSDTOff:], dsdt)
	copy(b[fadtHypervisorIDOff:], hypervisorID)

	body := b[headerSize:]
	return table("FACP", fadtRevision, body)
}
