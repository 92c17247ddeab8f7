package guests

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wisp-vmm/wisp/boot/acpi"
	vpci "github.com/wisp-vmm/wisp/devices/virtio/pci"
	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
)

// Environment variables Build reads.
const (
	// EnvPrebuilt names a directory holding every guest already built
	// (file name = guest name). When set, Build builds nothing and
	// returns paths there: the nested test VM has no toolchain.
	EnvPrebuilt = "WISP_TEST_GUESTS"
	// EnvCache is wisp's cache root; guests go to $WISP_CACHE/test-guests.
	EnvCache = "WISP_CACHE"
)

// Errors from Compile.
var (
	// ErrUnknownGuest is returned for a name Names does not list.
	ErrUnknownGuest = errors.New("unknown test guest")
	// ErrNoToolchain means gcc or binutils are missing.
	ErrNoToolchain = errors.New("no toolchain to build test guests")
)

//go:embed src
var sources embed.FS

// tools are the programs a build runs: gcc preprocesses and assembles (it
// runs as), ld links, objcopy makes the flat binary.
func tools() []string { return []string{"gcc", "as", "ld", "objcopy"} }

type kind int

const (
	elf64  kind = iota // ELF64 linked at ELFAddr
	flat16             // flat binary, 16-bit code at RealModeAddr
)

type recipe struct {
	// sources are in src/, built in this order: .S assembled (through
	// gcc's preprocessor), .c compiled freestanding.
	sources []string
	kind    kind
	pvhNote bool // keep .note.Xen in a PT_NOTE segment
}

func recipeFor(name string) (recipe, error) {
	switch name {
	case RealMode:
		return recipe{sources: []string{"realmode.S"}, kind: flat16}, nil
	case LongMode:
		return recipe{sources: []string{"longmode.S", "lib64.S"}}, nil
	case PVH:
		return recipe{sources: []string{"pvh.S"}, pvhNote: true}, nil
	case MMIO:
		return recipe{sources: []string{"mmio.S", "lib64.S"}}, nil
	case TripleFault:
		return recipe{sources: []string{"triplefault.S", "lib64.S"}}, nil
	case SMP:
		return recipe{sources: []string{"smp.S", "lib64.S"}}, nil
	case Probe:
		return recipe{sources: []string{"probe.S", "lib64.S"}}, nil
	case EmuFail:
		return recipe{sources: []string{"emufail.S", "lib64.S"}}, nil
	case VirtioBlk:
		return recipe{sources: []string{"virtioblk_start.S", "virtioblk.c", "lib64.S"}}, nil
	}
	return recipe{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownGuest, name, strings.Join(Names(), ", "))
}

// Build returns the path of the guest called name (one of Names), built
// now or earlier from the sources in src/. With $WISP_TEST_GUESTS set it
// returns the prebuilt file from there. It skips the test, saying why, if
// gcc or binutils are missing, and fails it if the build fails.
func Build(t testing.TB, name string) string {
	t.Helper()
	if _, err := recipeFor(name); err != nil {
		t.Fatalf("guests.Build: %v", err)
	}
	if dir := os.Getenv(EnvPrebuilt); dir != "" {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("guests.Build: %s=%s has no prebuilt %s: %v", EnvPrebuilt, dir, name, err)
		}
		return path
	}
	path, err := Compile(name)
	if errors.Is(err, ErrNoToolchain) {
		t.Skipf("SKIP: cannot build test guest %s: %v, and %s is not set to a directory of prebuilt guests",
			name, err, EnvPrebuilt)
	}
	if err != nil {
		t.Fatalf("guests.Build: %v", err)
	}
	return path
}

// Compile builds the guest called name from the sources in src/ (or finds
// it in the cache) and returns its path. It ignores $WISP_TEST_GUESTS. An
// error matches ErrNoToolchain when gcc or binutils are missing.
func Compile(name string) (string, error) {
	if _, err := recipeFor(name); err != nil {
		return "", err
	}
	if missing := missingTools(); len(missing) > 0 {
		return "", fmt.Errorf("%w: %s not found in PATH (apt-get install gcc binutils)", ErrNoToolchain, strings.Join(missing, ", "))
	}
	root, err := cacheRoot()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	return build(root, name)
}

func missingTools() []string {
	var missing []string
	for _, tool := range tools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	return missing
}

// cacheRoot is $WISP_CACHE/test-guests, else <user cache>/wisp/test-guests,
// else a directory under the system temp dir (no $HOME, as in CI sandboxes).
func cacheRoot() (string, error) {
	var root string
	if dir := os.Getenv(EnvCache); dir != "" {
		root = filepath.Join(dir, "test-guests")
	} else if dir, err := os.UserCacheDir(); err == nil {
		root = filepath.Join(dir, "wisp", "test-guests")
	} else {
		root = filepath.Join(os.TempDir(), "wisp-cache", "test-guests")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("create guest cache: %w", err)
	}
	return root, nil
}

// build builds name under root/<hash>/name unless it is there already. A
// build happens in a temporary directory and is renamed into place, so
// test processes building the same guest at once do not see half a file.
func build(root, name string) (string, error) {
	r, err := recipeFor(name)
	if err != nil {
		return "", err
	}
	defs := defines()
	script := linkerScript(r)
	key, err := buildKey(name, r, defs, script)
	if err != nil {
		return "", err
	}
	final := filepath.Join(root, key, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}

	tmp, err := os.MkdirTemp(root, "build-")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	srcDir := filepath.Join(tmp, "src")
	src, err := fs.Sub(sources, "src")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	if err := os.CopyFS(srcDir, src); err != nil {
		return "", fmt.Errorf("build %s: copy sources: %w", name, err)
	}
	scriptPath := filepath.Join(tmp, "link.ld")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}

	arch, emulation := "-m64", "elf_x86_64"
	if r.kind == flat16 {
		arch, emulation = "-m32", "elf_i386"
	}
	var objects []string
	for _, src := range r.sources {
		obj := filepath.Join(tmp, strings.TrimSuffix(strings.TrimSuffix(src, ".S"), ".c")+".o")
		args := append([]string{arch, "-c", "-nostdinc", "-ffreestanding", "-I", srcDir}, defs...)
		if strings.HasSuffix(src, ".c") {
			args = append(args, cFlags()...)
		}
		args = append(args, "-o", obj, filepath.Join(srcDir, src))
		if err := run(name, "gcc", args...); err != nil {
			return "", err
		}
		objects = append(objects, obj)
	}
	elfPath := filepath.Join(tmp, "out.elf")
	ldArgs := []string{"-m", emulation, "-nostdlib", "-static", "--build-id=none",
		"-z", "noexecstack", "-z", "max-page-size=4096", "--no-warn-rwx-segments",
		"-T", scriptPath, "-o", elfPath}
	if err := run(name, "ld", append(ldArgs, objects...)...); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, name)
	if r.kind == flat16 {
		if err := run(name, "objcopy", "-O", "binary", elfPath, out); err != nil {
			return "", err
		}
	} else if err := os.Rename(elfPath, out); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	if err := os.Rename(out, final); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	return final, nil
}

// cFlags compile C for a bare 64-bit guest: no libc, no position
// independence, no red zone (interrupt handlers run on the same stack),
// general-purpose registers only (nothing set up the FPU or SSE), no
// stack protector or unwind tables. Objects are linked like the assembly
// ones.
func cFlags() []string {
	return []string{"-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
		"-fno-pic", "-fno-pie", "-mno-red-zone", "-mgeneral-regs-only", "-mcmodel=small",
		"-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
		"-fno-builtin", "-fcf-protection=none"}
}

func run(guest, tool string, args ...string) error {
	cmd := exec.Command(tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %s %s: %w\n%s", guest, tool, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// buildKey hashes everything that decides the output: the recipe, the -D
// flags, the linker script and every source file.
func buildKey(name string, r recipe, defs []string, script string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "guest %s\nrecipe %+v\nscript %s\n", name, r, script)
	for _, d := range defs {
		fmt.Fprintf(h, "def %s\n", d)
	}
	err := fs.WalkDir(sources, "src", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := sources.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "file %s %d\n", path, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash guest sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// defines are the -D flags every source is built with.
func defines() []string {
	nums := map[string]uint64{
		"COM1_PORT":                COM1Port,
		"MARKER_PORT":              MarkerPort,
		"BOOT_MARKER":              BootMarker,
		"POWEROFF_PORT":            PowerOffPort,
		"POWEROFF_VALUE":           PowerOffValue,
		"REALMODE_ADDR":            RealModeAddr,
		"MMIO_WRITE_ADDR":          MMIOWriteAddr,
		"MMIO_READ_ADDR":           MMIOReadAddr,
		"MMIO_WRITE_VALUE":         MMIOWriteValue,
		"LAPIC_ADDR":               LAPICAddr,
		"PVH_START_MAGIC":          PVHStartMagic,
		"XEN_ELFNOTE_PHYS32_ENTRY": xenElfnotePhys32Entry,
		"SMP_MAX_CPUS":             SMPMaxCPUs,
		"SMP_WAIT_SPINS":           smpWaitSpins,
		"SMP_COUNT_SPINS":          smpCountSpins,
		"EMUFAIL_TARGET":           EmuFailTarget,
		"PROBE_TIMER_VECTOR":       probe.TimerVector,
		"PROBE_TIMER_COUNT":        probe.TimerCount,
		"PROBE_TIMER_SPINS":        probe.TimerSpins,
		"VIRTIO_BAR_ADDR":          VirtioBARAddr,
		"VIRTIO_BAR_SIZE":          vpci.BARSize,
		"VIRTIO_MSI_VECTOR":        VirtioMSIVector,
		"VIRTIO_WRITE_SECTOR":      VirtioBlkWriteSector,
		"VIRTIO_READ_SECTOR":       VirtioBlkReadSector,
		"VIRTIO_MIN_SECTORS":       VirtioBlkMinSectors,
		"VIRTIO_WRITE_SEED":        VirtioBlkWriteSeed,
		"VIRTIO_READ_SEED":         VirtioBlkReadSeed,
		"VIRTIO_SPINS":             virtioSpins,
		"ECAM_BASE":                acpi.DefaultECAMBase,
	}
	for _, m := range probe.Macros() {
		nums[m.Name] = uint64(m.Step)
	}
	strs := map[string]string{
		"REALMODE_MSG":             RealModeOutput,
		"LONGMODE_MSG":             LongModeOutput,
		"PVH_MSG":                  PVHOutput,
		"PVH_BAD_MSG":              PVHBadStartInfoOutput,
		"MMIO_MSG":                 mmioPrefix,
		"TRIPLEFAULT_MSG":          TripleFaultOutput,
		"TRIPLEFAULT_SURVIVED_MSG": TripleFaultSurvivedOutput,
		"SMP_DONE_MSG":             smpDonePrefix,
		"SMP_TIMEOUT_MSG":          smpTimeoutPrefix,
		"EMUFAIL_MSG":              EmuFailOutput,
		"VIRTIO_OK_MSG":            VirtioBlkOutput,
		"VIRTIO_FAIL_MSG":          VirtioBlkFailPrefix,
	}
	var defs []string
	for k, v := range nums {
		defs = append(defs, fmt.Sprintf("-D%s=%#x", k, v))
	}
	for k, v := range strs {
		// strconv.Quote writes C-style escapes (\n), which gas's .asciz reads.
		defs = append(defs, fmt.Sprintf("-D%s=%s", k, strconv.Quote(v)))
	}
	sort.Strings(defs)
	return defs
}

// linkerScript places a guest: flat binaries at RealModeAddr, ELF guests
// in one RWX PT_LOAD segment at ELFAddr (physical = virtual), .param first
// so SMP's count lands at SMPExpectedAddr, and for PVH a PT_NOTE for the
// Xen note that a loader finds through the program headers.
func linkerScript(r recipe) string {
	if r.kind == flat16 {
		return fmt.Sprintf(`OUTPUT_FORMAT(elf32-i386)
ENTRY(_start)
SECTIONS {
	. = %#x;
	.text : { *(.text*) *(.rodata*) *(.data*) *(.bss*) }
	/DISCARD/ : { *(.note*) *(.comment) *(.eh_frame*) }
}
`, RealModeAddr)
	}
	phdrNote, secNote := "", ""
	if r.pvhNote {
		phdrNote = "\tnote PT_NOTE FLAGS(4);\n"
		secNote = "\t.note.Xen : { *(.note.Xen) } :image :note\n"
	}
	return fmt.Sprintf(`OUTPUT_FORMAT(elf64-x86-64)
ENTRY(_start)
PHDRS {
	image PT_LOAD FLAGS(7);
%s}
SECTIONS {
	. = %#x;
	.param : { *(.param) } :image
	.text : { *(.text*) } :image
	.rodata : { *(.rodata*) } :image
%s	.data : { *(.data*) } :image
	.bss : { *(.bss*) *(COMMON) } :image
	/DISCARD/ : { *(.note.GNU-stack) *(.note.gnu*) *(.comment) *(.eh_frame*) }
}
`, phdrNote, ELFAddr, secNote)
}
