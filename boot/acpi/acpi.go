// Package acpi builds the ACPI tables wisp's x86-64 guests boot with: RSDP,
// XSDT/RSDT, FADT (full, not hardware-reduced: PM1a event and control blocks
// and a reset register), FACS, MADT, MCFG and a DSDT written in AML by the
// small encoder in aml.go. Layouts follow the ACPI specification 6.5
// (chapter 5, "ACPI Software Programming Model").
package acpi

import (
	"errors"
	"fmt"
)

// Defaults and fixed platform addresses.
const (
	// DefaultAddr is where the RSDP goes, with the other tables after it:
	// the BIOS area Linux scans for "RSD PTR " (0xe0000..0xfffff, ACPI
	// 6.5, 5.2.5.1).
	DefaultAddr uint64 = 0xe0000
	// RegionEnd bounds the tables: the BIOS area ends at 1 MiB.
	RegionEnd uint64 = 0x100000

	DefaultPM1aEventPort   uint16 = 0x600 // 4 bytes: PM1 status, PM1 enable
	DefaultPM1aControlPort uint16 = 0x604 // 2 bytes: PM1 control (SLP_TYP, SLP_EN)
	pm1EventLen                   = 4
	pm1ControlLen                 = 2
	pmTimerLen                    = 4

	// DefaultECAMBase is the PCI Express enhanced configuration space.
	DefaultECAMBase uint64 = 0xe800_0000
	// ECAMSize covers bus 0 only: 32 devices x 8 functions x 4 KiB.
	ECAMSize uint64 = 1 << 20

	// DefaultMMIO32Start and DefaultMMIO32End (exclusive) bound the
	// 32-bit PCI MMIO window: from the 3 GiB hole start up to the IOAPIC.
	DefaultMMIO32Start uint64 = 0xc000_0000
	DefaultMMIO32End   uint64 = 0xfec0_0000

	// IOAPICAddr and LAPICAddr are the architectural defaults.
	IOAPICAddr uint32 = 0xfec0_0000
	LAPICAddr  uint32 = 0xfee0_0000

	// SCIIRQ is the ACPI system control interrupt: ISA IRQ 9, level
	// triggered, active high, as on PIIX4-style chipsets.
	SCIIRQ = 9

	// ResetPort and ResetValue make up the FADT reset register: writing
	// 0xfe to the i8042 command port pulses the CPU reset line.
	ResetPort  = 0x64
	ResetValue = 0xfe

	// SleepTypeS5 is the SLP_TYP value in \_S5: a guest powers off by
	// writing SleepTypeS5<<10 | 1<<13 (SLP_EN) to PM1a_CNT.
	SleepTypeS5 = 5

	// MaxCPUs: xAPIC IDs are 8 bits, 0xff is broadcast, and the IOAPIC
	// takes the ID after the last CPU.
	MaxCPUs = 254
)

// ErrConfig reports an invalid Config; test with errors.Is.
var ErrConfig = errors.New("invalid ACPI configuration")

// Config describes the platform the tables advertise. Zero fields take the
// defaults above.
type Config struct {
	// CPUs is the number of vCPUs (1..MaxCPUs), APIC IDs 0..CPUs-1.
	CPUs int
	// PM1aEventPort and PM1aControlPort are the I/O ports of the PM1a
	// event block (4 bytes) and control block (2 bytes).
	PM1aEventPort   uint16
	PM1aControlPort uint16
	// PMTimerPort is the I/O port of a 4-byte ACPI PM timer (3.579545 MHz);
	// 0 means the platform has none. ACPICA then logs once that the
	// FADT's PmTimerBlock is missing, and Linux uses other clocks.
	PMTimerPort uint16
	// ECAMBase is the base of PCI ECAM for bus 0 (ECAMSize bytes, 1 MiB
	// aligned).
	ECAMBase uint64
	// MMIO32Start and MMIO32End (exclusive) bound the host bridge's 32-bit
	// MMIO window; ECAM is cut out of it.
	MMIO32Start uint64
	MMIO32End   uint64
	// PVPanicPort is the I/O port of a pvpanic device (QEMU0001), 0 for
	// none.
	PVPanicPort uint16
	// I8042 tells the guest an i8042 keyboard controller exists
	// (IAPC_BOOT_ARCH 8042 flag); without it Linux skips probing one.
	// The reset register at port 0x64 is advertised either way.
	I8042 bool
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.PM1aEventPort == 0 {
		c.PM1aEventPort = DefaultPM1aEventPort
	}
	if c.PM1aControlPort == 0 {
		c.PM1aControlPort = DefaultPM1aControlPort
	}
	if c.ECAMBase == 0 {
		c.ECAMBase = DefaultECAMBase
	}
	if c.MMIO32Start == 0 {
		c.MMIO32Start = DefaultMMIO32Start
	}
	if c.MMIO32End == 0 {
		c.MMIO32End = DefaultMMIO32End
	}
	return c
}

func (c Config) validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("%d CPUs (want 1..%d): %w", c.CPUs, MaxCPUs, ErrConfig)
	}
	type portRange struct {
		name string
		base uint16
		size int
	}
	ports := []portRange{{"PM1a event block", c.PM1aEventPort, pm1EventLen}, {"PM1a control block", c.PM1aControlPort, pm1ControlLen}}
	if c.PMTimerPort != 0 {
		ports = append(ports, portRange{"PM timer", c.PMTimerPort, pmTimerLen})
	}
	for i, p := range ports {
		if int(p.base)+p.size > 0x10000 {
			return fmt.Errorf("%s at port %#x runs past 0xffff: %w", p.name, p.base, ErrConfig)
		}
		for _, q := range ports[:i] {
			if int(p.base) < int(q.base)+q.size && int(q.base) < int(p.base)+p.size {
				return fmt.Errorf("%s at port %#x overlaps %s at %#x: %w", p.name, p.base, q.name, q.base, ErrConfig)
			}
		}
	}
	if c.ECAMBase%ECAMSize != 0 || c.ECAMBase+ECAMSize > 1<<32 {
		return fmt.Errorf("ECAM base %#x: want 1 MiB aligned and below 4 GiB: %w", c.ECAMBase, ErrConfig)
	}
	if c.MMIO32Start >= c.MMIO32End || c.MMIO32End > 1<<32 {
		return fmt.Errorf("32-bit MMIO window [%#x, %#x): want a non-empty range below 4 GiB: %w", c.MMIO32Start, c.MMIO32End, ErrConfig)
	}
	return nil
}

// Memory is where the tables are written (boot.Memory and
// vmm/memory.Memory satisfy it).
type Memory interface {
	WriteAt(p []byte, gpa uint64) error
}

// Table is one ACPI table (or the RSDP) at its guest-physical address.
type Table struct {
	Signature string
	Addr      uint64
	Data      []byte
}

// Tables is the full set, laid out from DefaultAddr.
type Tables struct {
	// RSDP is the root pointer's address, for PVH's rsdp_paddr and the
	// zero page's acpi_rsdp_addr.
	RSDP uint64
	// Tables lists the RSDP and every table in address order.
	Tables []Table
}

// Find returns the table with the given signature ("RSD PTR " for the RSDP).
func (t *Tables) Find(signature string) (Table, bool) {
	for _, tb := range t.Tables {
		if tb.Signature == signature {
			return tb, true
		}
	}
	return Table{}, false
}

// Write builds the tables for cfg and writes them to mem, returning the
// RSDP's address.
func Write(mem Memory, cfg Config) (uint64, error) {
	t, err := Build(cfg)
	if err != nil {
		return 0, err
	}
	for _, tb := range t.Tables {
		if err := mem.WriteAt(tb.Data, tb.Addr); err != nil {
			return 0, fmt.Errorf("write %s at %#x: %w", tb.Signature, tb.Addr, err)
		}
	}
	return t.RSDP, nil
}
