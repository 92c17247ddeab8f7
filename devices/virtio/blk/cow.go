package blk

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio/blk/qcow2"
)

// baseImage is a read-only disk image such as a qcow2 Image.
type baseImage interface {
	Size() uint64
	ReadAt(bufs [][]byte, off uint64) error
	Close() error
}

// openQcow2 reads the qcow2 image already open as fd (size bytes) and
// opens its backing chain read-only as policy allows, each file under a
// shared lock: wisp never writes them, and no other VM may write them
// while this one reads.
func openQcow2(fd int, path string, size uint64, policy backingPolicy) (*qcow2.Image, error) {
	return qcow2.Open(os.NewFile(uintptr(fd), path), path, size, policy.open)
}

// readOnlyBase serves a read-only device straight from a base image; the
// device refuses writes before they get here.
type readOnlyBase struct{ baseImage }

var errReadOnly = errors.New("image is read-only")

func (readOnlyBase) WriteAt([][]byte, uint64) error         { return errReadOnly }
func (readOnlyBase) Flush() error                           { return nil }
func (readOnlyBase) Discard(uint64, uint64) error           { return errReadOnly }
func (readOnlyBase) WriteZeroes(uint64, uint64, bool) error { return errReadOnly }

// overlay is a copy-on-write layer in front of a read-only base: the
// guest's writes go to an unlinked sparse temp file at the same offsets,
// and a bitmap of written sectors says where each read comes from. It is
// thrown away on Close, so the base image never changes.
type overlay struct {
	base baseImage
	file *rawFile

	mu sync.RWMutex
	// written has one bit per sector, in chunks allocated on first write
	// so the bitmap grows with what the guest writes, not the disk size.
	written map[uint64]*chunk
}

const (
	chunkSectors = 1 << 12 // 2 MiB of disk per chunk
	chunkWords   = chunkSectors / 64
)

type chunk [chunkWords]uint64

// Overlay limits.
const (
	// MaxOverlaySize bounds the virtual size of a qcow2 disk wisp puts an
	// overlay in front of: beyond it no host could hold what the guest may
	// write.
	MaxOverlaySize = 64 << 40
	// overlaySlack is how far a virtual size may exceed the total size of
	// the overlay's file system: thin provisioning is normal, a disk many
	// times larger than the host's is a mistake or an attack.
	overlaySlack = 1 << 40
	// minOverlayFree is the free space an overlay needs to start: enough
	// for a guest's first writes (or all of a smaller disk).
	minOverlayFree = 64 << 20
)

// ErrOverlaySpace: the overlay's file system cannot hold the disk's writes.
var ErrOverlaySpace = errors.New("no room for the overlay")

// checkOverlaySpace refuses a virtual size that the overlay directory dir,
// whose file system has total and free bytes, could never hold.
func checkOverlaySpace(dir string, size, total, free uint64) error {
	switch {
	case size > MaxOverlaySize:
		return fmt.Errorf("virtual size %d bytes is more than %d TiB: wisp does not put an overlay in front of such a disk (use it read-only with ,ro): %w",
			size, MaxOverlaySize>>40, ErrOverlaySpace)
	case size > total+overlaySlack:
		return fmt.Errorf("virtual size %d bytes is far beyond the %d-byte file system of the overlay directory %s (use it read-only with ,ro, or put the VM's state directory on a larger file system): %w",
			size, total, dir, ErrOverlaySpace)
	case free < min(size, minOverlayFree):
		return fmt.Errorf("overlay directory %s has only %d bytes free: free some space or put the VM's state directory elsewhere: %w", dir, free, ErrOverlaySpace)
	}
	return nil
}

// newOverlay makes the temp file in dir (os.TempDir() if empty), after
// checking that dir's file system can take it.
func newOverlay(base baseImage, dir string) (*overlay, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return nil, fmt.Errorf("overlay in %s: statfs: %w", dir, err)
	}
	bsize := uint64(fs.Bsize)
	if err := checkOverlaySpace(dir, base.Size(), fs.Blocks*bsize, fs.Bavail*bsize); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// File systems without O_TMPFILE: create and unlink at once.
		f, cerr := os.CreateTemp(dir, "wisp-overlay-*")
		if cerr != nil {
			return nil, fmt.Errorf("overlay in %s: %w", dir, errors.Join(err, cerr))
		}
		_ = os.Remove(f.Name())
		fd, err = unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("overlay in %s: dup: %w", dir, err)
		}
		unix.CloseOnExec(fd)
	}
	if err := unix.Ftruncate(fd, int64(base.Size())); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("overlay in %s: truncate to %d: %w", dir, base.Size(), err)
	}
	return &overlay{
		base:    base,
		file:    &rawFile{fd: fd, path: "overlay in " + dir, size: base.Size()},
		written: make(map[uint64]*chunk),
	}, nil
}

func (o *overlay) Size() uint64 { return o.base.Size() }

func (o *overlay) isWritten(sector uint64) bool {
	c := o.written[sector/chunkSectors]
	if c == nil {
		return false
	}
	i := sector % chunkSectors
	return c[i/64]&(1<<(i%64)) != 0
}

func (o *overlay) mark(off, n uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for s := off / SectorSize; s < (off+n)/SectorSize; s++ {
		c := o.written[s/chunkSectors]
		if c == nil {
			c = new(chunk)
			o.written[s/chunkSectors] = c
		}
		i := s % chunkSectors
		c[i/64] |= 1 << (i % 64)
	}
}

// ReadAt splits the read into runs of sectors that come from the same
// layer and reads each run straight into the guest's buffers.
func (o *overlay) ReadAt(bufs [][]byte, off uint64) error {
	var total uint64
	for _, b := range bufs {
		total += uint64(len(b))
	}
	for total > 0 {
		o.mu.RLock()
		fromOverlay := o.isWritten(off / SectorSize)
		n := uint64(SectorSize)
		for n < total && o.isWritten((off+n)/SectorSize) == fromOverlay {
			n += SectorSize
		}
		o.mu.RUnlock()
		n = min(n, total)
		var run [][]byte
		run, bufs = splitSegments(bufs, n)
		var err error
		if fromOverlay {
			err = o.file.ReadAt(run, off)
		} else {
			err = o.base.ReadAt(run, off)
		}
		if err != nil {
			return err
		}
		off += n
		total -= n
	}
	return nil
}

func (o *overlay) WriteAt(bufs [][]byte, off uint64) error {
	if err := o.file.WriteAt(bufs, off); err != nil {
		return err
	}
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b))
	}
	o.mark(off, n)
	return nil
}

// Flush has nothing to do: the overlay does not outlive the device.
func (o *overlay) Flush() error { return nil }

// Discard may leave old data readable, so the base can keep showing
// through.
func (o *overlay) Discard(off, n uint64) error { return nil }

func (o *overlay) WriteZeroes(off, n uint64, unmap bool) error {
	// A hole in the overlay reads as zeros.
	if err := o.file.WriteZeroes(off, n, true); err != nil {
		return err
	}
	o.mark(off, n)
	return nil
}

func (o *overlay) Close() error { return errors.Join(o.file.Close(), o.base.Close()) }

// splitSegments splits bufs after n bytes without copying data.
func splitSegments(bufs [][]byte, n uint64) (head, tail [][]byte) {
	for i, b := range bufs {
		if n == 0 {
			return head, bufs[i:]
		}
		if uint64(len(b)) > n {
			head = append(head, b[:n])
			return head, append([][]byte{b[n:]}, bufs[i+1:]...)
		}
		head = append(head, b)
		n -= uint64(len(b))
	}
	return head, nil
}
