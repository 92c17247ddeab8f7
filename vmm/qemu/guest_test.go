package qemu

import (
	"bytes"
	"encoding/binary"
	"github.com/wisp-vmm/wisp/test/fixtures"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// testKernelFiles is the Linux the integration tests boot.
type testKernelFiles struct {
	Image string
	// Modules is the kernel's /lib/modules/<version> tree, or "" if it is
	// not there. Debian's cloud kernel has pvpanic as a module.
	Modules string
	// BuiltinDrivers says pvpanic and the ACPI button are built in (the
	// minimal kernel): nothing needs loading.
	BuiltinDrivers bool
}

// testKernel finds the kernel for integration tests, or skips. It is the one
// place that knows where the kernel comes from: WISP_TEST_VMLINUZ for now
// (default: Debian's cloud kernel extracted under /tmp/nest); later
// fixtures.DebianKernel(t).Image. WISP_TEST_MODULES names the kernel's
// /lib/modules/<version> tree, or "builtin" for a kernel with pvpanic and
// the ACPI button built in.
func testKernel(t *testing.T) testKernelFiles {
	t.Helper()
	if img := os.Getenv("WISP_TEST_VMLINUZ"); img != "" {
		// Another kernel to try; WISP_TEST_MODULES names its modules tree,
		// or "builtin" when its drivers are built in.
		if _, err := os.Stat(img); err != nil {
			t.Fatalf("WISP_TEST_VMLINUZ: %v", err)
		}
		k := testKernelFiles{Image: img}
		switch mods := os.Getenv("WISP_TEST_MODULES"); mods {
		case "builtin":
			k.BuiltinDrivers = true
		default:
			k.Modules = mods
		}
		return k
	}
	kern := fixtures.DebianKernel(t)
	return testKernelFiles{Image: kern.Image, Modules: kern.ModulesDir}
}

// requireQEMU skips the test when QEMU is missing.
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skipf("SKIP: %v", ErrNotInstalled)
	}
}

// markerCode is the byte the test guests write to the boot-marker port.
const markerCode = 0x7f

// markerELF is a static x86-64 Linux program that writes code to I/O port
// 0x440 and exits: busybox has no outb, and Debian's kernel has no /dev/port.
// It is assembled by hand so the tests need no toolchain:
//
//	mov  eax, 172      ; iopl
//	mov  edi, 3
//	syscall
//	mov  dx, 0x440
//	mov  al, code
//	out  dx, al
//	mov  eax, 60       ; exit
//	xor  edi, edi
//	syscall
func markerELF(code byte) []byte {
	text := []byte{
		0xb8, 0xac, 0x00, 0x00, 0x00,
		0xbf, 0x03, 0x00, 0x00, 0x00,
		0x0f, 0x05,
		0x66, 0xba, BootMarkerPort & 0xff, BootMarkerPort >> 8,
		0xb0, code,
		0xee,
		0xb8, 0x3c, 0x00, 0x00, 0x00,
		0x31, 0xff,
		0x0f, 0x05,
	}
	const (
		base    = 0x400000
		ehSize  = 64
		phSize  = 56
		entryOf = ehSize + phSize
	)
	var b bytes.Buffer
	le := binary.LittleEndian
	// ELF header.
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */, 0 /* SysV */})
	b.Write(make([]byte, 8))
	_ = binary.Write(&b, le, uint16(2))            // ET_EXEC
	_ = binary.Write(&b, le, uint16(62))           // EM_X86_64
	_ = binary.Write(&b, le, uint32(1))            // EV_CURRENT
	_ = binary.Write(&b, le, uint64(base+entryOf)) // e_entry
	_ = binary.Write(&b, le, uint64(ehSize))       // e_phoff
	_ = binary.Write(&b, le, uint64(0))            // e_shoff
	_ = binary.Write(&b, le, uint32(0))            // e_flags
	_ = binary.Write(&b, le, uint16(ehSize))       // e_ehsize
	_ = binary.Write(&b, le, uint16(phSize))       // e_phentsize
	_ = binary.Write(&b, le, uint16(1))            // e_phnum
	_ = binary.Write(&b, le, uint16(64))           // e_shentsize
	_ = binary.Write(&b, le, uint16(0))            // e_shnum
	_ = binary.Write(&b, le, uint16(0))            // e_shstrndx
	// One PT_LOAD covering the whole file, read+execute.
	size := uint64(entryOf + len(text))
	_ = binary.Write(&b, le, uint32(1)) // PT_LOAD
	_ = binary.Write(&b, le, uint32(5)) // PF_R|PF_X
	_ = binary.Write(&b, le, uint64(0)) // p_offset
	_ = binary.Write(&b, le, uint64(base))
	_ = binary.Write(&b, le, uint64(base))
	_ = binary.Write(&b, le, size) // p_filesz
	_ = binary.Write(&b, le, size) // p_memsz
	_ = binary.Write(&b, le, uint64(0x1000))
	b.Write(text)
	return b.Bytes()
}

// initramfsOptions shapes a test guest.
type initramfsOptions struct {
	// Script runs after /proc is mounted, "WISP-HELLO" is printed and the
	// boot marker is written. Commands are busybox applets by name.
	Script string
	// Modules are loaded with insmod, in order, before Setup; paths are
	// relative to ModulesDir (the kernel's /lib/modules/<version>).
	// Debian's cloud kernel builds pvpanic and the ACPI button as modules.
	Modules    []string
	ModulesDir string
	// Setup runs before the boot marker is written, so a test that waits
	// for the marker knows Setup is done.
	Setup string
}

// Modules of Debian's cloud kernel the tests load.
var (
	pvpanicModules = []string{
		"kernel/drivers/misc/pvpanic/pvpanic.ko",
		"kernel/drivers/misc/pvpanic/pvpanic-mmio.ko",
	}
	powerButtonModules = []string{
		"kernel/drivers/input/evdev.ko",
		"kernel/drivers/acpi/button.ko",
	}
)

// buildInitramfs writes a newc cpio with busybox and a shell init, and
// returns its path.
func buildInitramfs(t *testing.T, o initramfsOptions) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("SKIP: no busybox for the test guest (%v): apt-get install busybox-static", err)
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox --install -s /bin\n" +
		"export PATH=/bin\n" +
		"mount -t proc proc /proc\n" +
		"mount -t sysfs sys /sys\n"
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("mod", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/port", 0o600, 1, 4),
		cpio.StaticFile("bin/busybox", string(bb), 0o755),
		cpio.StaticFile("bin/mark", string(markerELF(markerCode)), 0o755),
	}
	for _, m := range o.Modules {
		data, err := os.ReadFile(filepath.Join(o.ModulesDir, m))
		if err != nil {
			t.Skipf("SKIP: the test kernel's module %s is missing (%v): set WISP_TEST_MODULES to its /lib/modules/<version>", m, err)
		}
		name := filepath.Base(m)
		recs = append(recs, cpio.StaticFile("mod/"+name, string(data), 0o644))
		init += "insmod /mod/" + name + "\n"
	}
	init += o.Setup + "\n"
	// The marker: through /dev/port where the kernel has it (the minimal
	// kernel has no iopl), else with iopl (Debian's has no /dev/port).
	init += "echo WISP-HELLO\n" +
		"if [ -c /dev/port ] && printf '\\177' | dd of=/dev/port bs=1 seek=1088 count=1 2>/dev/null; then :; else /bin/mark; fi\n" +
		o.Script + "\n"
	recs = append(recs, cpio.StaticFile("init", init, 0o755))

	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
