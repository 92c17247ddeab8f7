package boot_test

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"github.com/wisp-vmm/wisp/test/fixtures"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/vmm/memory"
)

// wisp's guest RAM is what the loaders write to.
var _ boot.Memory = (*memory.Memory)(nil)

// testKernel returns the path of a real bzImage to test against: Debian's
// cloud kernel from the guest kit (fetched on first use), or
// $WISP_TEST_VMLINUZ to try another.
func testKernel(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WISP_TEST_VMLINUZ"); p != "" {
		_, err := os.Stat(p)
		require.NoError(t, err, "WISP_TEST_VMLINUZ")
		return p
	}
	return fixtures.DebianKernel(t).Image
}

func readKernel(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(testKernel(t))
	require.NoError(t, err)
	return data
}

// testVmlinux returns the ELF vmlinux inside the bzImage at path:
// $WISP_TEST_VMLINUX, a "vmlinux" beside it (as the guest kit keeps), or the
// bzImage's payload decompressed with the matching tool.
func testVmlinux(t *testing.T, path string) []byte {
	t.Helper()
	if p := os.Getenv("WISP_TEST_VMLINUX"); p != "" {
		data, err := os.ReadFile(p)
		require.NoError(t, err, "WISP_TEST_VMLINUX")
		return data
	}
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(path), "vmlinux")); err == nil && bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return data
	}
	bz, err := os.ReadFile(path)
	require.NoError(t, err)
	le := binary.LittleEndian
	setup := (uint64(bz[0x1f1]) + 1) * 512
	off, n := setup+uint64(le.Uint32(bz[0x248:])), uint64(le.Uint32(bz[0x24c:]))
	require.LessOrEqual(t, off+n, uint64(len(bz)), "payload_offset/payload_length")
	payload := bz[off : off+n]

	var tool []string
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(payload))
		require.NoError(t, err)
		out, err := io.ReadAll(r)
		require.NoError(t, err)
		return out
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}): // lz4 legacy frame
		tool = []string{"lz4", "-d", "-c"}
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		tool = []string{"xz", "-d", "-c"}
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = []string{"zstd", "-d", "-c"}
	default:
		t.Skipf("SKIP: kernel payload compression %x not handled; set WISP_TEST_VMLINUX", payload[:min(len(payload), 6)])
	}
	if _, err := exec.LookPath(tool[0]); err != nil {
		t.Skipf("SKIP: %s not installed, cannot extract vmlinux from the bzImage (or set WISP_TEST_VMLINUX): %v", tool[0], err)
	}
	// Except for gzip, the kernel build appends the uncompressed size
	// (scripts/Makefile.lib, *_with_size), which the tools reject.
	cmd := exec.Command(tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(payload[:len(payload)-4])
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	require.NoError(t, cmd.Run(), "%v: %s", tool, stderr.String())
	require.True(t, bytes.HasPrefix(out.Bytes(), []byte(elf.ELFMAG)), "decompressed payload is not ELF")
	return out.Bytes()
}

// guestRAM returns size bytes of real wisp guest memory and its regions.
func guestRAM(t *testing.T, size uint64) (*memory.Memory, []boot.Region) {
	t.Helper()
	mem, err := memory.New(size)
	require.NoError(t, err)
	t.Cleanup(func() { mem.Close() })
	var ram []boot.Region
	for _, r := range mem.Regions() {
		ram = append(ram, boot.Region{GuestAddr: r.GuestAddr, Size: r.Size})
	}
	return mem, ram
}

// sparseMemory is guest memory over arbitrary regions that stores only the
// pages written with non-zero data, for layouts too large to back with RAM
// in a test, and for the fuzzer.
type sparseMemory struct {
	regions []boot.Region
	pages   map[uint64][]byte
}

const testPage = 4096

func newSparseMemory(regions ...boot.Region) *sparseMemory {
	return &sparseMemory{regions: regions, pages: map[uint64][]byte{}}
}

func (m *sparseMemory) check(gpa uint64, n int) error {
	for _, r := range m.regions {
		if gpa >= r.GuestAddr && gpa < r.End() && uint64(n) <= r.End()-gpa {
			return nil
		}
	}
	return fmt.Errorf("[%#x, +%#x) outside guest memory", gpa, n)
}

func (m *sparseMemory) Size() uint64 {
	var s uint64
	for _, r := range m.regions {
		s += r.Size
	}
	return s
}

func (m *sparseMemory) WriteAt(p []byte, gpa uint64) error {
	if err := m.check(gpa, len(p)); err != nil {
		return err
	}
	for len(p) > 0 {
		page, off := gpa/testPage, gpa%testPage
		n := min(uint64(len(p)), testPage-off)
		buf, ok := m.pages[page]
		if !ok && !allZero(p[:n]) {
			buf = make([]byte, testPage)
			m.pages[page] = buf
		}
		if buf != nil {
			copy(buf[off:], p[:n])
		}
		p, gpa = p[n:], gpa+n
	}
	return nil
}

func (m *sparseMemory) ReadAt(p []byte, gpa uint64) error {
	if err := m.check(gpa, len(p)); err != nil {
		return err
	}
	for len(p) > 0 {
		page, off := gpa/testPage, gpa%testPage
		n := min(uint64(len(p)), testPage-off)
		if buf, ok := m.pages[page]; ok {
			copy(p[:n], buf[off:])
		} else {
			clear(p[:n])
		}
		p, gpa = p[n:], gpa+n
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// read returns n bytes of guest memory at gpa.
func read(t *testing.T, mem boot.Memory, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	require.NoError(t, mem.ReadAt(b, gpa))
	return b
}

func read64(t *testing.T, mem boot.Memory, gpa uint64) uint64 {
	return binary.LittleEndian.Uint64(read(t, mem, gpa, 8))
}

// bzOptions describe a synthetic bzImage: a setup header and a
// protected-mode part of filler bytes, enough to exercise the parser without
// a real kernel.
type bzOptions struct {
	version     uint16
	loadflags   byte
	xloadflags  uint16
	relocatable bool
	kernelAlign uint32
	prefAddress uint64
	initSize    uint32
	initrdMax   uint32
	cmdlineSize uint32
	setupSects  byte
	headerJump  byte
	protected   int // bytes of protected-mode code
}

func defaultBz() bzOptions {
	return bzOptions{
		version:     0x020f,
		loadflags:   0x01,
		xloadflags:  0x01 | 0x02,
		relocatable: true,
		kernelAlign: 2 << 20,
		prefAddress: 16 << 20,
		initSize:    4 << 20,
		initrdMax:   0x7fffffff,
		cmdlineSize: 2047,
		setupSects:  1,
		headerJump:  0x6a, // header ends at 0x26c, as in 2.15 kernels
		protected:   8192,
	}
}

func makeBzImage(o bzOptions) []byte {
	setup := (int(o.setupSects) + 1) * 512
	if o.setupSects == 0 {
		setup = 5 * 512
	}
	b := make([]byte, setup+o.protected)
	le := binary.LittleEndian
	b[0x1f1] = o.setupSects
	le.PutUint32(b[0x1f4:], uint32(o.protected/16))
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200], b[0x201] = 0xeb, o.headerJump
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], o.version)
	b[0x211] = o.loadflags
	le.PutUint32(b[0x22c:], o.initrdMax)
	le.PutUint32(b[0x230:], o.kernelAlign)
	if o.relocatable {
		b[0x234] = 1
	}
	le.PutUint16(b[0x236:], o.xloadflags)
	le.PutUint32(b[0x238:], o.cmdlineSize)
	le.PutUint64(b[0x258:], o.prefAddress)
	le.PutUint32(b[0x260:], o.initSize)
	for i := setup; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

// elfSegment is one program header of a synthetic ELF.
type elfSegment struct {
	typ   elf.ProgType
	paddr uint64
	vaddr uint64
	data  []byte
	memsz uint64
	align uint64
}

// makeELF lays out an ELF64 x86-64 executable: header, program headers,
// then each segment's bytes.
func makeELF(entry uint64, segs ...elfSegment) []byte {
	le := binary.LittleEndian
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize*len(segs))
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_DATA], b[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le.PutUint16(b[0x10:], uint16(elf.ET_EXEC))
	le.PutUint16(b[0x12:], uint16(elf.EM_X86_64))
	le.PutUint32(b[0x14:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[0x18:], entry)
	le.PutUint64(b[0x20:], ehsize)
	le.PutUint16(b[0x34:], ehsize)
	le.PutUint16(b[0x36:], phsize)
	le.PutUint16(b[0x38:], uint16(len(segs)))
	for i, s := range segs {
		for len(b)%16 != 0 {
			b = append(b, 0)
		}
		off := len(b)
		b = append(b, s.data...)
		ph := b[ehsize+i*phsize:]
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		vaddr := s.vaddr
		if vaddr == 0 {
			vaddr = s.paddr
		}
		le.PutUint32(ph[0:], uint32(s.typ))
		le.PutUint64(ph[8:], uint64(off))
		le.PutUint64(ph[16:], vaddr)
		le.PutUint64(ph[24:], s.paddr)
		le.PutUint64(ph[32:], uint64(len(s.data)))
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], s.align)
	}
	return b
}

// xenNote is a PT_NOTE payload holding XEN_ELFNOTE_PHYS32_ENTRY.
func xenNote(entry uint64, descsz int) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 4)
	b = le.AppendUint32(b, uint32(descsz))
	b = le.AppendUint32(b, 18)
	b = append(b, "Xen\x00"...)
	if descsz == 8 {
		return le.AppendUint64(b, entry)
	}
	return le.AppendUint32(b, uint32(entry))
}

// assembleELF builds a tiny kernel with GNU as and ld from source text, so
// the loader sees what a real toolchain emits (PT_NOTE from a .note
// section, .bss as memsz > filesz, a linker script's AT() addresses).
func assembleELF(t *testing.T, source, linkerScript string) []byte {
	t.Helper()
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s not installed (Debian package binutils): %v", tool, err)
		}
	}
	dir := t.TempDir()
	src, obj, lds, out := filepath.Join(dir, "k.S"), filepath.Join(dir, "k.o"), filepath.Join(dir, "k.lds"), filepath.Join(dir, "k.elf")
	require.NoError(t, os.WriteFile(src, []byte(source), 0o644))
	require.NoError(t, os.WriteFile(lds, []byte(linkerScript), 0o644))
	for _, args := range [][]string{
		{"as", "--64", "-o", obj, src},
		{"ld", "-m", "elf_x86_64", "-static", "-nostdlib", "-z", "noexecstack", "-T", lds, "-o", out, obj},
	} {
		msg, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		require.NoError(t, err, "%v:\n%s", args, msg)
	}
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	return data
}
