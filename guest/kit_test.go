package guest

import (
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/guest/kconfig"
)

// requireELF64 checks path is an x86-64 ELF executable and returns it.
func requireELF64(t *testing.T, path string) *elf.File {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	assert.Equal(t, elf.ELFCLASS64, f.Class)
	assert.Equal(t, elf.EM_X86_64, f.Machine)
	assert.Equal(t, elf.ET_EXEC, f.Type)
	return f
}

// hasPVHNote reports whether the ELF has Xen's PHYS32_ENTRY note (type 18
// in a "Xen" note), the entry point PVH boot uses.
func hasPVHNote(t *testing.T, f *elf.File) bool {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		_, err := p.ReadAt(b, 0)
		require.NoError(t, err)
		for len(b) >= 12 {
			namesz := f.ByteOrder.Uint32(b[0:])
			descsz := f.ByteOrder.Uint32(b[4:])
			typ := f.ByteOrder.Uint32(b[8:])
			nameEnd := 12 + (namesz+3)&^3
			end := nameEnd + (descsz+3)&^3
			if uint64(end) > uint64(len(b)) {
				break
			}
			if string(bytes.TrimRight(b[12:12+namesz], "\x00")) == "Xen" && typ == 18 {
				return true
			}
			b = b[end:]
		}
	}
	return false
}

func requireNoStaging(t *testing.T, dir string) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	require.NoError(t, err)
	require.Empty(t, left, "staging directories left behind")
}

func TestDebianKernel(t *testing.T) {
	if !hasApt() {
		t.Skip("no apt-get/apt-cache/dpkg-deb on this host: DebianKernel would use /boot; the apt path cannot be tested here")
	}
	// A fresh cache, so this really resolves, downloads and unpacks.
	kit := &Kit{CacheDir: t.TempDir(), Progress: testWriter{t}}
	ctx := context.Background()
	kern, err := kit.DebianKernel(ctx)
	require.NoError(t, err)
	t.Logf("Debian kernel %s: %s", kern.Version, kern.Image)

	assert.Regexp(t, `^\d+\.\d+\.\d+-\d+-cloud-amd64$`, kern.Version)
	img, err := os.ReadFile(kern.Image)
	require.NoError(t, err)
	require.Greater(t, len(img), 0x250)
	assert.Equal(t, "HdrS", string(img[hdrMagic:hdrMagic+4]), "vmlinuz is a bzImage")

	require.NotEmpty(t, kern.ELF, "Debian's lz4 bzImage payload must yield an ELF vmlinux")
	f := requireELF64(t, kern.ELF)
	assert.True(t, hasPVHNote(t, f), "Debian's cloud kernel has CONFIG_PVH=y, so its vmlinux has the PVH note")

	require.NotEmpty(t, kern.ModulesDir)
	assert.Equal(t, kern.Version, filepath.Base(kern.ModulesDir))
	for _, m := range []string{"kernel/drivers/net/virtio_net.ko", "kernel/drivers/virtio/virtio_pci.ko", "modules.builtin"} {
		assert.FileExists(t, filepath.Join(kern.ModulesDir, m))
	}
	requireNoStaging(t, filepath.Join(kit.CacheDir, "kernels"))

	// The second call is served from the cache.
	again, err := kit.DebianKernel(ctx)
	require.NoError(t, err)
	assert.Equal(t, kern, again)
	_, err = readResolution(filepath.Join(kit.CacheDir, "kernels"))
	require.NoError(t, err)
}

// TestBootKernelFallback checks the no-apt fallback on a fake /boot holding
// a copy of Debian's kernel (fetched into the shared cache).
func TestBootKernelFallback(t *testing.T) {
	if !hasApt() {
		t.Skip("no apt: no Debian kernel to lay out a fake /boot with")
	}
	ctx := context.Background()
	deb, err := (&Kit{CacheDir: DefaultCacheDir()}).DebianKernel(ctx)
	require.NoError(t, err)

	root := t.TempDir()
	boot := filepath.Join(root, "boot")
	modules := filepath.Join(root, "lib", "modules")
	require.NoError(t, os.MkdirAll(boot, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(modules, "6.1.0-99-cloud-amd64"), 0o755))
	require.NoError(t, copyFile(deb.Image, filepath.Join(boot, "vmlinuz-6.1.0-99-cloud-amd64")))
	require.NoError(t, os.WriteFile(filepath.Join(boot, "vmlinuz-6.1.0-10-amd64"), []byte("not a kernel"), 0o644))

	kit := &Kit{CacheDir: t.TempDir()}
	_, err = kit.bootKernel(ctx, filepath.Join(root, "empty"), modules, "")
	require.ErrorIs(t, err, ErrNoKernel)

	// The last by name, with its modules and an extracted ELF.
	kern, err := kit.bootKernel(ctx, boot, modules, "5.10.0-1-amd64")
	require.NoError(t, err)
	assert.Equal(t, "6.1.0-99-cloud-amd64", kern.Version)
	assert.Equal(t, filepath.Join(modules, "6.1.0-99-cloud-amd64"), kern.ModulesDir)
	requireELF64(t, kern.ELF)
	again, err := kit.bootKernel(ctx, boot, modules, "")
	require.NoError(t, err)
	assert.Equal(t, kern, again, "cached ELF reused")

	// The running kernel wins; one that is not a bzImage has no ELF.
	kern, err = kit.bootKernel(ctx, boot, modules, "6.1.0-10-amd64")
	require.NoError(t, err)
	assert.Equal(t, "6.1.0-10-amd64", kern.Version)
	assert.Empty(t, kern.ELF)
	assert.Empty(t, kern.ModulesDir)
	requireNoStaging(t, filepath.Join(kit.CacheDir, "kernels"))
}

func TestMinimalKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the minimal kernel takes minutes (it is cached in $WISP_CACHE afterwards)")
	}
	if !hasApt() {
		t.Skip("no apt-get: cannot install linux-source-6.1 to build the minimal kernel")
	}
	// The shared cache: a full build takes minutes, so it is done once and
	// later runs check the cached result and the cache-hit path.
	kit := &Kit{CacheDir: DefaultCacheDir(), Progress: progressFor(t)}
	ctx := context.Background()
	kern, err := kit.MinimalKernel(ctx)
	require.NoError(t, err)
	t.Logf("minimal kernel %s: %s", kern.Version, kern.Image)

	assert.Empty(t, kern.ModulesDir, "the minimal kernel has no modules")
	f := requireELF64(t, kern.ELF)
	assert.True(t, hasPVHNote(t, f), "CONFIG_PVH=y puts the PVH entry note in vmlinux")

	// The bzImage's payload is the same kernel: same entry point and
	// loadable segments as the vmlinux the build left.
	img, err := os.ReadFile(kern.Image)
	require.NoError(t, err)
	payload, err := ExtractVmlinux(img)
	require.NoError(t, err)
	pf, err := elf.NewFile(bytes.NewReader(payload))
	require.NoError(t, err)
	assert.Equal(t, f.Entry, pf.Entry)
	require.Equal(t, len(f.Progs), len(pf.Progs))
	for i := range f.Progs {
		assert.Equal(t, f.Progs[i].ProgHeader, pf.Progs[i].ProgHeader, "program header %d", i)
	}

	// The cached .config holds every option of the fragment.
	require.NoError(t, verifyConfig(filepath.Join(filepath.Dir(kern.Image), "config")))

	cached, err := kit.MinimalKernelCached(ctx)
	require.NoError(t, err)
	assert.Equal(t, kern, cached)
	again, err := kit.MinimalKernel(ctx)
	require.NoError(t, err)
	assert.Equal(t, kern, again)
	requireNoStaging(t, filepath.Join(kit.CacheDir, "kernels"))
}

func TestMinimalKernelCachedMisses(t *testing.T) {
	_, err := (&Kit{CacheDir: t.TempDir()}).MinimalKernelCached(context.Background())
	require.ErrorIs(t, err, ErrNotCached)
}

func TestMinimalKey(t *testing.T) {
	frag := kconfig.MicroVM()
	base := minimalKey(frag, "6.1.192-2")
	assert.Len(t, base, 12)
	assert.Equal(t, base, minimalKey(frag, "6.1.192-2"), "stable")
	assert.NotEqual(t, base, minimalKey(frag, "6.1.192-3"), "source version matters")
	assert.NotEqual(t, base, minimalKey(frag+"CONFIG_IPV6=y\n", "6.1.192-2"), "fragment matters")
	assert.NotEqual(t, minimalKey("ab", "c"), minimalKey("a", "bc"), "parts are separated")
}

func TestIsObjectLine(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"  CC      kernel/fork.o", true},
		{"  AS      arch/x86/entry/entry_64.o", true},
		{"  CC      scripts/mod/empty.o", true},
		{"  LD      vmlinux.o", false},
		{"  HOSTCC  scripts/basic/fixdep", false},
		{"  CC      kernel/bounds.s", false},
		{"  GEN     Makefile", false},
		{"", false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, isObjectLine(tc.line), tc.line)
	}
}

func TestParseAptDepends(t *testing.T) {
	out := `linux-image-cloud-amd64
  Depends: linux-image-6.1.0-56-cloud-amd64
 |Depends: initramfs-tools
  Depends: linux-initramfs-tool
  Depends: <virtual-thing>
  Recommends: firmware-linux-free
`
	assert.Equal(t, []string{"linux-image-6.1.0-56-cloud-amd64", "initramfs-tools"}, parseAptDepends([]byte(out)))
	assert.Equal(t, "6.1.192-2", parseAptCandidate([]byte("foo:\n  Installed: (none)\n  Candidate: 6.1.192-2\n")))
	assert.Equal(t, "", parseAptCandidate([]byte("foo:\n  Installed: (none)\n  Candidate: (none)\n")))
}

func TestSafeName(t *testing.T) {
	assert.Equal(t, "1_1.35.0-4+deb12u1+b1", safeName("1:1.35.0-4+deb12u1+b1"))
	assert.Equal(t, "6.1.192-2", safeName("6.1.192-2"))
	assert.Equal(t, "a_b", safeName("a/b"))
}

// progressFor shows progress bars on stderr with -v; otherwise progress
// is discarded (a bar redraws too often for the test log).
func progressFor(t testing.TB) io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

// testWriter sends progress to the test log, line by line.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\r\n"))
	return len(p), nil
}
