// Package mptable builds an Intel MultiProcessor Specification 1.4 table:
// how a kernel without ACPI (or booted with acpi=off) finds its CPUs, its
// IOAPIC and how ISA interrupts reach it.
package mptable

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Placement and limits.
const (
	// DefaultAddr is the start of the EBDA (639 KiB), one of the places
	// Linux scans for the floating pointer (arch/x86/kernel/mpparse.c).
	// The configuration table follows the floating pointer; with many
	// CPUs it runs past the EBDA into the legacy video hole below
	// 0xe0000, which the memory map does not offer as RAM either.
	DefaultAddr uint64 = 0x9fc00
	// Limit is where the table must end: the ACPI tables start there.
	Limit uint64 = 0xe0000

	// MaxCPUs: APIC IDs are 8 bits, 0xff is broadcast, and the IOAPIC
	// takes the ID after the last CPU.
	MaxCPUs = 254

	// IOAPICAddr and LAPICAddr are the architectural defaults.
	IOAPICAddr uint32 = 0xfec0_0000
	LAPICAddr  uint32 = 0xfee0_0000
)

// ErrTooManyCPUs reports a CPU count the table cannot describe.
var ErrTooManyCPUs = errors.New("CPU count out of range for the MP table")

// Structure sizes, types and flags (MP spec 1.4, chapter 4).
const (
	floatingSize    = 16
	headerSize      = 44
	processorSize   = 20
	entrySize       = 8 // bus, IOAPIC, interrupt assignment entries
	specRev         = 4 // MP spec 1.4
	floatingSig     = "_MP_"
	configSig       = "PCMP"
	oemID           = "WISP    "     // 8 bytes
	productID       = "WISPVM      " // 12 bytes
	floatingLength  = 1              // in 16-byte paragraphs
	floatingSumOff  = 10
	headerLengthOff = 4
	headerSumOff    = 7
	headerCountOff  = 34

	entryProcessor = 0
	entryBus       = 1
	entryIOAPIC    = 2
	entryIOInt     = 3
	entryLocalInt  = 4

	cpuEnabled       = 1 << 0
	cpuBootProcessor = 1 << 1
	// cpuSignature is family 6 (the signature only informs; Linux reads
	// CPUID itself) and cpuFeatures has FPU and APIC (CPUID.1:EDX bits 0, 9).
	cpuSignature = 0x600
	cpuFeatures  = 1<<0 | 1<<9
	lapicVersion = 0x14 // integrated APIC
	ioapicVer    = 0x11 // 82093AA-compatible IOAPIC
	ioapicUsable = 1

	intINT    = 0 // vectored interrupt through the IOAPIC
	intNMI    = 1
	intExtINT = 3 // 8259-compatible, from the PIC

	intFlagsConforming = 0 // polarity and trigger as the bus defines (ISA: edge, high)
	isaBusID           = 0
	allLAPICs          = 0xff
	isaIRQs            = 16
	timerIRQ           = 0
	timerPin           = 2 // the PIT reaches IOAPIC pin 2, as on every PC
	cascadeIRQ         = 2 // the slave 8259's cascade: no ISA device
)

// Size is the number of bytes the floating pointer and configuration table
// take for cpus CPUs.
func Size(cpus int) uint64 {
	return floatingSize + headerSize + uint64(cpus)*processorSize + entrySize*(2+isaIRQs+2)
}

// Memory is where the table is written (boot.Memory and vmm/memory.Memory
// satisfy it).
type Memory interface {
	WriteAt(p []byte, gpa uint64) error
}

// Write builds the table for cpus CPUs at DefaultAddr and writes it,
// returning the floating pointer's address.
func Write(mem Memory, cpus int) (uint64, error) {
	b, err := Build(cpus, DefaultAddr)
	if err != nil {
		return 0, err
	}
	if end := DefaultAddr + uint64(len(b)); end > Limit {
		return 0, fmt.Errorf("MP table [%#x, %#x) runs past %#x: %w", DefaultAddr, end, Limit, ErrTooManyCPUs)
	}
	if err := mem.WriteAt(b, DefaultAddr); err != nil {
		return 0, fmt.Errorf("write MP table at %#x: %w", DefaultAddr, err)
	}
	return DefaultAddr, nil
}

// Build returns the floating pointer at addr (16-byte aligned) followed by
// the configuration table:
//
//   - one processor entry per CPU, APIC ID = index, CPU 0 the boot processor;
//   - bus 0, ISA;
//   - one IOAPIC, ID = cpus, at IOAPICAddr;
//   - the 8259's ExtINT on IOAPIC pin 0, ISA IRQ 0 on pin 2, every other
//     ISA IRQ n but the cascade (2) on pin n, all bus-conforming;
//   - ExtINT on every local APIC's LINT0 and NMI on LINT1.
func Build(cpus int, addr uint64) ([]byte, error) {
	if cpus < 1 || cpus > MaxCPUs {
		return nil, fmt.Errorf("%d CPUs (want 1..%d): %w", cpus, MaxCPUs, ErrTooManyCPUs)
	}
	if addr%16 != 0 || addr+Size(cpus) > 1<<32 {
		return nil, fmt.Errorf("MP table at %#x: want 16-byte aligned and below 4 GiB", addr)
	}
	le := binary.LittleEndian
	ioapicID := byte(cpus)

	var entries []byte
	count := 0
	add := func(e []byte) { entries = append(entries, e...); count++ }
	for i := range cpus {
		e := []byte{entryProcessor, byte(i), lapicVersion, cpuEnabled}
		if i == 0 {
			e[3] |= cpuBootProcessor
		}
		e = le.AppendUint32(e, cpuSignature)
		e = le.AppendUint32(e, cpuFeatures)
		add(append(e, make([]byte, 8)...)) // reserved
	}
	add(append([]byte{entryBus, isaBusID}, "ISA   "...))
	add(le.AppendUint32([]byte{entryIOAPIC, ioapicID, ioapicVer, ioapicUsable}, IOAPICAddr))
	ioInt := func(typ byte, irq, pin byte) []byte {
		e := []byte{entryIOInt, typ}
		e = le.AppendUint16(e, intFlagsConforming)
		return append(e, isaBusID, irq, ioapicID, pin)
	}
	add(ioInt(intExtINT, 0, 0))
	for irq := byte(0); irq < isaIRQs; irq++ {
		switch irq {
		case cascadeIRQ:
			continue
		case timerIRQ:
			add(ioInt(intINT, irq, timerPin))
		default:
			add(ioInt(intINT, irq, irq))
		}
	}
	localInt := func(typ, lint byte) []byte {
		e := []byte{entryLocalInt, typ}
		e = le.AppendUint16(e, intFlagsConforming)
		return append(e, isaBusID, 0, allLAPICs, lint)
	}
	add(localInt(intExtINT, 0))
	add(localInt(intNMI, 1))

	configAddr := addr + floatingSize
	hdr := make([]byte, headerSize)
	copy(hdr[0:4], configSig)
	le.PutUint16(hdr[headerLengthOff:], uint16(headerSize+len(entries)))
	hdr[6] = specRev
	copy(hdr[8:16], oemID)
	copy(hdr[16:28], productID)
	le.PutUint16(hdr[headerCountOff:], uint16(count))
	le.PutUint32(hdr[36:], LAPICAddr)
	config := append(hdr, entries...)
	config[headerSumOff] = checksum(config)

	fp := make([]byte, floatingSize)
	copy(fp[0:4], floatingSig)
	le.PutUint32(fp[4:], uint32(configAddr))
	fp[8] = floatingLength
	fp[9] = specRev
	// Feature bytes 1-5 stay zero: a configuration table is present, and
	// the IMCR is absent (virtual wire mode).
	fp[floatingSumOff] = checksum(fp)

	out := append(fp, config...)
	if uint64(len(out)) != Size(cpus) {
		return nil, fmt.Errorf("MP table is %d bytes, expected %d", len(out), Size(cpus))
	}
	return out, nil
}

// checksum returns the byte that makes b (with that byte zero) sum to zero.
func checksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}
