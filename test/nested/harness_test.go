package nested

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

func TestInitramfsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "bin")
	require.NoError(t, os.WriteFile(host, []byte("#!binary"), 0o755))
	tree := filepath.Join(dir, "tree")
	require.NoError(t, os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tree, "a", "b", "f.txt"), []byte("deep"), 0o644))

	ird := NewInitramfs()
	require.NoError(t, ird.AddFile("/init", host))
	require.NoError(t, ird.AddFile("/tests/x/y.test", host))
	ird.AddBytes("/nested.json", []byte("{}"), 0o644)
	require.NoError(t, ird.AddTree("/files", tree))
	ird.AddDir("/tests") // already there as a parent: not written twice
	out := filepath.Join(dir, "ird.cpio")
	require.NoError(t, ird.Write(out))

	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	require.NoError(t, err)
	byName := map[string]cpio.Record{}
	var order []string
	for _, r := range recs {
		require.NotContains(t, byName, r.Name, "written once")
		byName[r.Name] = r
		order = append(order, r.Name)
	}
	content := func(name string) string {
		r := byName[name]
		b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		require.NoError(t, err)
		return string(b)
	}
	assert.Equal(t, "#!binary", content("init"))
	assert.EqualValues(t, cpio.S_IFREG|0o755, byName["init"].Mode)
	assert.Equal(t, "#!binary", content("tests/x/y.test"))
	assert.Equal(t, "{}", content("nested.json"))
	assert.Equal(t, "deep", content("files/a/b/f.txt"))
	console := byName["dev/console"]
	assert.EqualValues(t, cpio.S_IFCHR|0o600, console.Mode)
	assert.EqualValues(t, 5, console.Rmajor)
	assert.EqualValues(t, 1, console.Rminor)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "tests", "tests/x", "files", "files/a", "files/a/b"} {
		assert.EqualValues(t, cpio.S_IFDIR, byName[d].Mode&cpio.S_IFMT, d)
	}
	index := func(name string) int {
		for i, n := range order {
			if n == name {
				return i
			}
		}
		return -1
	}
	assert.Less(t, index("tests/x"), index("tests/x/y.test"), "a directory comes before what it holds")
}

func TestInitramfsRefusesDuplicatesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(host, nil, 0o644))
	ird := NewInitramfs()
	require.NoError(t, ird.AddFile("/x", host))
	require.NoError(t, ird.AddFile("/x", host))
	assert.ErrorContains(t, ird.Write(filepath.Join(dir, "out")), "added twice")
	assert.Error(t, NewInitramfs().AddFile("/d", dir), "a directory is not a file")
}

// TestInitramfsCloneForARetry: a retry adds init and the plan to a copy
// of the same files again, which must not count as adding them twice.
func TestInitramfsCloneForARetry(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(host, nil, 0o644))
	shared := NewInitramfs()
	require.NoError(t, shared.AddFile("/tests/a.test", host))
	for i := range 2 {
		ird := shared.Clone()
		require.NoError(t, ird.AddFile("/init", host))
		assert.NoError(t, ird.Write(filepath.Join(dir, fmt.Sprint("out", i))), "boot %d", i+1)
	}
}

func TestKernelIn(t *testing.T) {
	root := t.TempDir()
	_, err := kernelIn(root)
	assert.ErrorIs(t, err, ErrNoKernel)

	touch := func(rel string) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, nil, 0o644))
	}
	touch("boot/vmlinuz-6.1.0-9-cloud-amd64")
	_, err = kernelIn(root)
	assert.ErrorIs(t, err, ErrNoKernel, "modules missing")
	assert.ErrorContains(t, err, "irqbypass.ko")

	mods := "lib/modules/6.1.0-9-cloud-amd64/kernel/"
	touch(mods + "virt/lib/irqbypass.ko")
	touch(mods + "arch/x86/kvm/kvm.ko")
	touch(mods + "arch/x86/kvm/kvm-amd.ko")
	k, err := kernelIn(root)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "boot/vmlinuz-6.1.0-9-cloud-amd64"), k.Image)
	assert.Equal(t, []string{
		filepath.Join(root, mods, "virt/lib/irqbypass.ko"),
		filepath.Join(root, mods, "arch/x86/kvm/kvm.ko"),
		filepath.Join(root, mods, "arch/x86/kvm/kvm-amd.ko"),
	}, k.Modules)
}

func TestFindKernelHonoursTheEnvironment(t *testing.T) {
	_, err := FindKernel(t.Context(), env(map[string]string{EnvKernelRoot: t.TempDir()}))
	assert.ErrorIs(t, err, ErrNoKernel, "an empty root has no kernel, and the kit is not asked")
}

func TestParseListLine(t *testing.T) {
	p, err := parseListLine("./vmm/kvmvm", "github.com/wisp-vmm/wisp/vmm/kvmvm\t/work/main/vmm/kvmvm\t2\t1\t")
	require.NoError(t, err)
	assert.Equal(t, TestPackage{Pattern: "./vmm/kvmvm", ImportPath: "github.com/wisp-vmm/wisp/vmm/kvmvm",
		Dir: "/work/main/vmm/kvmvm", Name: "vmm/kvmvm", HasTests: true}, p)
	assert.Equal(t, "vmm.kvmvm", p.SubtestName())
	assert.Equal(t, "vmm.kvmvm.test", p.BinaryName())

	p, err = parseListLine("./test/kvm", "./test/kvm\t\t0\t0\tstat /work/main/test/kvm: directory not found")
	require.NoError(t, err)
	assert.Empty(t, p.Dir)
	assert.False(t, p.HasTests)
	assert.Equal(t, "stat /work/main/test/kvm: directory not found", p.Problem)

	_, err = parseListLine("./x", "garbage")
	assert.Error(t, err)
}

func TestVMArgs(t *testing.T) {
	vm := VM{QEMU: "q", Kernel: "k", Initrd: "i", CPUs: 2, MemoryMiB: 2048, Cmdline: DefaultCmdline}
	assert.Equal(t, []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048M",
		"-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", "k", "-initrd", "i", "-append", "console=ttyS0 panic=-1 quiet",
	}, vm.Args())
}

func TestRunReportsAMissingEmulator(t *testing.T) {
	err := Run(t.Context(), VM{QEMU: filepath.Join(t.TempDir(), "no-qemu")}, 0, func(string) {})
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrTimeout))
}

func TestParseLDD(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007f0458686000)
	libbfd-2.40-system.so => /lib/x86_64-linux-gnu/libbfd-2.40-system.so (0x00007f0458415000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0458158000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0458688000)
`
	libs, err := parseLDD(out)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"/lib/x86_64-linux-gnu/libbfd-2.40-system.so",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib64/ld-linux-x86-64.so.2",
	}, libs)

	_, err = parseLDD("\tlibfoo.so.1 => not found\n")
	assert.ErrorContains(t, err, "libfoo")
}

// A VM that stops printing is killed after the stall time and reported as
// stalled, not left to the overall deadline.
func TestRunDetectsAStalledVM(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "fake-qemu")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\necho booting\nexec sleep 600\n"), 0o755))
	var lines []string
	err := Run(t.Context(), VM{QEMU: fake}, 300*time.Millisecond, func(l string) { lines = append(lines, l) })
	require.ErrorIs(t, err, ErrStalled)
	assert.Equal(t, []string{"booting"}, lines)
}

// After a stall, only the binaries that did not end run again, and their
// new results replace the unfinished ones.
func TestRetryRunsOnlyUnfinishedBinaries(t *testing.T) {
	plan := protocol.Plan{Binaries: []protocol.Binary{{Name: "a"}, {Name: "b"}, {Name: "c"}}}
	first := &Results{Binaries: []*BinaryResult{{Name: "a", Ended: true}, {Name: "b"}}}
	unfinished := unfinishedBinaries(plan, first)
	require.Equal(t, []protocol.Binary{{Name: "b"}, {Name: "c"}}, unfinished)

	retry := &Results{Binaries: []*BinaryResult{{Name: "b", Ended: true}, {Name: "c", Ended: true}}, Done: true, KVM: "api=12"}
	first.Merge(retry)
	require.Len(t, first.Binaries, 3)
	for _, b := range first.Binaries {
		assert.True(t, b.Ended, b.Name)
	}
	assert.True(t, first.Done)
	assert.Equal(t, "api=12", first.KVM)
}
