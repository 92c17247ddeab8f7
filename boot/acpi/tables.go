package acpi

import (
	"encoding/binary"
	"fmt"
)

// Identification every table carries (ACPI 6.5, 5.2.6 System Description
// Table Header).
const (
	headerSize  = 36
	oemID       = "WISP  "   // 6 bytes
	oemTableID  = "WISPVM  " // 8 bytes
	oemRevision = 1
	creatorID   = "WISP"
	creatorRev  = 1

	// Header field offsets.
	hdrLengthOff   = 4
	hdrChecksumOff = 9
)

// Table revisions, ACPI 6.3 level: iasl from Debian 12 (20200925) knows
// every field of these.
const (
	rsdpRevision      = 2 // ACPI 2.0+ RSDP with XSDT address
	xsdtRevision      = 1
	rsdtRevision      = 1
	fadtRevision      = 6
	fadtMinorRevision = 3
	madtRevision      = 5
	mcfgRevision      = 1
	dsdtRevision      = 2 // 2+: AML integers are 64-bit
	facsVersion       = 2
)

// table assembles a system description table: header, then body, with the
// length and checksum filled in.
func table(signature string, revision uint8, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	copy(b[0:4], signature)
	b[8] = revision
	copy(b[10:16], oemID)
	copy(b[16:24], oemTableID)
	binary.LittleEndian.PutUint32(b[24:], oemRevision)
	copy(b[28:32], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRev)
	b = append(b, body...)
	binary.LittleEndian.PutUint32(b[hdrLengthOff:], uint32(len(b)))
	b[hdrChecksumOff] = checksum(b)
	return b
}

// checksum returns the byte that makes b (with that byte zero) sum to zero.
func checksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

// RSDP (ACPI 6.5, 5.2.5.3).
const (
	rsdpSize        = 36
	rsdpV1Size      = 20 // the checksum covers these; the extended one all 36
	rsdpSignature   = "RSD PTR "
	rsdpChecksumOff = 8
	rsdpExtSumOff   = 32
)

func buildRSDP(rsdt, xsdt uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b[0:8], rsdpSignature)
	copy(b[9:15], oemID)
	b[15] = rsdpRevision
	binary.LittleEndian.PutUint32(b[16:], uint32(rsdt))
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[rsdpChecksumOff] = checksum(b[:rsdpV1Size])
	b[rsdpExtSumOff] = checksum(b)
	return b
}

// buildXSDT lists tables by 64-bit address (5.2.8); buildRSDT by 32-bit
// address (5.2.7) for ACPI 1.0 readers. All tables sit below 1 MiB.
func buildXSDT(entries []uint64) []byte {
	var body []byte
	for _, e := range entries {
		body = binary.LittleEndian.AppendUint64(body, e)
	}
	return table("XSDT", xsdtRevision, body)
}

func buildRSDT(entries []uint64) []byte {
	var body []byte
	for _, e := range entries {
		body = binary.LittleEndian.AppendUint32(body, uint32(e))
	}
	return table("RSDT", rsdtRevision, body)
}

// FACS (5.2.10): required when the platform is not hardware-reduced. wisp
// has no firmware waking vector or global lock users, so it is all zeros
// past the signature, length and version. It has no checksum.
const (
	facsSize  = 64
	facsAlign = 64
)

func buildFACS() []byte {
	b := make([]byte, facsSize)
	copy(b[0:4], "FACS")
	binary.LittleEndian.PutUint32(b[4:], facsSize)
	b[32] = facsVersion
	return b
}

// MCFG (PCI Firmware Specification 3.2, 4.1.2): one ECAM window for
// segment 0, buses 0..0.
func buildMCFG(c Config) []byte {
	body := make([]byte, 8+16) // 8 reserved bytes, one allocation entry
	e := body[8:]
	binary.LittleEndian.PutUint64(e[0:], c.ECAMBase)
	binary.LittleEndian.PutUint16(e[8:], 0) // PCI segment group
	e[10], e[11] = 0, 0                     // start and end bus
	return table("MCFG", mcfgRevision, body)
}

// Build lays out every table from DefaultAddr and returns them with their
// addresses and checksums filled in.
func Build(cfg Config) (*Tables, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, err
	}
	madt := buildMADT(cfg)
	mcfg := buildMCFG(cfg)
	facs := buildFACS()

	// Sizes are known before contents, so addresses come first; then the
	// tables that point at others are built.
	const nEntries = 3 // FADT, MADT, MCFG
	next := DefaultAddr
	alloc := func(size int, align uint64) uint64 {
		addr := (next + align - 1) &^ (align - 1)
		next = addr + uint64(size)
		return addr
	}
	rsdpAddr := alloc(rsdpSize, 16)
	xsdtAddr := alloc(headerSize+8*nEntries, 16)
	rsdtAddr := alloc(headerSize+4*nEntries, 16)
	fadtAddr := alloc(fadtSize, 16)
	facsAddr := alloc(facsSize, facsAlign)
	dsdtAddr := alloc(len(dsdt), 16)
	madtAddr := alloc(len(madt), 16)
	mcfgAddr := alloc(len(mcfg), 16)
	if next > RegionEnd {
		return nil, fmt.Errorf("tables need [%#x, %#x), past %#x: %w", DefaultAddr, next, RegionEnd, ErrConfig)
	}
	entries := []uint64{fadtAddr, madtAddr, mcfgAddr}
	return &Tables{
		RSDP: rsdpAddr,
		Tables: []Table{
			{rsdpSignature, rsdpAddr, buildRSDP(rsdtAddr, xsdtAddr)},
			{"XSDT", xsdtAddr, buildXSDT(entries)},
			{"RSDT", rsdtAddr, buildRSDT(entries)},
			{"FACP", fadtAddr, buildFADT(cfg, dsdtAddr, facsAddr)},
			{"FACS", facsAddr, facs},
			{"DSDT", dsdtAddr, dsdt},
			{"APIC", madtAddr, madt},
			{"MCFG", mcfgAddr, mcfg},
		},
	}, nil
}
