package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

// archiveEntry is one record of an initramfs read back.
type archiveEntry struct {
	mode uint64
	data []byte
	rdev [2]uint64
}

func readInitramfs(t *testing.T, path string) map[string]archiveEntry {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	recs, err := cpio.ReadAllRecords(cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(raw))})
	require.NoError(t, err)
	out := map[string]archiveEntry{}
	for _, r := range recs {
		e := archiveEntry{mode: r.Mode, rdev: [2]uint64{r.Rmajor, r.Rminor}}
		if r.ReaderAt != nil && r.FileSize > 0 {
			e.data, err = io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			require.NoError(t, err)
		}
		out[r.Name] = e
	}
	return out
}

func requireBusybox(t *testing.T) {
	t.Helper()
	if !isStaticELF(busyboxPath) && !hasApt() {
		t.Skipf("%s is not a static busybox and there is no apt-get to install %s", busyboxPath, busyboxPackage)
	}
}

// checkBase checks what every default initramfs holds.
func checkBase(t *testing.T, files map[string]archiveEntry) {
	t.Helper()
	initEntry, ok := files["init"]
	require.True(t, ok, "/init")
	assert.Equal(t, uint64(cpio.S_IFREG|0o755), initEntry.mode)
	f, err := elf.NewFile(bytes.NewReader(initEntry.data))
	require.NoError(t, err, "/init is ELF")
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "/init must be static")
	}

	assert.Equal(t, uint64(cpio.S_IFREG|0o755), files["bin/busybox"].mode)
	sh := files["bin/sh"]
	assert.Equal(t, uint64(cpio.S_IFLNK|0o777), sh.mode)
	assert.Equal(t, "/bin/busybox", string(sh.data))
	for _, applet := range []string{"bin/ls", "bin/mount", "bin/cat"} {
		assert.Contains(t, files, applet)
	}
	assert.Equal(t, archiveEntry{mode: cpio.S_IFCHR | 0o600, rdev: [2]uint64{5, 1}}, files["dev/console"])
	assert.Equal(t, uint64(cpio.S_IFDIR|0o1777), files["tmp"].mode)
	for _, d := range []string{"proc", "sys", "dev", "run", "root", "etc/wisp"} {
		assert.Equal(t, uint64(cpio.S_IFDIR), files[d].mode&cpio.S_IFMT, d)
	}
}

func TestDefaultInitramfsNoModules(t *testing.T) {
	requireBusybox(t)
	kit := &Kit{CacheDir: t.TempDir()}
	ctx := context.Background()
	// A kernel with everything built in, like the minimal one.
	kern := &Kernel{Version: "6.1.192", Image: "/nonexistent/bzImage"}
	path, err := kit.DefaultInitramfs(ctx, kern)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(kit.CacheDir, "initramfs"), filepath.Dir(path))

	files := readInitramfs(t, path)
	checkBase(t, files)
	assert.NotContains(t, files, strings.TrimPrefix(initproto.ModulesFile, "/"))
	assert.NotContains(t, files, "lib/modules")

	// The same inputs give the same archive, so the same path.
	again, err := kit.DefaultInitramfs(ctx, kern)
	require.NoError(t, err)
	assert.Equal(t, path, again)
	left, _ := filepath.Glob(filepath.Join(kit.CacheDir, "initramfs", ".tmp-*"))
	assert.Empty(t, left)
}

// TestDefaultInitramfsDebian builds the initramfs for Debian's cloud
// kernel, whose virtio drivers are modules, and checks the module list is
// complete and in dependency order (read from each module's .modinfo,
// since a kernel unpacked from its .deb has no modules.dep).
func TestDefaultInitramfsDebian(t *testing.T) {
	requireBusybox(t)
	if !hasApt() {
		t.Skip("no apt: Debian's kernel cannot be fetched here")
	}
	ctx := context.Background()
	kern, err := (&Kit{CacheDir: DefaultCacheDir(), Progress: testWriter{t}}).DebianKernel(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, kern.ModulesDir)

	path, err := (&Kit{CacheDir: t.TempDir()}).DefaultInitramfs(ctx, kern)
	require.NoError(t, err)
	files := readInitramfs(t, path)
	checkBase(t, files)

	list, ok := files[strings.TrimPrefix(initproto.ModulesFile, "/")]
	require.True(t, ok, "module list")
	var loaded []string
	for _, line := range strings.Split(string(list.data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		require.True(t, strings.HasPrefix(line, "/lib/modules/"+kern.Version+"/"), line)
		e, ok := files[strings.TrimPrefix(line, "/")]
		require.True(t, ok, "listed module %s is in the archive", line)
		require.True(t, bytes.HasPrefix(e.data, []byte("\x7fELF")), "%s is decompressed ELF", line)
		loaded = append(loaded, moduleName(line))
	}
	pos := indexOf(loaded)
	tree, err := loadModuleTree(kern.ModulesDir)
	require.NoError(t, err)
	for _, want := range DefaultModules() {
		if !tree.builtin[want] {
			assert.Contains(t, pos, want)
		}
	}
	for _, m := range loaded {
		deps, err := tree.dependencies(m)
		require.NoError(t, err)
		for _, d := range deps {
			if tree.builtin[d] {
				continue
			}
			require.Contains(t, pos, d, "%s needs %s", m, d)
			assert.Less(t, pos[d], pos[m], "%s must load before %s", d, m)
		}
	}
}
