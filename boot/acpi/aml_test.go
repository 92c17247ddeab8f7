package acpi

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPkgLength(t *testing.T) {
	tests := []struct {
		content int
		want    []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},                      // 63 total: the one-byte maximum
		{63, []byte{0x40 | 0x1, 0x04}},          // 65 total = 0x041
		{0xffd, []byte{0x4f, 0xff}},             // 0xfff total: the two-byte maximum
		{0xffe, []byte{0x80 | 0x1, 0x00, 0x01}}, // 0x1001 total
		{0xffffc, []byte{0x8f, 0xff, 0xff}},     // 0xfffff total: the three-byte maximum
		{0xffffd, []byte{0xc1, 0x00, 0x00, 0x01}},
	}
	for _, tt := range tests {
		var a aml
		assert.Equal(t, tt.want, a.pkgLength(tt.content), "content %#x", tt.content)
		require.NoError(t, a.err())
	}
	var a aml
	a.pkgLength(amlMaxPkgLength)
	assert.Error(t, a.err(), "a package past 28 bits must be refused")
}

func TestNameString(t *testing.T) {
	tests := []struct {
		path string
		want []byte
	}{
		{"_HID", []byte("_HID")},
		{"_S5", []byte("_S5_")},
		{`\_SB`, []byte(`\_SB_`)},
		{`\_SB.PCI0`, append([]byte{'\\', amlDualNamePrefix}, "_SB_PCI0"...)},
		{"^FOO", []byte("^FOO_")},
		{`\_SB.PCI0.COM1`, append([]byte{'\\', amlMultiNamePref, 3}, "_SB_PCI0COM1"...)},
		{`\`, []byte{'\\', amlNullName}},
	}
	for _, tt := range tests {
		var a aml
		assert.Equal(t, tt.want, a.nameString(tt.path), tt.path)
		require.NoError(t, a.err(), tt.path)
	}
	for _, bad := range []string{"TOOLONG", "a", "1ABC", "_SB.", "A-B"} {
		var a aml
		a.nameString(bad)
		assert.Error(t, a.err(), "name %q must be refused", bad)
	}
}

func TestIntegerEncoding(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{amlZeroOp}},
		{1, []byte{amlOneOp}},
		{5, []byte{amlBytePrefix, 5}},
		{0x3f8, []byte{amlWordPrefix, 0xf8, 0x03}},
		{0x12345678, []byte{amlDWordPrefix, 0x78, 0x56, 0x34, 0x12}},
		{1 << 32, []byte{amlQWordPrefix, 0, 0, 0, 0, 1, 0, 0, 0}},
	}
	for _, tt := range tests {
		var a aml
		assert.Equal(t, tt.want, a.integer(tt.v), "%#x", tt.v)
	}
}

func TestEISAID(t *testing.T) {
	// Values as ASL compilers produce them for EisaId().
	tests := []struct {
		id   string
		want uint32
	}{
		{"PNP0A03", 0x030ad041},
		{"PNP0A08", 0x080ad041},
		{"PNP0501", 0x0105d041},
		{"PNP0C02", 0x020cd041},
	}
	for _, tt := range tests {
		var a aml
		got := a.eisaID(tt.id)
		require.NoError(t, a.err())
		assert.Equal(t, []byte{amlDWordPrefix, byte(tt.want), byte(tt.want >> 8), byte(tt.want >> 16), byte(tt.want >> 24)}, got, tt.id)
	}
	for _, bad := range []string{"PNP050", "pnp0501", "PNP050G", "1NP0501"} {
		var a aml
		a.eisaID(bad)
		assert.Error(t, a.err(), bad)
	}
}

func TestPackageAndMethod(t *testing.T) {
	var a aml
	assert.Equal(t,
		[]byte{amlNameOp, '_', 'S', '5', '_', amlPackageOp, 0x08, 4, amlBytePrefix, 5, amlBytePrefix, 5, amlZeroOp, amlZeroOp},
		a.name("_S5", a.pkg(a.integer(5), a.integer(5), a.integer(0), a.integer(0))))
	assert.Equal(t,
		[]byte{amlMethodOp, 0x09, '_', 'S', 'T', 'A', 0, amlReturnOp, amlBytePrefix, 0x0f},
		a.method("_STA", 0, a.ret(a.integer(0x0f))))
	require.NoError(t, a.err())
}
