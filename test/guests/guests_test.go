package guests

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
)

// TestEveryGuestBuilds builds each guest and checks the shape a loader
// relies on.
func TestEveryGuestBuilds(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			path := Build(t, name)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NotEmpty(t, data)
			if name == RealMode {
				return
			}
			f, err := elf.NewFile(bytes.NewReader(data))
			require.NoError(t, err)
			defer f.Close()
			assert.Equal(t, elf.ELFCLASS64, f.Class)
			assert.Equal(t, elf.EM_X86_64, f.Machine)
			assert.Equal(t, elf.ET_EXEC, f.Type)

			var loads []*elf.Prog
			for _, p := range f.Progs {
				if p.Type == elf.PT_LOAD {
					loads = append(loads, p)
				}
			}
			require.Len(t, loads, 1, "one PT_LOAD segment")
			load := loads[0]
			assert.EqualValues(t, ELFAddr, load.Paddr, "loaded at 1 MiB")
			assert.Equal(t, load.Vaddr, load.Paddr, "identity: physical = virtual")
			assert.GreaterOrEqual(t, load.Memsz, load.Filesz)
			assert.True(t, f.Entry >= load.Paddr && f.Entry < load.Paddr+load.Filesz,
				"entry %#x inside the loaded code [%#x, %#x)", f.Entry, load.Paddr, load.Paddr+load.Filesz)
			assert.Less(t, load.Memsz, uint64(1<<20), "a tiny guest")
		})
	}
}

func TestRealModeIsAFlatBinaryStartingWithCLI(t *testing.T) {
	data, err := os.ReadFile(Build(t, RealMode))
	require.NoError(t, err)
	assert.Less(t, len(data), 512)
	assert.Equal(t, byte(0xfa), data[0], "cli at CS:IP = 0:RealModeAddr")
	assert.True(t, bytes.Contains(data, []byte(RealModeOutput+"\x00")), "carries its message")
	assert.False(t, bytes.HasPrefix(data, []byte(elf.ELFMAG)), "not an ELF")
}

// TestPVHNote checks what a PVH loader reads: a PT_NOTE holding the Xen
// note of type XEN_ELFNOTE_PHYS32_ENTRY whose 8-byte descriptor is the
// 32-bit entry.
func TestPVHNote(t *testing.T) {
	f, err := elf.Open(Build(t, PVH))
	require.NoError(t, err)
	defer f.Close()
	var found bool
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		_, err := p.ReadAt(data, 0)
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(data), 12)
		namesz := binary.LittleEndian.Uint32(data[0:])
		descsz := binary.LittleEndian.Uint32(data[4:])
		typ := binary.LittleEndian.Uint32(data[8:])
		require.EqualValues(t, 4, namesz)
		assert.Equal(t, "Xen\x00", string(data[12:16]))
		assert.EqualValues(t, xenElfnotePhys32Entry, typ)
		require.EqualValues(t, 8, descsz)
		entry := binary.LittleEndian.Uint64(data[16:24])
		assert.Equal(t, f.Entry, entry, "the note names the ELF entry")
		assert.Less(t, entry, uint64(1<<32), "a 32-bit entry")
		found = true
	}
	assert.True(t, found, "pvh.elf has a PT_NOTE")
}

func TestOnlyPVHHasANote(t *testing.T) {
	f, err := elf.Open(Build(t, LongMode))
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_NOTE, p.Type)
	}
}

func TestSMPExpectedCountIsAtTheDocumentedAddress(t *testing.T) {
	f, err := elf.Open(Build(t, SMP))
	require.NoError(t, err)
	defer f.Close()
	syms, err := f.Symbols()
	require.NoError(t, err)
	var addr uint64
	for _, s := range syms {
		if s.Name == "smp_expected" {
			addr = s.Value
		}
	}
	assert.EqualValues(t, SMPExpectedAddr, addr)
}

func TestDefinesCoverEveryProbeCode(t *testing.T) {
	defs := strings.Join(defines(), " ")
	for _, m := range probe.Macros() {
		assert.Contains(t, defs, "-D"+m.Name+"=")
	}
	assert.Contains(t, defs, `-DREALMODE_MSG="wisp real mode\n"`)
	assert.Contains(t, defs, "-DPOWEROFF_VALUE=0x3400")
}

func TestUnknownGuest(t *testing.T) {
	_, err := recipeFor("nope.elf")
	require.ErrorIs(t, err, ErrUnknownGuest)
	assert.Contains(t, err.Error(), RealMode, "lists the known guests")
}

func TestEveryNameHasARecipe(t *testing.T) {
	for _, name := range Names() {
		_, err := recipeFor(name)
		assert.NoError(t, err, name)
	}
}

func TestBuildIsCachedByContent(t *testing.T) {
	t.Setenv(EnvCache, t.TempDir())
	first := Build(t, LongMode)
	second := Build(t, LongMode)
	assert.Equal(t, first, second)
	assert.True(t, strings.HasPrefix(first, os.Getenv(EnvCache)), "built under $%s", EnvCache)
}

func TestPrebuiltDirectoryWins(t *testing.T) {
	dir := t.TempDir()
	want := filepath.Join(dir, MMIO)
	require.NoError(t, os.WriteFile(want, []byte("prebuilt"), 0o644))
	t.Setenv(EnvPrebuilt, dir)
	assert.Equal(t, want, Build(t, MMIO))
}

func TestMessages(t *testing.T) {
	assert.Equal(t, "wisp mmio 0x57495350\n", MMIOOutput(MMIOWriteValue))
	assert.Equal(t, "cpu 3\n", SMPCPUOutput(3))
	assert.Equal(t, "wisp smp: 2 cpus\n", SMPOutput(2))
	assert.Equal(t, "wisp smp: timeout, 1 cpus\n", SMPTimeoutOutput(1))
}

// TestProbeImageIsUpToDate: the probe image that wisp carries
// (probe.Image, generated) must be what the sources build today.
func TestProbeImageIsUpToDate(t *testing.T) {
	built, err := os.ReadFile(Build(t, Probe))
	require.NoError(t, err)
	if !bytes.Equal(built, probe.Image()) {
		t.Fatalf("vmm/accel/probeguest/image_data.go is out of date with src/probe.S (or this toolchain builds other bytes): run go generate ./vmm/accel/probeguest")
	}
}

func TestProbeImageSource(t *testing.T) {
	src := string(ProbeImageSource([]byte{0x7f, 'E', 0}))
	assert.Contains(t, src, "// Code generated by")
	assert.Contains(t, src, "DO NOT EDIT.")
	assert.Contains(t, src, "package probe\n")
	assert.Contains(t, src, "const image = \"\" +\n\t\"\\x7f\\x45\\x00\"\n")
}

func TestVirtioBlkPattern(t *testing.T) {
	w, r := VirtioBlkPattern(VirtioBlkWriteSeed), VirtioBlkPattern(VirtioBlkReadSeed)
	require.Len(t, w, SectorSize)
	assert.NotEqual(t, w, r, "the two seeds give different sectors")
	assert.NotEqual(t, w[:256], w[256:], "the halves differ, so a half-written sector shows")
	assert.Equal(t, byte(VirtioBlkWriteSeed), w[0])
	assert.Equal(t, byte(31+VirtioBlkWriteSeed), w[1])
	assert.Equal(t, byte((256*31+1+VirtioBlkWriteSeed)%256), w[256])
	assert.Less(t, VirtioBlkReadSector, VirtioBlkMinSectors)
	assert.Less(t, VirtioBlkWriteSector, VirtioBlkMinSectors)
	defs := strings.Join(defines(), " ")
	assert.Contains(t, defs, "-DECAM_BASE=0xe8000000")
	assert.Contains(t, defs, "-DVIRTIO_BAR_SIZE=0x8000")
	assert.Contains(t, defs, `-DVIRTIO_OK_MSG="wisp virtio-blk ok\n"`)
}
