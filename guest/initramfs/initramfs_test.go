package initramfs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/cpio"
)

type entry struct {
	mode         uint64
	data         string
	rmaj, rminor uint64
}

func readBack(t *testing.T, archive []byte) ([]string, map[string]entry) {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(archive))})
	require.NoError(t, err)
	var order []string
	got := map[string]entry{}
	for _, r := range recs {
		var data []byte
		if r.ReaderAt != nil {
			data, err = io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			require.NoError(t, err)
		}
		assert.Zero(t, r.MTime, r.Name)
		assert.Zero(t, r.UID, r.Name)
		assert.Zero(t, r.GID, r.Name)
		order = append(order, r.Name)
		got[r.Name] = entry{mode: r.Mode, data: string(data), rmaj: r.Rmajor, rminor: r.Rminor}
	}
	return order, got
}

func sample(t *testing.T) *Builder {
	t.Helper()
	host := filepath.Join(t.TempDir(), "host.sh")
	require.NoError(t, os.WriteFile(host, []byte("#!/bin/sh\necho hi\n"), 0o750))

	b := New()
	require.NoError(t, b.AddFile("/init", []byte("\x7fELF..."), 0o755))
	require.NoError(t, b.AddHostFile("usr/bin/hello", host, 0))
	require.NoError(t, b.AddHostFile("etc/hello-ro", host, 0o444))
	require.NoError(t, b.AddDir("tmp", 0o1777|os.ModeSticky))
	require.NoError(t, b.AddSymlink("bin/sh", "busybox"))
	require.NoError(t, b.AddCharDev("/dev/console", 0o600, 5, 1))
	require.NoError(t, b.AddDir("usr", 0o700)) // re-mode an implicit parent
	return b
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	n, err := sample(t).WriteTo(&buf)
	require.NoError(t, err)
	require.EqualValues(t, buf.Len(), n)

	order, got := readBack(t, buf.Bytes())
	require.Equal(t, []string{
		"bin", "bin/sh", "dev", "dev/console", "etc", "etc/hello-ro", "init",
		"tmp", "usr", "usr/bin", "usr/bin/hello",
	}, order)

	tests := []struct {
		name string
		want entry
	}{
		{"init", entry{mode: cpio.S_IFREG | 0o755, data: "\x7fELF..."}},
		{"usr/bin/hello", entry{mode: cpio.S_IFREG | 0o750, data: "#!/bin/sh\necho hi\n"}},
		{"etc/hello-ro", entry{mode: cpio.S_IFREG | 0o444, data: "#!/bin/sh\necho hi\n"}},
		{"tmp", entry{mode: cpio.S_IFDIR | 0o1777}},
		{"usr", entry{mode: cpio.S_IFDIR | 0o700}},
		{"usr/bin", entry{mode: cpio.S_IFDIR | 0o755}},
		{"bin/sh", entry{mode: cpio.S_IFLNK | 0o777, data: "busybox"}},
		{"dev/console", entry{mode: cpio.S_IFCHR | 0o600, rmaj: 5, rminor: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, got[tc.name])
		})
	}
}

func TestDeterministic(t *testing.T) {
	hash := func(b *Builder) [32]byte {
		var buf bytes.Buffer
		require.NoError(t, b.WriteGzip(&buf))
		return sha256.Sum256(buf.Bytes())
	}
	b := sample(t)
	first := hash(b)
	require.Equal(t, first, hash(b), "writing twice must give the same bytes")
	require.Equal(t, first, hash(sample(t)), "a rebuilt archive must give the same bytes")

	// Insertion order does not matter.
	c := New()
	require.NoError(t, c.AddCharDev("dev/console", 0o600, 5, 1))
	require.NoError(t, c.AddSymlink("bin/sh", "busybox"))
	d := New()
	require.NoError(t, d.AddSymlink("bin/sh", "busybox"))
	require.NoError(t, d.AddCharDev("dev/console", 0o600, 5, 1))
	require.Equal(t, hash(c), hash(d))
}

func TestGzipReadsBack(t *testing.T) {
	var gz bytes.Buffer
	require.NoError(t, sample(t).WriteGzip(&gz))
	zr, err := gzip.NewReader(&gz)
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	_, got := readBack(t, raw)
	assert.Equal(t, "busybox", got["bin/sh"].data)
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name string
		add  func(b *Builder) error
		err  error
	}{
		{"duplicate file", func(b *Builder) error { return b.AddFile("init", nil, 0o755) }, ErrExists},
		{"dir over file", func(b *Builder) error { return b.AddDir("init", 0o755) }, ErrExists},
		{"file under file", func(b *Builder) error { return b.AddFile("init/x", nil, 0o644) }, ErrNotDir},
		{"dotdot", func(b *Builder) error { return b.AddFile("../etc/passwd", nil, 0o644) }, ErrBadPath},
		{"unclean", func(b *Builder) error { return b.AddFile("a/./b", nil, 0o644) }, ErrBadPath},
		{"root", func(b *Builder) error { return b.AddDir("/", 0o755) }, ErrBadPath},
		{"empty symlink", func(b *Builder) error { return b.AddSymlink("x", "") }, ErrBadPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New()
			require.NoError(t, b.AddFile("init", nil, 0o755))
			require.ErrorIs(t, tc.add(b), tc.err)
		})
	}
}

func TestAddHostFileRejectsNonRegular(t *testing.T) {
	require.Error(t, New().AddHostFile("x", t.TempDir(), 0))
	require.ErrorIs(t, New().AddHostFile("x", filepath.Join(t.TempDir(), "missing"), 0), os.ErrNotExist)
}
