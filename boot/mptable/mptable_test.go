package mptable_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot/mptable"
	"github.com/wisp-vmm/wisp/vmm/memory"
)

var _ mptable.Memory = (*memory.Memory)(nil)

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// parsed is what a reader of the MP spec finds in a table.
type parsed struct {
	processors []struct{ apicID, flags byte }
	buses      []string
	ioapicIDs  []byte
	ioapicAddr []uint32
	ioInts     []struct{ typ, irq, pin byte }
	localInts  []struct{ typ, lint byte }
}

// parse reads the floating pointer at base (b's first byte) and walks the
// configuration table it points to, as Linux's mpparse.c does.
func parse(t *testing.T, b []byte, base uint64) parsed {
	t.Helper()
	le := binary.LittleEndian
	require.Equal(t, "_MP_", string(b[0:4]))
	require.Equal(t, byte(1), b[8], "floating pointer length (paragraphs)")
	require.Equal(t, byte(4), b[9], "spec revision 1.4")
	require.Zero(t, sum(b[:16]), "floating pointer checksum")
	require.Zero(t, b[11], "feature byte 1: a configuration table follows")

	cfgOff := uint64(le.Uint32(b[4:])) - base
	cfg := b[cfgOff:]
	require.Equal(t, "PCMP", string(cfg[0:4]))
	length := int(le.Uint16(cfg[4:]))
	require.LessOrEqual(t, length, len(cfg))
	cfg = cfg[:length]
	require.Zero(t, sum(cfg), "configuration table checksum")
	require.Equal(t, byte(4), cfg[6])
	require.Equal(t, mptable.LAPICAddr, le.Uint32(cfg[36:]))

	var p parsed
	count := int(le.Uint16(cfg[34:]))
	off := 44
	for range count {
		e := cfg[off:]
		switch e[0] {
		case 0:
			p.processors = append(p.processors, struct{ apicID, flags byte }{e[1], e[3]})
			off += 20
		case 1:
			p.buses = append(p.buses, string(e[2:8]))
			off += 8
		case 2:
			p.ioapicIDs = append(p.ioapicIDs, e[1])
			p.ioapicAddr = append(p.ioapicAddr, le.Uint32(e[4:]))
			require.Equal(t, byte(1), e[3]&1, "IOAPIC usable")
			off += 8
		case 3:
			p.ioInts = append(p.ioInts, struct{ typ, irq, pin byte }{e[1], e[5], e[7]})
			off += 8
		case 4:
			p.localInts = append(p.localInts, struct{ typ, lint byte }{e[1], e[7]})
			off += 8
		default:
			t.Fatalf("unknown entry type %d at %d", e[0], off)
		}
	}
	require.Equal(t, length, off, "entry count and base table length agree")
	return p
}

func TestBuild(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, mptable.MaxCPUs} {
		t.Run(fmt.Sprintf("%d CPUs", cpus), func(t *testing.T) {
			b, err := mptable.Build(cpus, mptable.DefaultAddr)
			require.NoError(t, err)
			require.Equal(t, mptable.Size(cpus), uint64(len(b)))
			assert.LessOrEqual(t, mptable.DefaultAddr+uint64(len(b)), mptable.Limit)
			p := parse(t, b, mptable.DefaultAddr)

			require.Len(t, p.processors, cpus)
			for i, c := range p.processors {
				assert.Equal(t, byte(i), c.apicID)
				assert.Equal(t, byte(1), c.flags&1, "CPU %d enabled", i)
				assert.Equal(t, i == 0, c.flags&2 != 0, "only CPU 0 is the boot processor")
			}
			assert.Equal(t, []string{"ISA   "}, p.buses)
			assert.Equal(t, []byte{byte(cpus)}, p.ioapicIDs, "IOAPIC ID follows the CPUs")
			assert.Equal(t, []uint32{0xfec00000}, p.ioapicAddr)

			// ExtINT on pin 0, IRQ0 on pin 2, ISA IRQs 1, 3..15 on their own pins.
			require.Len(t, p.ioInts, 16)
			assert.Equal(t, struct{ typ, irq, pin byte }{3, 0, 0}, p.ioInts[0])
			pins := map[byte]byte{}
			for _, in := range p.ioInts[1:] {
				assert.Equal(t, byte(0), in.typ, "INT")
				pins[in.irq] = in.pin
			}
			assert.Equal(t, byte(2), pins[0])
			for irq := byte(1); irq < 16; irq++ {
				if irq == 2 {
					assert.NotContains(t, pins, irq, "IRQ2 is the cascade")
					continue
				}
				assert.Equal(t, irq, pins[irq], "IRQ %d", irq)
			}
			assert.Equal(t, []struct{ typ, lint byte }{{3, 0}, {1, 1}}, p.localInts, "ExtINT on LINT0, NMI on LINT1")
		})
	}
}

func TestBuildErrors(t *testing.T) {
	for _, cpus := range []int{-1, 0, mptable.MaxCPUs + 1} {
		_, err := mptable.Build(cpus, mptable.DefaultAddr)
		assert.ErrorIs(t, err, mptable.ErrTooManyCPUs, "%d CPUs", cpus)
	}
	_, err := mptable.Build(1, mptable.DefaultAddr+4)
	assert.Error(t, err, "misaligned floating pointer")
}

func TestWrite(t *testing.T) {
	mem, err := memory.New(2 << 20)
	require.NoError(t, err)
	t.Cleanup(func() { mem.Close() })
	addr, err := mptable.Write(mem, 4)
	require.NoError(t, err)
	assert.Equal(t, mptable.DefaultAddr, addr)
	b := make([]byte, mptable.Size(4))
	require.NoError(t, mem.ReadAt(b, addr))
	assert.Len(t, parse(t, b, addr).processors, 4)
}
