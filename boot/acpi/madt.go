package acpi

import "encoding/binary"

// MADT, signature "APIC" (ACPI 6.5, 5.2.12).
const (
	madtFlagPCATCompat = 1 << 0 // dual 8259s are present too (KVM's irqchip has them)

	// Interrupt controller structure types and lengths.
	madtLocalAPIC        = 0
	madtLocalAPICLen     = 8
	madtIOAPIC           = 1
	madtIOAPICLen        = 12
	madtSourceOverride   = 2
	madtSourceOverLen    = 10
	madtLocalAPICNMI     = 4
	madtLocalAPICNMILen  = 6
	madtLAPICEnabled     = 1 << 0
	madtAllProcessors    = 0xff // Local APIC NMI: applies to every processor
	madtISABus           = 0
	madtIntiConforming   = 0 // MPS INTI flags: polarity and trigger as the bus defines
	madtIntiActiveHigh   = 1 << 0
	madtIntiLevelTrigger = 3 << 2
	timerIRQ             = 0
	timerGSI             = 2 // the PIT is wired to IOAPIC pin 2, as on every PC
	lint1                = 1
)

// buildMADT lists one enabled Local APIC per vCPU (APIC ID = processor UID =
// index), one IOAPIC with ID = CPUs at IOAPICAddr serving GSIs from 0, the
// IRQ0 -> GSI2 override for the timer, the SCI as level/active-high IRQ 9,
// and NMI on every CPU's LINT1.
func buildMADT(c Config) []byte {
	le := binary.LittleEndian
	body := le.AppendUint32(nil, LAPICAddr)
	body = le.AppendUint32(body, madtFlagPCATCompat)
	for i := range c.CPUs {
		body = append(body, madtLocalAPIC, madtLocalAPICLen, byte(i), byte(i))
		body = le.AppendUint32(body, madtLAPICEnabled)
	}
	body = append(body, madtIOAPIC, madtIOAPICLen, byte(c.CPUs), 0)
	body = le.AppendUint32(body, IOAPICAddr)
	body = le.AppendUint32(body, 0) // global system interrupt base
	for _, o := range []struct {
		irq   uint8
		gsi   uint32
		flags uint16
	}{
		{timerIRQ, timerGSI, madtIntiConforming},
		{SCIIRQ, SCIIRQ, madtIntiActiveHigh | madtIntiLevelTrigger},
	} {
		body = append(body, madtSourceOverride, madtSourceOverLen, madtISABus, o.irq)
		body = le.AppendUint32(body, o.gsi)
		body = le.AppendUint16(body, o.flags)
	}
	body = append(body, madtLocalAPICNMI, madtLocalAPICNMILen, madtAllProcessors)
	body = le.AppendUint16(body, madtIntiConforming)
	body = append(body, lint1)
	return table("APIC", madtRevision, body)
}
