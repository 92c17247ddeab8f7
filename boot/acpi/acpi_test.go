package acpi_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot/acpi"
	"github.com/wisp-vmm/wisp/vmm/memory"
)

// Both of wisp's guest memories satisfy the writer interface.
var _ acpi.Memory = (*memory.Memory)(nil)

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func build(t *testing.T, cfg acpi.Config) *acpi.Tables {
	t.Helper()
	tables, err := acpi.Build(cfg)
	require.NoError(t, err)
	return tables
}

func TestChecksumsAndLengths(t *testing.T) {
	for _, cpus := range []int{1, 2, 64, acpi.MaxCPUs} {
		t.Run(fmt.Sprintf("%d CPUs", cpus), func(t *testing.T) {
			tables := build(t, acpi.Config{CPUs: cpus})
			require.Len(t, tables.Tables, 8)
			prevEnd := uint64(0)
			for _, tb := range tables.Tables {
				assert.GreaterOrEqual(t, tb.Addr, prevEnd, "%s overlaps the table before it", tb.Signature)
				prevEnd = tb.Addr + uint64(len(tb.Data))
				assert.LessOrEqual(t, prevEnd, acpi.RegionEnd, tb.Signature)
				assert.Equal(t, tb.Signature, string(tb.Data[:len(tb.Signature)]))
				switch tb.Signature {
				case "RSD PTR ":
					assert.Zero(t, sum(tb.Data[:20]), "RSDP checksum")
					assert.Zero(t, sum(tb.Data), "RSDP extended checksum")
				case "FACS":
					assert.Zero(t, tb.Addr%64, "FACS must be 64-byte aligned")
					assert.Equal(t, uint32(len(tb.Data)), binary.LittleEndian.Uint32(tb.Data[4:]))
				default:
					assert.Zero(t, sum(tb.Data), "%s checksum", tb.Signature)
					assert.Equal(t, uint32(len(tb.Data)), binary.LittleEndian.Uint32(tb.Data[4:]), "%s length", tb.Signature)
				}
			}
		})
	}
}

func TestPointersLinkUp(t *testing.T) {
	tables := build(t, acpi.Config{CPUs: 2})
	le := binary.LittleEndian
	addr := map[string]uint64{}
	for _, tb := range tables.Tables {
		addr[tb.Signature] = tb.Addr
	}
	rsdp, _ := tables.Find("RSD PTR ")
	assert.Equal(t, acpi.DefaultAddr, tables.RSDP)
	assert.Equal(t, acpi.DefaultAddr, rsdp.Addr)
	assert.Equal(t, byte(2), rsdp.Data[15], "RSDP revision")
	assert.Equal(t, uint32(addr["RSDT"]), le.Uint32(rsdp.Data[16:]))
	assert.Equal(t, uint32(36), le.Uint32(rsdp.Data[20:]))
	assert.Equal(t, addr["XSDT"], le.Uint64(rsdp.Data[24:]))

	xsdt, _ := tables.Find("XSDT")
	rsdt, _ := tables.Find("RSDT")
	want := []string{"FACP", "APIC", "MCFG"}
	require.Len(t, xsdt.Data, 36+8*len(want))
	require.Len(t, rsdt.Data, 36+4*len(want))
	for i, sig := range want {
		assert.Equal(t, addr[sig], le.Uint64(xsdt.Data[36+8*i:]), "XSDT entry %d", i)
		assert.Equal(t, uint32(addr[sig]), le.Uint32(rsdt.Data[36+4*i:]), "RSDT entry %d", i)
	}

	fadt, _ := tables.Find("FACP")
	require.Len(t, fadt.Data, 276)
	assert.Equal(t, byte(6), fadt.Data[8], "FADT revision")
	assert.Equal(t, addr["FACS"], le.Uint64(fadt.Data[132:]), "X_FIRMWARE_CTRL")
	assert.Equal(t, addr["DSDT"], le.Uint64(fadt.Data[140:]), "X_DSDT")
	assert.Zero(t, le.Uint32(fadt.Data[36:]), "FIRMWARE_CTRL must be 0 when X_FIRMWARE_CTRL is set")
}

func TestFADTFields(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name          string
		cfg           acpi.Config
		evt, cnt, tmr uint16
		bootArch      uint16
	}{
		{"defaults", acpi.Config{CPUs: 1}, 0x600, 0x604, 0, 0x5},
		{"custom ports, PM timer, i8042", acpi.Config{CPUs: 1, PM1aEventPort: 0xb000, PM1aControlPort: 0xb004, PMTimerPort: 0xb008, I8042: true}, 0xb000, 0xb004, 0xb008, 0x7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fadt, ok := build(t, tt.cfg).Find("FACP")
			require.True(t, ok)
			f := fadt.Data
			assert.Equal(t, uint16(9), le.Uint16(f[46:]), "SCI_INT")
			assert.Equal(t, uint32(tt.evt), le.Uint32(f[56:]), "PM1a_EVT_BLK")
			assert.Equal(t, uint32(tt.cnt), le.Uint32(f[64:]), "PM1a_CNT_BLK")
			assert.Equal(t, uint32(tt.tmr), le.Uint32(f[76:]), "PM_TMR_BLK")
			assert.Equal(t, byte(4), f[88], "PM1_EVT_LEN")
			assert.Equal(t, byte(2), f[89], "PM1_CNT_LEN")
			assert.Equal(t, tt.bootArch, le.Uint16(f[109:]), "IAPC_BOOT_ARCH")
			flags := le.Uint32(f[112:])
			assert.NotZero(t, flags&(1<<10), "RESET_REG_SUP")
			assert.Zero(t, flags&(1<<20), "HW_REDUCED_ACPI must be off")
			assert.Equal(t, []byte{1, 8, 0, 1}, f[116:120], "RESET_REG: system I/O, 8 bits, byte access")
			assert.Equal(t, uint64(0x64), le.Uint64(f[120:]), "RESET_REG port")
			assert.Equal(t, byte(0xfe), f[128], "RESET_VALUE")
			assert.Equal(t, uint64(tt.evt), le.Uint64(f[148+4:]), "X_PM1a_EVT_BLK address")
			assert.Equal(t, uint64(tt.cnt), le.Uint64(f[172+4:]), "X_PM1a_CNT_BLK address")
			assert.Equal(t, uint64(tt.tmr), le.Uint64(f[208+4:]), "X_PM_TMR_BLK address")
		})
	}
}

func TestMADTEntries(t *testing.T) {
	le := binary.LittleEndian
	for _, cpus := range []int{1, 3, acpi.MaxCPUs} {
		t.Run(fmt.Sprintf("%d CPUs", cpus), func(t *testing.T) {
			madt, ok := build(t, acpi.Config{CPUs: cpus}).Find("APIC")
			require.True(t, ok)
			m := madt.Data
			assert.Equal(t, acpi.LAPICAddr, le.Uint32(m[36:]))
			counts := map[byte]int{}
			var overrides [][2]uint32
			for off := 44; off < len(m); {
				typ, n := m[off], int(m[off+1])
				require.Positive(t, n, "zero-length MADT entry at %d", off)
				e := m[off : off+n]
				counts[typ]++
				switch typ {
				case 0:
					uid := counts[0] - 1
					assert.Equal(t, byte(uid), e[2], "processor UID")
					assert.Equal(t, byte(uid), e[3], "APIC ID")
					assert.Equal(t, uint32(1), le.Uint32(e[4:]), "enabled")
				case 1:
					assert.Equal(t, byte(cpus), e[2], "IOAPIC ID")
					assert.Equal(t, acpi.IOAPICAddr, le.Uint32(e[4:]))
					assert.Zero(t, le.Uint32(e[8:]), "GSI base")
				case 2:
					overrides = append(overrides, [2]uint32{uint32(e[3]), le.Uint32(e[4:])})
					if e[3] == 9 {
						assert.Equal(t, uint16(0xd), le.Uint16(e[8:]), "SCI: level, active high")
					}
				}
				off += n
			}
			assert.Equal(t, cpus, counts[0], "Local APIC entries")
			assert.Equal(t, 1, counts[1], "IOAPIC entries")
			assert.Equal(t, [][2]uint32{{0, 2}, {9, 9}}, overrides)
			assert.Equal(t, 1, counts[4], "Local APIC NMI entries")
		})
	}
}

func TestMCFG(t *testing.T) {
	le := binary.LittleEndian
	for _, base := range []uint64{0, 0xb000_0000} {
		mcfg, ok := build(t, acpi.Config{CPUs: 1, ECAMBase: base}).Find("MCFG")
		require.True(t, ok)
		want := base
		if want == 0 {
			want = acpi.DefaultECAMBase
		}
		require.Len(t, mcfg.Data, 60)
		assert.Equal(t, want, le.Uint64(mcfg.Data[44:]), "ECAM base")
		assert.Equal(t, []byte{0, 0, 0, 0}, mcfg.Data[52:56], "segment 0, buses 0..0")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  acpi.Config
	}{
		{"no CPUs", acpi.Config{}},
		{"too many CPUs", acpi.Config{CPUs: acpi.MaxCPUs + 1}},
		{"PM1a blocks overlap", acpi.Config{CPUs: 1, PM1aEventPort: 0x600, PM1aControlPort: 0x602}},
		{"PM timer overlaps control", acpi.Config{CPUs: 1, PMTimerPort: 0x605}},
		{"event block past 0xffff", acpi.Config{CPUs: 1, PM1aEventPort: 0xfffe}},
		{"ECAM misaligned", acpi.Config{CPUs: 1, ECAMBase: 0xe8001000}},
		{"ECAM above 4 GiB", acpi.Config{CPUs: 1, ECAMBase: 1 << 32}},
		{"empty MMIO window", acpi.Config{CPUs: 1, MMIO32Start: 0xd000_0000, MMIO32End: 0xc000_0000}},
		{"MMIO window inside ECAM", acpi.Config{CPUs: 1, MMIO32Start: 0xe800_0000, MMIO32End: 0xe801_0000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := acpi.Build(tt.cfg)
			assert.ErrorIs(t, err, acpi.ErrConfig)
		})
	}
}

func TestWriteToGuestMemory(t *testing.T) {
	mem, err := memory.New(4 << 20)
	require.NoError(t, err)
	t.Cleanup(func() { mem.Close() })
	rsdp, err := acpi.Write(mem, acpi.Config{CPUs: 2})
	require.NoError(t, err)
	assert.Equal(t, acpi.DefaultAddr, rsdp)
	got := make([]byte, 8)
	require.NoError(t, mem.ReadAt(got, rsdp))
	assert.Equal(t, "RSD PTR ", string(got))

	// Too small a guest: the BIOS area is not RAM.
	tiny := &shortMemory{limit: acpi.DefaultAddr}
	_, err = acpi.Write(tiny, acpi.Config{CPUs: 1})
	assert.Error(t, err)
}

// shortMemory refuses writes past limit, as guest RAM does past its end.
type shortMemory struct{ limit uint64 }

func (m *shortMemory) WriteAt(p []byte, gpa uint64) error {
	if gpa+uint64(len(p)) > m.limit {
		return fmt.Errorf("write [%#x, +%#x) past %#x", gpa, len(p), m.limit)
	}
	return nil
}
