package acpi

import "encoding/binary"

// Resource descriptors for _CRS buffers (ACPI 6.5, 6.4 "Resource Data Types
// for ACPI"). Small descriptors have a tag byte of type<<3 | length; large
// ones 0x80 | type followed by a 16-bit length.
const (
	resIRQTag          = 0x04<<3 | 2 // IRQ descriptor, no flags byte (6.4.2.1)
	resIOTag           = 0x08<<3 | 7 // I/O port descriptor (6.4.2.5)
	resEndTag          = 0x0f<<3 | 1 // end tag (6.4.2.9)
	resMemory32Fixed   = 0x86        // 32-bit fixed memory range (6.4.3.4)
	resDWordAddress    = 0x87        // DWord address space (6.4.3.5.2)
	resWordAddress     = 0x88        // Word address space (6.4.3.5.3)
	resDWordAddressLen = 23
	resWordAddressLen  = 13
	resMemory32FixLen  = 9

	// Address space resource types.
	resTypeMemory = 0
	resTypeIO     = 1
	resTypeBus    = 2

	// General flags: a bridge window with fixed bounds, positive decode,
	// produced (bit 0 clear) for the children.
	resFlagsProducerFixed = 1<<3 | 1<<2 // _MAF | _MIF

	// Type-specific flags.
	resIOEntireRange     = 3      // _RNG: ISA and non-ISA ranges
	resMemReadWrite      = 1 << 0 // _RW
	resMemNonCacheable   = 0 << 1 // _MEM
	resIODecode16        = 1      // I/O descriptor: decodes 16 address bits
	resMem32FixReadWrite = 1
)

// resourceTemplate encodes ResourceTemplate(){descs} as a Buffer, ending
// with an end tag whose checksum byte is 0 ("treat as valid").
func (a *aml) resourceTemplate(descs ...[]byte) []byte {
	data := concat(nil, descs...)
	return a.buffer(append(data, resEndTag, 0))
}

// ioPort is IO(Decode16, min, max, align, length).
func ioPort(minBase, maxBase uint16, align, length uint8) []byte {
	b := []byte{resIOTag, resIODecode16}
	b = binary.LittleEndian.AppendUint16(b, minBase)
	b = binary.LittleEndian.AppendUint16(b, maxBase)
	return append(b, align, length)
}

// irqNoFlags is IRQNoFlags(){irqs}: edge-triggered, active-high ISA IRQs.
func irqNoFlags(irqs ...uint8) []byte {
	var mask uint16
	for _, irq := range irqs {
		mask |= 1 << (irq & 0xf)
	}
	return binary.LittleEndian.AppendUint16([]byte{resIRQTag}, mask)
}

// wordWindow is a WordBusNumber or WordIO window [lo, hi] a bridge produces.
func wordWindow(resType, typeFlags uint8, lo, hi uint16) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resWordAddress}, resWordAddressLen)
	b = append(b, resType, resFlagsProducerFixed, typeFlags)
	for _, v := range []uint16{0, lo, hi, 0, hi - lo + 1} { // granularity, min, max, translation, length
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// dwordMemoryWindow is DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, NonCacheable, ReadWrite, 0, lo, hi, 0, hi-lo+1).
func dwordMemoryWindow(lo, hi uint32) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resDWordAddress}, resDWordAddressLen)
	b = append(b, resTypeMemory, resFlagsProducerFixed, resMemReadWrite|resMemNonCacheable)
	for _, v := range []uint32{0, lo, hi, 0, hi - lo + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// memory32Fixed is Memory32Fixed(ReadWrite, base, length).
func memory32Fixed(base, length uint32) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resMemory32Fixed}, resMemory32FixLen)
	b = append(b, resMem32FixReadWrite)
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, length)
}
