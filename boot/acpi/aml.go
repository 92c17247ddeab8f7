package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A small AML encoder: just the terms the DSDT needs. References are to the
// ACPI specification 6.5, chapter 20 ("ACPI Machine Language (AML)
// Specification") and section 6.4 ("Resource Data Types for ACPI").
//
// Encoding errors (a malformed name, an oversized package) are kept in the
// encoder and reported once by err(), so table builders read as a tree of
// terms rather than a ladder of error checks.

// AML opcodes and prefixes (ACPI 6.5, 20.3).
const (
	amlZeroOp         = 0x00
	amlOneOp          = 0x01
	amlNameOp         = 0x08
	amlBytePrefix     = 0x0a
	amlWordPrefix     = 0x0b
	amlDWordPrefix    = 0x0c
	amlQWordPrefix    = 0x0e
	amlScopeOp        = 0x10
	amlBufferOp       = 0x11
	amlPackageOp      = 0x12
	amlMethodOp       = 0x14
	amlDualNamePrefix = 0x2e
	amlMultiNamePref  = 0x2f
	amlExtOpPrefix    = 0x5b
	amlDeviceOp       = 0x82 // after amlExtOpPrefix
	amlRootChar       = '\\'
	amlParentPrefix   = '^'
	amlReturnOp       = 0xa4
	amlStringPrefix   = 0x0d
	amlNullName       = 0x00

	// amlMaxPkgLength is the largest PkgLength: 28 bits.
	amlMaxPkgLength = 1<<28 - 1
)

// aml accumulates the first encoding error.
type aml struct{ firstErr error }

func (a *aml) fail(format string, args ...any) []byte {
	if a.firstErr == nil {
		a.firstErr = fmt.Errorf("AML: "+format, args...)
	}
	return nil
}

func (a *aml) err() error { return a.firstErr }

// pkgLength encodes a PkgLength for contentLen bytes of content (ACPI 6.5,
// 20.2.4). The encoded length counts the PkgLength bytes themselves: one
// byte holds up to 63; otherwise the lead byte's bits 7:6 give the count of
// following bytes, its bits 3:0 the low nibble, the following bytes the rest.
func (a *aml) pkgLength(contentLen int) []byte {
	if contentLen+1 <= 0x3f {
		return []byte{byte(contentLen + 1)}
	}
	for extra := 1; extra <= 3; extra++ {
		total := contentLen + 1 + extra
		if total < 1<<(4+8*extra) {
			out := []byte{byte(extra<<6) | byte(total&0xf)}
			for i := range extra {
				out = append(out, byte(total>>(4+8*i)))
			}
			return out
		}
	}
	return a.fail("package of %d bytes exceeds the PkgLength limit %d", contentLen, amlMaxPkgLength)
}

// nameSeg encodes one 4-character NameSeg, padding with '_' (ACPI 6.5,
// 20.2.2: a lead character A-Z or '_', then A-Z, 0-9 or '_').
func (a *aml) nameSeg(seg string) []byte {
	if len(seg) == 0 || len(seg) > 4 {
		return a.fail("name segment %q is not 1 to 4 characters", seg)
	}
	for i, c := range []byte(seg) {
		lead := c == '_' || (c >= 'A' && c <= 'Z')
		if !lead && !(i > 0 && c >= '0' && c <= '9') {
			return a.fail("name segment %q has invalid character %q", seg, c)
		}
	}
	return []byte(seg + strings.Repeat("_", 4-len(seg)))
}

// nameString encodes a NameString such as "_HID", "\\_SB.PCI0" or "^FOO".
func (a *aml) nameString(path string) []byte {
	var out []byte
	switch {
	case strings.HasPrefix(path, `\`):
		out = append(out, amlRootChar)
		path = path[1:]
	default:
		for strings.HasPrefix(path, "^") {
			out = append(out, amlParentPrefix)
			path = path[1:]
		}
	}
	if path == "" {
		return append(out, amlNullName)
	}
	segs := strings.Split(path, ".")
	switch {
	case len(segs) == 2:
		out = append(out, amlDualNamePrefix)
	case len(segs) > 2 && len(segs) <= 255:
		out = append(out, amlMultiNamePref, byte(len(segs)))
	case len(segs) > 255:
		return a.fail("name %q has more than 255 segments", path)
	}
	for _, s := range segs {
		out = append(out, a.nameSeg(s)...)
	}
	return out
}

// integer encodes v in the shortest form (ACPI 6.5, 20.2.3 ComputationalData).
func (a *aml) integer(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffff_ffff:
		return a.dword(uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// dword encodes v as a DWordConst whatever its value, as ASL compilers do
// for EisaId.
func (a *aml) dword(v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, v)
}

// eisaID encodes a 7-character PNP ID such as "PNP0A08" as the 32-bit
// compressed EISA ID: three letters of 5 bits each (A = 1) then four hex
// digits, stored big-endian in the DWord's bytes (ACPI 6.5, 19.6.35 EISAID).
func (a *aml) eisaID(id string) []byte {
	if len(id) != 7 {
		return a.fail("EISA ID %q is not 7 characters", id)
	}
	var v uint32
	for _, c := range []byte(id[:3]) {
		if c < 'A' || c > 'Z' {
			return a.fail("EISA ID %q: vendor must be 3 capital letters", id)
		}
		v = v<<5 | uint32(c-'@')
	}
	for _, c := range []byte(id[3:]) {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return a.fail("EISA ID %q: product must be 4 hex digits", id)
		}
		v = v<<4 | uint32(d)
	}
	// The 16-bit vendor is bits 31:16 of v; bytes in memory are v's bytes
	// from most to least significant.
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return a.dword(binary.LittleEndian.Uint32(b[:]))
}

// withPkgLength wraps content in op, a PkgLength, then content.
func (a *aml) withPkgLength(op []byte, content []byte) []byte {
	out := append([]byte(nil), op...)
	out = append(out, a.pkgLength(len(content))...)
	return append(out, content...)
}

// name encodes Name(path, object).
func (a *aml) name(path string, object []byte) []byte {
	out := append([]byte{amlNameOp}, a.nameString(path)...)
	return append(out, object...)
}

// pkg encodes Package(){elements} (ACPI 6.5, 20.2.5.4 DefPackage).
func (a *aml) pkg(elements ...[]byte) []byte {
	if len(elements) > 255 {
		return a.fail("package of %d elements exceeds 255", len(elements))
	}
	content := []byte{byte(len(elements))}
	for _, e := range elements {
		content = append(content, e...)
	}
	return a.withPkgLength([]byte{amlPackageOp}, content)
}

// buffer encodes Buffer(){data}.
func (a *aml) buffer(data []byte) []byte {
	content := append(a.integer(uint64(len(data))), data...)
	return a.withPkgLength([]byte{amlBufferOp}, content)
}

// scope encodes Scope(path){terms}.
func (a *aml) scope(path string, terms ...[]byte) []byte {
	return a.withPkgLength([]byte{amlScopeOp}, concat(a.nameString(path), terms...))
}

// device encodes Device(path){terms}.
func (a *aml) device(path string, terms ...[]byte) []byte {
	return a.withPkgLength([]byte{amlExtOpPrefix, amlDeviceOp}, concat(a.nameString(path), terms...))
}

// method encodes Method(path, args, NotSerialized){terms}.
func (a *aml) method(path string, args int, terms ...[]byte) []byte {
	if args < 0 || args > 7 {
		return a.fail("method %s with %d arguments (0..7)", path, args)
	}
	head := append(a.nameString(path), byte(args)) // MethodFlags: arg count, not serialized, sync level 0
	return a.withPkgLength([]byte{amlMethodOp}, concat(head, terms...))
}

// ret encodes Return(value).
// str encodes an ASCII string constant (StringPrefix AsciiCharList
// NullChar); _HIDs that are not EISA IDs, such as "QEMU0001", are strings.
func (a *aml) str(s string) []byte {
	for _, c := range []byte(s) {
		if c == 0 || c > 0x7f {
			return a.fail("AML string %q: want 7-bit ASCII without NUL", s)
		}
	}
	return append(append([]byte{amlStringPrefix}, s...), 0)
}

func (a *aml) ret(value []byte) []byte { return append([]byte{amlReturnOp}, value...) }

func concat(head []byte, rest ...[]byte) []byte {
	out := append([]byte(nil), head...)
	for _, r := range rest {
		out = append(out, r...)
	}
	return out
}
