package blk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio/blk/qcow2"
)

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }

// qemuImg runs qemu-img, skipping the test loudly when it is missing.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("SKIP: qemu-img not found (apt-get install qemu-utils): cannot build qcow2 images with backing files")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "qemu-img %s: %s", strings.Join(args, " "), out)
}

// overlayOn makes dir/name, a qcow2 image over backing (as written in its
// header) of format fmt, without qemu-img opening the backing file.
func overlayOn(t *testing.T, dir, name, backing, fmt string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt, p, "1M")
	return p
}

// stripBackingFormat rewrites the backing-format header extension's type
// to an unknown one (which readers skip), as an image without backing_fmt.
func stripBackingFormat(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	i := bytes.Index(b[:4096], []byte{0xe2, 0x79, 0x2a, 0xca})
	require.Positive(t, i)
	copy(b[i:], []byte{0x12, 0x34, 0x56, 0x78})
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// openWithDeadline opens o in a goroutine: a backing file that blocks the
// open (a FIFO) must fail the test instead of hanging it.
func openWithDeadline(t *testing.T, o Options) (*Device, error) {
	t.Helper()
	type result struct {
		d   *Device
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := Open(o)
		done <- result{d, err}
	}()
	select {
	case r := <-done:
		return r.d, r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("Open(%s) still blocked after 30s: it waits on a backing file", o.Path)
		return nil, nil
	}
}

func TestBackingFileRefusals(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	secret := filepath.Join(other, "secret.raw")
	require.NoError(t, os.WriteFile(secret, bytes.Repeat([]byte("host-secret "), 1<<16), 0o600))
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "up.raw"), make([]byte, 1<<20), 0o644))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "link.raw")))
	require.NoError(t, mkfifo(filepath.Join(dir, "fifo.raw")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "plain.raw"), make([]byte, 1<<20), 0o644))
	noFmt := overlayOn(t, dir, "nofmt.qcow2", "plain.raw", "raw")
	stripBackingFormat(t, noFmt)

	tests := []struct {
		name string
		opts Options
		err  error
	}{
		{"backing files off by default", Options{Path: overlayOn(t, dir, "off.qcow2", "plain.raw", "raw")}, ErrBackingOff},
		{"absolute path outside the directory", Options{Path: overlayOn(t, dir, "abs.qcow2", secret, "raw"), Backing: true}, ErrBackingOutside},
		{"dot-dot out of the directory", Options{Path: overlayOn(t, sub, "dotdot.qcow2", "../../"+filepath.Base(other)+"/secret.raw", "raw"), Backing: true}, ErrBackingOutside},
		{"dot-dot out of the image's directory", Options{Path: overlayOn(t, sub, "up.qcow2", "../up.raw", "raw"), Backing: true}, ErrBackingOutside},
		{"symlink", Options{Path: overlayOn(t, dir, "link.qcow2", "link.raw", "raw"), Backing: true}, ErrBackingOutside},
		{"FIFO", Options{Path: overlayOn(t, dir, "fifo.qcow2", "fifo.raw", "raw"), Backing: true}, ErrBackingNotFile},
		{"character device", Options{Path: overlayOn(t, dir, "null.qcow2", "/dev/null", "raw"), Backing: true, BackingDir: "/dev"}, ErrBackingNotFile},
		{"directory", Options{Path: overlayOn(t, dir, "dir.qcow2", "sub", "raw"), Backing: true}, ErrBackingNotFile},
		{"another directory without backing-dir", Options{Path: overlayOn(t, dir, "other.qcow2", secret, "raw"), Backing: true}, ErrBackingOutside},
		{"raw backing file without backing_fmt", Options{Path: noFmt, Backing: true}, qcow2.ErrBackingFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.OverlayDir = t.TempDir()
			d, err := openWithDeadline(t, tt.opts)
			if d != nil {
				d.Close()
			}
			require.ErrorIs(t, err, tt.err)
			t.Log(err)
			assert.NotContains(t, err.Error(), "\n", "one line")
			assert.NotContains(t, err.Error(), "host-secret")
		})
	}
}

func TestBackingFilesAllowed(t *testing.T) {
	dir := t.TempDir()
	base := bytes.Repeat([]byte("base-data-1234\n\x00"), 1<<16) // 1 MiB
	require.NoError(t, os.WriteFile(filepath.Join(dir, "base.raw"), base, 0o644))
	// base.raw ← mid.qcow2 (qcow2 over raw, declared raw) ← top.qcow2.
	overlayOn(t, dir, "mid.qcow2", "base.raw", "raw")
	top := overlayOn(t, dir, "top.qcow2", "mid.qcow2", "qcow2")

	other := t.TempDir()
	elsewhere := overlayOn(t, other, "elsewhere.qcow2", filepath.Join(dir, "mid.qcow2"), "qcow2")

	for _, o := range []Options{
		{Path: filepath.Join(dir, "mid.qcow2"), Backing: true},
		{Path: top, Backing: true},
		{Path: top, Backing: true, ReadOnly: true},
		{Path: elsewhere, BackingDir: dir},
	} {
		t.Run(filepath.Base(o.Path), func(t *testing.T) {
			o.OverlayDir = t.TempDir()
			d, err := openWithDeadline(t, o)
			require.NoError(t, err)
			defer d.Close()
			assert.True(t, bytes.Equal(base, readDisk(t, d, 0, len(base))), "reads the base's bytes")
		})
	}
}

func TestOverlaySpace(t *testing.T) {
	tests := []struct {
		name              string
		size, total, free uint64
		ok                bool
	}{
		{"small disk, roomy host", 4 << 30, 100 << 30, 50 << 30, true},
		{"thin provisioned beyond free space", 200 << 30, 100 << 30, 10 << 30, true},
		{"beyond 64 TiB", 65 << 40, 1 << 50, 1 << 50, false},
		{"far beyond the file system", 10 << 40, 100 << 30, 50 << 30, false},
		{"file system full", 4 << 30, 100 << 30, 1 << 20, false},
		{"tiny disk on a nearly full file system", 1 << 20, 100 << 30, 2 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOverlaySpace("/state", tt.size, tt.total, tt.free)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrOverlaySpace)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

// A qcow2 disk whose virtual size no host could hold gets no overlay.
func TestHugeQcow2Refused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "huge.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", p, "65T")
	_, err := Open(Options{Path: p, OverlayDir: dir})
	require.ErrorIs(t, err, ErrOverlaySpace)
	d, err := Open(Options{Path: p, ReadOnly: true})
	require.NoError(t, err, "read-only needs no overlay")
	require.NoError(t, d.Close())
}
