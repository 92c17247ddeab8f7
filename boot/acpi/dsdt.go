package acpi

import "fmt"

// COM1's resources: the standard PC serial port.
const (
	com1Port = 0x3f8
	com1Len  = 8
	com1IRQ  = 4
)

// PCI host bridge resources.
const (
	pciConfigPort = 0xcf8 // CONFIG_ADDRESS/CONFIG_DATA, 8 ports
	pciConfigLen  = 8
	pciIOStart    = 0x0d00 // I/O window for BARs: above the legacy ports
	pciIOEnd      = 0xffff
	staPresent    = 0x0f // _STA: present, enabled, shown in UI, functioning
)

// buildDSDT writes the DSDT's AML:
//
//	Name (\_S5, Package (4) {5, 5, 0, 0})
//	Scope (\_SB) {
//	    Device (COM1) { _HID PNP0501, _UID 1, _STA method, _CRS: I/O 0x3f8-0x3ff, IRQ 4 }
//	    Device (PCI0) { _HID PNP0A08, _CID PNP0A03, _SEG 0, _BBN 0, _UID 0,
//	                    _CRS: bus 0-0, I/O 0xcf8/8, I/O 0x0d00-0xffff, 32-bit MMIO window(s) }
//	    Device (MRES) { _HID PNP0C02, _CRS: ECAM }
//	    Device (PEVT) { _HID "QEMU0001", _CRS: I/O pvpanic port }   (if PVPanicPort != 0)
//	}
//
// PEVT is the pvpanic device under the ACPI ID Linux's pvpanic-mmio
// driver (and QEMU) use, so a guest panic reaches the VMM before the
// guest reboots.
//
// MRES reserves ECAM as a motherboard resource, which is where Linux looks
// before it trusts the MCFG table (arch/x86/pci/mmconfig-shared.c).
func buildDSDT(c Config) ([]byte, error) {
	var a aml
	windows, err := mmioWindows(c)
	if err != nil {
		return nil, err
	}
	pciCRS := [][]byte{
		wordWindow(resTypeBus, 0, 0, 0),
		ioPort(pciConfigPort, pciConfigPort, 1, pciConfigLen),
		wordWindow(resTypeIO, resIOEntireRange, pciIOStart, pciIOEnd),
	}
	for _, w := range windows {
		pciCRS = append(pciCRS, dwordMemoryWindow(uint32(w[0]), uint32(w[1]-1)))
	}

	code := concat(
		a.name("_S5", a.pkg(a.integer(SleepTypeS5), a.integer(SleepTypeS5), a.integer(0), a.integer(0))),
		a.scope(`\_SB`,
			a.device("COM1",
				a.name("_HID", a.eisaID("PNP0501")),
				a.name("_UID", a.integer(1)),
				a.method("_STA", 0, a.ret(a.integer(staPresent))),
				a.name("_CRS", a.resourceTemplate(
					ioPort(com1Port, com1Port, 0, com1Len),
					irqNoFlags(com1IRQ),
				)),
			),
			a.device("PCI0",
				a.name("_HID", a.eisaID("PNP0A08")),
				a.name("_CID", a.eisaID("PNP0A03")),
				a.name("_SEG", a.integer(0)),
				a.name("_BBN", a.integer(0)),
				a.name("_UID", a.integer(0)),
				a.name("_CRS", a.resourceTemplate(pciCRS...)),
			),
			a.device("MRES",
				a.name("_HID", a.eisaID("PNP0C02")),
				a.name("_UID", a.integer(0)),
				a.name("_CRS", a.resourceTemplate(memory32Fixed(uint32(c.ECAMBase), uint32(ECAMSize)))),
			),
			pvpanicDevice(&a, c.PVPanicPort),
		),
	)
	if err := a.err(); err != nil {
		return nil, err
	}
	return table("DSDT", dsdtRevision, code), nil
}

// pvpanicDevice is the pvpanic device's AML, or nothing without a port.
func pvpanicDevice(a *aml, port uint16) []byte {
	if port == 0 {
		return nil
	}
	return a.device("PEVT",
		a.name("_HID", a.str("QEMU0001")),
		a.name("_UID", a.integer(0)),
		a.method("_STA", 0, a.ret(a.integer(staPresent))),
		a.name("_CRS", a.resourceTemplate(ioPort(port, port, 1, 1))),
	)
}

// mmioWindows is [MMIO32Start, MMIO32End) with ECAM cut out: zero, one or
// two [start, end) ranges.
func mmioWindows(c Config) ([][2]uint64, error) {
	ecamEnd := c.ECAMBase + ECAMSize
	var out [][2]uint64
	if c.ECAMBase > c.MMIO32Start {
		out = append(out, [2]uint64{c.MMIO32Start, min(c.ECAMBase, c.MMIO32End)})
	}
	if ecamEnd < c.MMIO32End {
		out = append(out, [2]uint64{max(ecamEnd, c.MMIO32Start), c.MMIO32End})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("32-bit MMIO window [%#x, %#x) lies entirely inside ECAM: %w", c.MMIO32Start, c.MMIO32End, ErrConfig)
	}
	return out, nil
}
