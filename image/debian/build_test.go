package debian

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/image/internal/progress"
	"github.com/wisp-vmm/wisp/image/vmdir"
	"github.com/wisp-vmm/wisp/internal/cache"
	"github.com/wisp-vmm/wisp/internal/command"
	"github.com/wisp-vmm/wisp/vmm"
)

// imagesCache is the cache real builds use, outside the repository and
// shared with `wisp image build`, so the default image is built once.
func imagesCache() string { return filepath.Join(guest.DefaultCacheDir(), "images") }

// needBuilder skips tests that run mmdebstrap where they cannot.
func needBuilder(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building a Debian image (minutes the first time)")
	}
	if os.Geteuid() != 0 {
		t.Skip("image builds need root (mmdebstrap root mode): run the tests as root")
	}
	if err := command.Need(buildTools); err != nil {
		t.Skipf("cannot build images here: %v (the Makefile's deps target installs them)", err)
	}
}

// testLog sends progress lines to the test log.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		l.t.Log(line)
	}
}

// buildDefault builds (or copies from the cache) the default image.
func buildDefault(t *testing.T) (string, *Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vm")
	b := &Builder{CacheDir: imagesCache(), Progress: &testLog{t: t}}
	start := time.Now()
	res, err := b.Build(context.Background(), Options{}, out)
	require.NoError(t, err)
	t.Logf("default image: cached=%v in %v", res.Cached, time.Since(start).Round(time.Millisecond))
	return out, res
}

// debugfsCat reads a file out of an ext4 image.
func debugfsCat(t *testing.T, disk, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, disk).Output()
	require.NoError(t, err)
	return string(out)
}

// debugfsStat returns debugfs's stat output (empty if missing).
func debugfsStat(t *testing.T, disk, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+path, disk).Output()
	require.NoError(t, err)
	return string(out)
}

func TestBuildDefaultImage(t *testing.T) {
	needBuilder(t)
	out, res := buildDefault(t)
	assert.NotEmpty(t, res.KernelVersion)

	for _, f := range []string{"disk.raw", KernelFile, InitrdFile, vmdir.FileName, RunScript} {
		st, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err, f)
		assert.True(t, st.Mode().IsRegular(), f)
	}
	st, err := os.Stat(filepath.Join(out, RunScript))
	require.NoError(t, err)
	assert.NotZero(t, st.Mode()&0o100, "run.sh is executable")
	script, err := os.ReadFile(filepath.Join(out, RunScript))
	require.NoError(t, err)
	assert.Contains(t, string(script), `run --vm "$(dirname "$0")"`)

	m, err := vmdir.Load(out)
	require.NoError(t, err)
	assert.Equal(t, Cmdline(), m.Cmdline)
	assert.Equal(t, []vmdir.Disk{{Path: filepath.Join(out, "disk.raw"), Format: "raw"}}, m.Disks)
	assert.Equal(t, uint64(DefaultMemory), m.MemoryBytes)

	disk := filepath.Join(out, "disk.raw")
	dst, err := os.Stat(disk)
	require.NoError(t, err)
	assert.Equal(t, int64(DefaultSize), dst.Size())
	var sys unix.Stat_t
	require.NoError(t, unix.Stat(disk, &sys))
	assert.Less(t, sys.Blocks*512, int64(DefaultSize)/2, "the copy is sparse")

	// The filesystem holds what configure wrote, read without mounting.
	stats, err := exec.Command("debugfs", "-R", "stats", disk).Output()
	require.NoError(t, err)
	assert.Contains(t, string(stats), "Filesystem volume name:   "+RootLabel)
	assert.Contains(t, debugfsCat(t, disk, "/etc/fstab"), "LABEL="+RootLabel+"\t/\text4")
	assert.Equal(t, DefaultHostname+"\n", debugfsCat(t, disk, "/etc/hostname"))
	assert.Contains(t, debugfsCat(t, disk, "/etc/systemd/network/80-wisp-dhcp.network"), "Name=en* eth*")
	assert.Contains(t, debugfsCat(t, disk, "/etc/cloud/cloud.cfg.d/90_wisp.cfg"), "cidata")
	assert.Contains(t, debugfsCat(t, disk, "/etc/apt/sources.list"), "bookworm-security")
	assert.Empty(t, debugfsCat(t, disk, "/etc/machine-id"))
	for _, link := range []string{
		"/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
		"/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
		"/etc/systemd/system/ssh.service.wants/" + sshKeygenUnit,
		"/boot/vmlinuz",
		"/boot/initrd.img",
	} {
		assert.Contains(t, debugfsStat(t, disk, link), "Type: symlink", link)
	}
	sshDir, err := exec.Command("debugfs", "-R", "ls /etc/ssh", disk).Output()
	require.NoError(t, err)
	assert.NotContains(t, string(sshDir), "ssh_host_", "no shared host keys")
	archives, err := exec.Command("debugfs", "-R", "ls /var/cache/apt/archives", disk).Output()
	require.NoError(t, err)
	assert.NotContains(t, string(archives), ".deb", "downloaded packages are not left in the image")

	// ExtractBoot gets the same kernel and initrd out of the raw image and
	// of a qcow2 copy.
	wantKernel, err := os.ReadFile(filepath.Join(out, KernelFile))
	require.NoError(t, err)
	wantInitrd, err := os.ReadFile(filepath.Join(out, InitrdFile))
	require.NoError(t, err)
	qcow := filepath.Join(t.TempDir(), "disk.qcow2")
	require.NoError(t, image.Convert(context.Background(), disk, qcow, image.FormatQCOW2, nil))
	for _, d := range []string{disk, qcow} {
		kernel, initrd, root, err := image.ExtractBoot(context.Background(), d, t.TempDir())
		require.NoError(t, err, d)
		got, err := os.ReadFile(kernel)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(wantKernel, got), "%s: kernel differs", d)
		got, err = os.ReadFile(initrd)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(wantInitrd, got), "%s: initrd differs", d)
		assert.True(t, strings.HasPrefix(root, "root=UUID="), root)
	}

	// The second build of the same options comes from the cache.
	out2, res2 := buildDefault(t)
	assert.True(t, res2.Cached)
	assert.Equal(t, res.CacheEntry, res2.CacheEntry)
	st2, err := os.Stat(filepath.Join(out2, "disk.raw"))
	require.NoError(t, err)
	assert.Equal(t, dst.Size(), st2.Size())
}

// stagingLeft lists staging directories and the entry for key in dir.
func stagingLeft(t *testing.T, dir, key string) []string {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(dir, cache.StagingPrefix+key+"-*"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, key)); err == nil {
		left = append(left, filepath.Join(dir, key))
	}
	return left
}

func TestBuildTooSmall(t *testing.T) {
	needBuilder(t)
	// The default build records what the default package set takes, so
	// this fails at once; the first build of a package set checks after
	// installing (TestMakeFilesystemTooSmall).
	buildDefault(t)
	o := Options{Size: 400 << 20}
	out := filepath.Join(t.TempDir(), "vm")
	b := &Builder{CacheDir: imagesCache(), Progress: &testLog{t: t}}
	_, err := b.Build(context.Background(), o, out)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "--size 400M is too small: the installed system takes")
	assert.NotContains(t, err.Error(), "\n")
	assert.NoDirExists(t, out)
	assert.Empty(t, stagingLeft(t, imagesCache(), o.WithDefaults().CacheKey()))
}

func TestMakeFilesystemTooSmall(t *testing.T) {
	root := t.TempDir()
	// 300M of allocated (not written) blocks: more than MinSize holds.
	f, err := os.Create(filepath.Join(root, "big"))
	require.NoError(t, err)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 300<<20); err != nil {
		f.Close()
		t.Skipf("fallocate not supported here: %v", err)
	}
	require.NoError(t, f.Close())
	u, err := measure(root)
	require.NoError(t, err)
	raw := filepath.Join(t.TempDir(), "disk.raw")
	st := progress.New(nil, 1).Start("test")
	err = makeFilesystem(context.Background(), st, Options{Size: MinSize}.WithDefaults(), u, root, raw)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "--size 256M is too small: the installed system takes 30")
	assert.NoFileExists(t, raw, "checked before mkfs")
}

func TestMakeFilesystem(t *testing.T) {
	if err := command.Need(map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs"}); err != nil {
		t.Skipf("cannot test without the tools: %v", err)
	}
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("small\n"), 0o644))
	u, err := measure(root)
	require.NoError(t, err)
	raw := filepath.Join(t.TempDir(), "disk.raw")
	st := progress.New(nil, 1).Start("test")
	require.NoError(t, makeFilesystem(context.Background(), st, Options{Size: MinSize}.WithDefaults(), u, root, raw))
	assert.Equal(t, "small\n", debugfsCat(t, raw, "/etc/hostname"))
	stats, err := exec.Command("debugfs", "-R", "stats", raw).Output()
	require.NoError(t, err)
	assert.Contains(t, string(stats), "Filesystem volume name:   "+RootLabel)
	assert.NotContains(t, string(stats), "orphan_file", "bullseye's e2fsck could not check it")
}

func TestBuildBadInputLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		out  func(t *testing.T) string
		want string
	}{
		{"unknown release", Options{Release: "hamm"}, func(t *testing.T) string { return filepath.Join(t.TempDir(), "vm") },
			`--release "hamm": unknown Debian release; use one of bullseye, bookworm, trixie`},
		{"non-empty output", Options{}, func(t *testing.T) string {
			d := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(d, "precious"), []byte("keep"), 0o644))
			return d
		}, "is not empty (it holds precious): give a new or empty directory"},
		{"too small before building", Options{Size: 100 << 20}, func(t *testing.T) string { return filepath.Join(t.TempDir(), "vm") },
			"--size 100M is too small"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cacheDir := filepath.Join(t.TempDir(), "images")
			out := tt.out(t)
			before, _ := os.ReadDir(out)
			b := &Builder{CacheDir: cacheDir, Progress: &testLog{t: t}}
			_, err := b.Build(context.Background(), tt.o, out)
			require.ErrorIs(t, err, vmm.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n", "one line")
			assert.NoDirExists(t, cacheDir, "nothing cached")
			after, _ := os.ReadDir(out)
			assert.Equal(t, len(before), len(after), "output untouched")
			siblings, err := os.ReadDir(filepath.Dir(out))
			require.NoError(t, err)
			for _, s := range siblings {
				assert.False(t, strings.HasPrefix(s.Name(), "."), "left %s", s.Name())
			}
		})
	}
}

func TestBuildCancelLeavesNothing(t *testing.T) {
	needBuilder(t)
	o := Options{Hostname: "cancelled"}.WithDefaults()
	key := o.CacheKey()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := filepath.Join(t.TempDir(), "vm")
	b := &Builder{CacheDir: imagesCache(), Progress: &testLog{t: t}, NoCache: true}

	// Cancel (as Ctrl-C does) once dpkg is installing the essential
	// packages inside the chroot: the tree has mmdebstrap's mounts then.
	done := make(chan error, 1)
	go func() {
		_, err := b.Build(ctx, o, out)
		done <- err
	}()
	var err error
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			installed, _ := filepath.Glob(filepath.Join(imagesCache(), cache.StagingPrefix+key+"-*", "tree", "var", "lib", "dpkg", "info", "base-files.list"))
			if len(installed) > 0 {
				cancel()
			}
		}
	}
	require.Error(t, err)
	require.ErrorIs(t, err, context.Canceled, "the build ended because it was cancelled, not by failing first: %v", err)
	assert.Empty(t, stagingLeft(t, imagesCache(), key), "no half-built cache entry")
	assert.NoDirExists(t, out)
	mounts, merr := cache.MountsUnder(imagesCache())
	require.NoError(t, merr)
	assert.Empty(t, mounts)
	// mmdebstrap and everything it started were killed.
	require.Eventually(t, func() bool { return len(processesMentioning(key)) == 0 }, time.Minute, 100*time.Millisecond,
		"processes of the cancelled build still run: %v", processesMentioning(key))
	// The package cache is intact for the next build.
	debs, _ := filepath.Glob(filepath.Join(imagesCache(), "debs", o.Release, "*.deb"))
	assert.NotEmpty(t, debs)
}

func TestWriteOutput(t *testing.T) {
	entry := t.TempDir()
	disk := filepath.Join(entry, "disk.raw")
	f, err := os.Create(disk)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<20))
	_, err = f.WriteAt([]byte("data in the middle"), 32<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(filepath.Join(entry, KernelFile), []byte("kernel"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(entry, InitrdFile), []byte("initrd"), 0o644))
	meta := entryMeta{Disk: "disk.raw", Format: "raw"}
	o := Options{CPUs: 2, MemoryBytes: 512 << 20}.WithDefaults()

	out := filepath.Join(t.TempDir(), "vm")
	require.NoError(t, writeOutput(context.Background(), entry, meta, o, out))
	m, err := vmdir.Load(out)
	require.NoError(t, err)
	assert.Equal(t, 2, m.CPUs)
	assert.Equal(t, uint64(512<<20), m.MemoryBytes)
	assert.Equal(t, []vmdir.Net{{Mode: vmdir.NetUser}}, m.Nets)
	got, err := os.ReadFile(filepath.Join(out, "disk.raw"))
	require.NoError(t, err)
	assert.Equal(t, "data in the middle", string(got[32<<20:32<<20+18]))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(out, "disk.raw"), &st))
	assert.Less(t, st.Blocks*512, int64(16<<20), "holes stay holes")

	// An existing empty directory is filled.
	empty := t.TempDir()
	require.NoError(t, writeOutput(context.Background(), entry, meta, o, empty))
	_, err = vmdir.Load(empty)
	require.NoError(t, err)

	// An output directory that filled up meanwhile is not overwritten,
	// and the copy is removed.
	busy := filepath.Join(t.TempDir(), "busy")
	require.NoError(t, os.Mkdir(busy, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(busy, "x"), nil, 0o644))
	err = writeOutput(context.Background(), entry, meta, o, busy)
	require.Error(t, err)
	siblings, err := os.ReadDir(filepath.Dir(busy))
	require.NoError(t, err)
	require.Len(t, siblings, 1)
	assert.Equal(t, "busy", siblings[0].Name())
}

func TestCheckSpace(t *testing.T) {
	dir := t.TempDir()
	o := Options{}.WithDefaults()
	var s unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &s))
	free := s.Bavail * uint64(s.Bsize)
	if free > 4*imageEstimate {
		require.NoError(t, checkSpace(filepath.Join(dir, "cache"), filepath.Join(dir, "out"), o, false))
	} else {
		err := checkSpace(filepath.Join(dir, "cache"), filepath.Join(dir, "out"), o, false)
		require.ErrorIs(t, err, ErrNoSpace)
	}
	err := noSpace("/x", 100<<20, 2<<30)
	require.ErrorIs(t, err, ErrNoSpace)
	assert.Equal(t, "no space: /x has 100M free and the build needs about 2G: free some space, or put the cache (WISP_CACHE) or -o on a bigger filesystem", err.Error())
	assert.False(t, errors.Is(err, vmm.ErrInvalidConfig))
}

// processesMentioning lists the command lines that contain s.
func processesMentioning(s string) []string {
	var found []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}
