package acpi_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot/acpi"
)

// These tests check the tables with ACPICA's own tools from Debian's
// acpica-tools: iasl (disassembler and compiler) and acpiexec (the table
// loader and AML interpreter Linux shares).

func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("SKIP: %s not found (install Debian package acpica-tools): %v", name, err)
	}
	return path
}

// problems matches what ACPICA prints about a bad table.
var problems = regexp.MustCompile(`(?i)warning|error|incorrect|invalid|unknown`)

// disassemble runs iasl -d on one table and returns the .dsl text.
func disassemble(t *testing.T, iasl, dir string, tb acpi.Table) string {
	t.Helper()
	name := strings.TrimSpace(tb.Signature)
	file := filepath.Join(dir, name+".dat")
	require.NoError(t, os.WriteFile(file, tb.Data, 0o644))
	out, err := exec.Command(iasl, "-d", file).CombinedOutput()
	require.NoError(t, err, "iasl -d %s:\n%s", name, out)
	assert.NotRegexp(t, problems, string(out), "iasl -d %s complained", name)
	dsl, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
	require.NoError(t, err)
	assert.NotRegexp(t, problems, string(dsl), "%s disassembly flags a problem", name)
	return string(dsl)
}

func TestIASLDisassembly(t *testing.T) {
	iasl := lookTool(t, "iasl")
	const cpus = 5
	tables := build(t, acpi.Config{CPUs: cpus, PVPanicPort: 0x505})
	dsdt, _ := tables.Find("DSDT")
	facs, _ := tables.Find("FACS")

	tests := []struct {
		sig  string
		want []string // regular expressions the disassembly must match
	}{
		{"XSDT", []string{`ACPI Table Address   0 : 00000000000E....`, `ACPI Table Address   2 : `}},
		{"RSDT", []string{`ACPI Table Address   0 : 000E....`, `ACPI Table Address   2 : `}},
		{"FACP", []string{
			`Table Length : 00000114`,
			`Revision : 06`,
			`FADT Minor Revision : 03`,
			`SCI Interrupt : 0009`,
			`PM1A Event Block Address : 00000600`,
			`PM1A Control Block Address : 00000604`,
			`PM1 Event Block Length : 04`,
			`PM1 Control Block Length : 02`,
			`Reset Register Supported \(V2\) : 1`,
			`Hardware Reduced \(V5\) : 0`,
			`Power Button \(V1\) : 0`, // PM1's PWRBTN_STS is the button a graceful stop presses
			`Sleep Button \(V1\) : 1`,
			`Space ID : 01 \[SystemIO\]\s+\[075h 0117   1\]\s+Bit Width : 08`,
			`Address : 0000000000000064`,
			`Value to cause reset : FE`,
			fmt.Sprintf(`DSDT Address : %016X`, dsdt.Addr),
			fmt.Sprintf(`FACS Address : %016X`, facs.Addr),
		}},
		{"FACS", []string{`Signature : "FACS"`, `Length : 00000040`, `Version : 02`}},
		{"APIC", []string{
			`Local Apic Address : FEE00000`,
			`Subtable Type : 01 \[I/O APIC\]`,
			`I/O Apic ID : 05`,
			`Address : FEC00000`,
			`Source : 00\s+\[[^]]+\]\s+Interrupt : 00000002`,
			`Source : 09\s+\[[^]]+\]\s+Interrupt : 00000009\s+\[[^]]+\]\s+Flags \(decoded below\) : 000D\s+Polarity : 1\s+Trigger Mode : 3`,
			`Processor ID : FF[^[]+\[[^]]+\]\s+Flags[^\n]+\s+Polarity : 0\s+Trigger Mode : 0\s+\[[^]]+\]\s+Interrupt Input LINT : 01`,
			`Subtable Type : 04 \[Local APIC NMI\]`,
		}},
		{"MCFG", []string{`Base Address : 00000000E8000000`, `Start Bus Number : 00`, `End Bus Number : 00`}},
		{"DSDT", []string{
			`Name \(_S5, Package \(0x04\)[^{]*\{\s*0x05,\s*0x05,\s*Zero,\s*Zero\s*\}`,
			`Device \(COM1\)`, `EisaId \("PNP0501"\)`,
			`IO \(Decode16,\s*0x03F8,\s*0x03F8,\s*0x00,\s*0x08,`, `IRQNoFlags \(\)\s*\{4\}`,
			`Method \(_STA, 0, NotSerialized\)[^{]*\{\s*Return \(0x0F\)`,
			`Device \(PCI0\)`, `EisaId \("PNP0A08"\)`, `_CID, EisaId \("PNP0A03"\)`,
			`Name \(_SEG, Zero\)`, `Name \(_BBN, Zero\)`,
			`WordBusNumber \(ResourceProducer, MinFixed, MaxFixed, PosDecode,\s*0x0000,[^)]*0x0000,[^)]*0x0000,`,
			`IO \(Decode16,\s*0x0CF8,\s*0x0CF8,\s*0x01,\s*0x08,`,
			`WordIO \(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,\s*0x0000,\s*0x0D00,\s*0xFFFF,\s*0x0000,\s*0xF300,`,
			`DWordMemory \(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,\s*0x00000000,\s*0xC0000000,\s*0xE7FFFFFF,`,
			`DWordMemory \(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,\s*0x00000000,\s*0xE8100000,\s*0xFEBFFFFF,`,
			`EisaId \("PNP0C02"\)`, `Memory32Fixed \(ReadWrite,\s*0xE8000000,\s*0x00100000,`,
			`Device \(PEVT\)`, `Name \(_HID, "QEMU0001"\)`, `IO \(Decode16,\s*0x0505,\s*0x0505,\s*0x01,\s*0x01,`,
		}},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.sig, func(t *testing.T) {
			tb, ok := tables.Find(tt.sig)
			require.True(t, ok)
			dsl := disassemble(t, iasl, dir, tb)
			if tt.sig == "DSDT" {
				// ASL comments name each resource field; the
				// patterns match the values alone.
				dsl = regexp.MustCompile(`//[^\n]*`).ReplaceAllString(dsl, "")
			}
			for _, w := range tt.want {
				assert.Regexp(t, regexp.MustCompile(w), dsl)
			}
			if tt.sig == "APIC" {
				assert.Equal(t, cpus, strings.Count(dsl, "Subtable Type : 00 [Processor Local APIC]"), "one Local APIC per vCPU")
				assert.Equal(t, cpus, strings.Count(dsl, "Processor Enabled : 1"))
				assert.Equal(t, 2, strings.Count(dsl, "[Interrupt Source Override]"))
			}
		})
	}
}

// TestIASLRecompilesDSDT compiles the disassembled DSDT back with
// optimizations off: iasl must produce exactly the AML wisp wrote.
func TestIASLRecompilesDSDT(t *testing.T) {
	iasl := lookTool(t, "iasl")
	dir := t.TempDir()
	dsdt, _ := build(t, acpi.Config{CPUs: 1}).Find("DSDT")
	disassemble(t, iasl, dir, dsdt)
	out, err := exec.Command(iasl, "-oa", "-p", filepath.Join(dir, "again"), filepath.Join(dir, "DSDT.dsl")).CombinedOutput()
	require.NoError(t, err, "iasl:\n%s", out)
	assert.Contains(t, string(out), "0 Errors, 0 Warnings")
	again, err := os.ReadFile(filepath.Join(dir, "again.aml"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(dsdt.Data[36:], again[36:]), "iasl's AML differs from wisp's:\nwisp: %x\niasl: %x", dsdt.Data[36:], again[36:])
}

// TestACPIExec loads the tables into ACPICA's acpiexec, which checks them
// as Linux's ACPICA would at boot, and evaluates the objects a guest uses.
func TestACPIExec(t *testing.T) {
	acpiexec := lookTool(t, "acpiexec")
	dir := t.TempDir()
	tables := build(t, acpi.Config{CPUs: 2})
	var files []string
	for _, sig := range []string{"DSDT", "FACP", "APIC", "MCFG", "FACS"} {
		tb, ok := tables.Find(sig)
		require.True(t, ok)
		f := filepath.Join(dir, sig+".dat")
		require.NoError(t, os.WriteFile(f, tb.Data, 0o644))
		files = append(files, f)
	}
	cmds := `evaluate \_S5; evaluate \_SB.COM1._STA; evaluate \_SB.PCI0._SEG; evaluate \_SB.COM1._CRS`
	out, err := exec.Command(acpiexec, append([]string{"-b", cmds}, files...)...).CombinedOutput()
	require.NoError(t, err, "acpiexec:\n%s", out)
	s := string(out)
	assert.Contains(t, s, "1 ACPI AML tables successfully acquired and loaded")
	assert.NotRegexp(t, `(?i)checksum|ACPI Error|ACPI Warning|BIOS Error|Firmware Warning`, s)
	assert.Regexp(t, `Evaluation of \\_S5 returned.*\s+\[Package\] Contains 4 Elements:\s+\[Integer\] = 0+5\s+\[Integer\] = 0+5\s+\[Integer\] = 0+\s+\[Integer\] = 0+\s`, s)
	assert.Regexp(t, `Evaluation of \\_SB.COM1._STA returned.*\s+\[Integer\] = 0+F\s`, s)
	assert.Regexp(t, `Evaluation of \\_SB.PCI0._SEG returned.*\s+\[Integer\] = 0+\s`, s)
	assert.Regexp(t, `Evaluation of \\_SB.COM1._CRS returned.*\s+\[Buffer\] Length 0D`, s)
}
