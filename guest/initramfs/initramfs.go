// Package initramfs builds Linux initramfs archives (cpio "newc" format,
// written with u-root's cpio package) deterministically: entries are
// written sorted by path with fixed inode numbers, owners and mtimes, so the
// same contents always give the same bytes and the same hash.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// Errors callers can test for with errors.Is.
var (
	ErrExists  = errors.New("path already in the archive")
	ErrBadPath = errors.New("invalid archive path")
	ErrNotDir  = errors.New("parent is not a directory")
)

// Builder collects the entries of an archive. The zero value is not usable;
// call New. A Builder is not safe for concurrent use.
type Builder struct {
	entries map[string]cpio.Record
}

// New returns an empty Builder.
func New() *Builder {
	return &Builder{entries: map[string]cpio.Record{}}
}

// cleanName turns name into the archive's form: relative, slash-separated,
// no "." or ".." elements. The root itself is not a valid entry name.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	if n == "" || n != path.Clean(n) || n == "." || n == ".." || strings.HasPrefix(n, "../") {
		return "", fmt.Errorf("%w: %q", ErrBadPath, name)
	}
	return n, nil
}

// permBits converts the permission part of an fs.FileMode (including
// setuid, setgid and sticky) to Unix mode bits.
func permBits(mode fs.FileMode) uint64 {
	bits := uint64(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

// add records rec under name, creating missing parent directories with
// mode 0755.
func (b *Builder) add(name string, rec cpio.Record) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if _, ok := b.entries[n]; ok {
		return fmt.Errorf("%w: %s", ErrExists, n)
	}
	if dir := path.Dir(n); dir != "." {
		if parent, ok := b.entries[dir]; ok {
			if parent.Mode&cpio.S_IFMT != cpio.S_IFDIR {
				return fmt.Errorf("%w: %s (for %s)", ErrNotDir, dir, n)
			}
		} else if err := b.AddDir(dir, 0o755); err != nil {
			return err
		}
	}
	rec.Name = n
	b.entries[n] = rec
	return nil
}

// AddFile adds a regular file with the given contents and permissions.
func (b *Builder) AddFile(name string, contents []byte, mode fs.FileMode) error {
	return b.add(name, cpio.StaticRecord(bytes.Clone(contents), cpio.Info{Mode: cpio.S_IFREG | permBits(mode)}))
}

// AddHostFile adds the host file at hostPath (following symlinks) as a
// regular file; mode 0 keeps the host file's permissions. The contents are
// read now, so later changes to the host file do not leak into the archive.
func (b *Builder) AddHostFile(name, hostPath string, mode fs.FileMode) error {
	st, err := os.Stat(hostPath)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file (%v)", hostPath, st.Mode().Type())
	}
	contents, err := os.ReadFile(hostPath)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if mode == 0 {
		mode = st.Mode()
	}
	return b.AddFile(name, contents, mode)
}

// AddDir adds a directory (and any missing parents). Adding a directory
// that was created implicitly as a parent sets its mode instead of failing.
func (b *Builder) AddDir(name string, mode fs.FileMode) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if old, ok := b.entries[n]; ok {
		if old.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			return fmt.Errorf("%w: %s", ErrExists, n)
		}
		old.Mode = cpio.S_IFDIR | permBits(mode)
		b.entries[n] = old
		return nil
	}
	return b.add(n, cpio.Record{Info: cpio.Info{Mode: cpio.S_IFDIR | permBits(mode)}})
}

// AddSymlink adds a symbolic link name -> target.
func (b *Builder) AddSymlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("%w: empty symlink target for %q", ErrBadPath, name)
	}
	return b.add(name, cpio.Symlink("", target))
}

// AddCharDev adds a character device node, e.g. dev/console (5, 1): the
// kernel opens /dev/console for init's stdio before init runs, so an
// initramfs needs that node even though init mounts devtmpfs later.
func (b *Builder) AddCharDev(name string, mode fs.FileMode, major, minor uint32) error {
	return b.add(name, cpio.CharDev("", permBits(mode), uint64(major), uint64(minor)))
}

// Names returns the archive's paths in the order they will be written.
func (b *Builder) Names() []string {
	names := make([]string, 0, len(b.entries))
	for n := range b.entries {
		names = append(names, n)
	}
	// Plain byte order puts every directory before its contents, because a
	// path sorts before any longer path it prefixes.
	sort.Strings(names)
	return names
}

// WriteTo writes the uncompressed newc archive, with its trailer, to w.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	rw := cpio.Newc.Writer(cw)
	for i, n := range b.Names() {
		rec := b.entries[n]
		rec.Ino = uint64(i + 1)
		rec.NLink = 1
		if rec.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			rec.NLink = 2
		}
		rec = cpio.MakeReproducible(rec)
		if rec.ReaderAt != nil {
			// Records share their contents reader; rewind it by making a
			// fresh one so WriteTo can be called more than once.
			rec.ReaderAt = io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize))
		}
		if err := rw.WriteRecord(rec); err != nil {
			return cw.n, fmt.Errorf("initramfs: write %s: %w", n, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return cw.n, fmt.Errorf("initramfs: write trailer: %w", err)
	}
	return cw.n, nil
}

// WriteGzip writes the archive gzip-compressed, with no name or time in
// the gzip header so the output is as deterministic as the archive.
func (b *Builder) WriteGzip(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if _, err := b.WriteTo(zw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs: gzip: %w", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
