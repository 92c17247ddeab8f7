package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyChunk is how much one copy_file_range call moves; between calls the
// copy checks for cancellation.
const copyChunk = 64 << 20

// CopyFile copies src to dst (created, or truncated) the cheapest way the
// filesystems allow, keeping holes: a reflink (FICLONE: instant, shares
// blocks copy-on-write, on btrfs and XFS), else only src's data ranges
// (found with SEEK_DATA/SEEK_HOLE) copied with copy_file_range, so a
// 4G image holding 600M costs 600M — the semantics of
// `cp --reflink=auto --sparse=always` for files that are already sparse.
// A copy is never a hard link: booting the copy must not change the
// original.
func CopyFile(ctx context.Context, src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("copy to %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	if err := copySparse(ctx, in, out, st.Size()); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	// Holes at the end are not written; the size makes them.
	if err := out.Truncate(st.Size()); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}

// copySparse copies in's data ranges to the same offsets in out.
func copySparse(ctx context.Context, in, out *os.File, size int64) error {
	inFd, outFd := int(in.Fd()), int(out.Fd())
	off := int64(0)
	for off < size {
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA here: treat the rest as data.
			data = off
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := copyRange(ctx, in, out, inFd, outFd, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off with copy_file_range, falling back to
// read/write where the kernel cannot (across some filesystems).
func copyRange(ctx context.Context, in, out *os.File, inFd, outFd int, off, n int64) error {
	for n > 0 {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		chunk := min(n, copyChunk)
		roff, woff := off, off
		done, err := unix.CopyFileRange(inFd, &roff, outFd, &woff, int(chunk), 0)
		if err != nil || done == 0 {
			if err != nil && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("copy_file_range: %w", err)
			}
			w, err := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, chunk))
			if err != nil {
				return err
			}
			done = int(w)
			if done == 0 {
				return fmt.Errorf("source shrank while copying (at offset %d)", off)
			}
		}
		off += int64(done)
		n -= int64(done)
	}
	return nil
}
