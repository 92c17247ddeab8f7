package blk

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// Backend is the disk image behind a Device. The device checks every range
// against Size before calling it, so a backend sees only in-range requests;
// it must be safe for concurrent use (one goroutine per queue).
type Backend interface {
	// Size is the disk size in bytes (a multiple of 512).
	Size() uint64
	// ReadAt fills bufs, in order, from the disk starting at byte off.
	ReadAt(bufs [][]byte, off uint64) error
	// WriteAt writes bufs, in order, to the disk starting at byte off.
	WriteAt(bufs [][]byte, off uint64) error
	// Flush makes every completed write durable.
	Flush() error
	// Discard tells the backend the range is unused; reading it
	// afterwards may return its old contents or zeros.
	Discard(off, n uint64) error
	// WriteZeroes makes the range read as zeros; unmap allows the backend
	// to deallocate it.
	WriteZeroes(off, n uint64, unmap bool) error
	// Close releases the image (and its lock).
	Close() error
}

// iovMax is the kernel's limit on iovecs per preadv/pwritev (UIO_MAXIOV).
const iovMax = 1024

// rawFile is a raw image: disk byte N is file byte N. Reads and writes go
// straight between the file and the guest's buffers with preadv/pwritev.
type rawFile struct {
	fd   int
	path string
	size uint64
}

func (r *rawFile) Size() uint64 { return r.size }

func (r *rawFile) ReadAt(bufs [][]byte, off uint64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		n, err := unix.Preadv(r.fd, iov, off)
		if err == nil && n == 0 {
			// Only possible if the file shrank under us.
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}, "preadv "+r.path)
}

func (r *rawFile) WriteAt(bufs [][]byte, off uint64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		n, err := unix.Pwritev(r.fd, iov, off)
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		return n, err
	}, "pwritev "+r.path)
}

// vectored runs op until bufs are done: at most iovMax buffers per call,
// resuming after short transfers and EINTR.
func vectored(bufs [][]byte, off uint64, op func([][]byte, int64) (int, error), what string) error {
	// Work on a private copy of the list: short transfers reslice it.
	bufs = append([][]byte(nil), bufs...)
	for len(bufs) > 0 {
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		batch := bufs[:min(len(bufs), iovMax)]
		n, err := op(batch, int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s at %d: %w", what, off, err)
		}
		off += uint64(n)
		for n > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
	return nil
}

func (r *rawFile) Flush() error {
	for {
		err := unix.Fdatasync(r.fd)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fdatasync %s: %w", r.path, err)
		}
		return nil
	}
}

func (r *rawFile) Discard(off, n uint64) error {
	err := r.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil // a discard is a hint; a file system without holes ignores it
	}
	return err
}

func (r *rawFile) WriteZeroes(off, n uint64, unmap bool) error {
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
	if unmap {
		// A hole reads as zeros and gives the space back.
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	err := r.fallocate(mode, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		// tmpfs has no ZERO_RANGE, some file systems no holes.
		return r.writeZeroes(off, n)
	}
	return err
}

func (r *rawFile) fallocate(mode uint32, off, n uint64) error {
	for {
		err := unix.Fallocate(r.fd, mode, int64(off), int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fallocate %s mode %#x [%d, +%d): %w", r.path, mode, off, n, err)
		}
		return nil
	}
}

// zeroChunk bounds the buffer used when zeros must really be written.
const zeroChunk = 1 << 20

func (r *rawFile) writeZeroes(off, n uint64) error {
	zeros := make([]byte, min(n, zeroChunk))
	for n > 0 {
		c := min(n, uint64(len(zeros)))
		if err := r.WriteAt([][]byte{zeros[:c]}, off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

func (r *rawFile) Close() error {
	if err := unix.Close(r.fd); err != nil {
		return fmt.Errorf("close %s: %w", r.path, err)
	}
	return nil
}
