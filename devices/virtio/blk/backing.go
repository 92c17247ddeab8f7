package blk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio/blk/qcow2"
)

// Errors of backing files; test with errors.Is.
var (
	// ErrBackingOff: a qcow2 image names a backing file and the user did
	// not allow backing files for that disk.
	ErrBackingOff = errors.New("backing files are off for this disk")
	// ErrBackingOutside: the backing file's name leads out of the
	// directory backing files may come from (an absolute path elsewhere,
	// "..", a symlink on the way).
	ErrBackingOutside = errors.New("backing file outside the allowed directory")
	// ErrBackingNotFile: the backing file is not a regular file (a FIFO,
	// a device, a directory, a symlink).
	ErrBackingNotFile = errors.New("backing file is not a regular file")
)

// backingPolicy says which backing files a qcow2 disk may open. The names
// come from the image header, which is untrusted: whoever wrote the image
// chose them.
type backingPolicy struct {
	// allowed is the user's opt-in (backing=on).
	allowed bool
	// root is the absolute directory every backing file must lie under.
	root string
	// disk names the disk in messages.
	disk string
}

// newBackingPolicy confines backing files to dir, or to the image's own
// directory when dir is empty.
func newBackingPolicy(imagePath string, allowed bool, dir string) (backingPolicy, error) {
	p := backingPolicy{allowed: allowed, disk: imagePath}
	if !allowed {
		return p, nil
	}
	if dir == "" {
		dir = filepath.Dir(imagePath)
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return p, fmt.Errorf("disk %s: backing directory %s: %w", imagePath, dir, err)
	}
	p.root = root
	return p, nil
}

// open is a qcow2.Opener: path is the backing file's name as the header
// gives it, joined to the referring image's directory when relative.
func (p backingPolicy) open(path string) (qcow2.File, uint64, error) {
	if !p.allowed {
		return nil, 0, fmt.Errorf("disk %s names backing file %s, and backing files are off: if you trust this image add backing=on to its --disk, or flatten it (qemu-img convert -O qcow2): %w",
			p.disk, path, ErrBackingOff)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, 0, fmt.Errorf("backing file %s: %w", path, err)
	}
	rel, err := filepath.Rel(p.root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return nil, 0, fmt.Errorf("backing file %s is outside %s: move it there or name its directory with backing-dir=DIR: %w", path, p.root, ErrBackingOutside)
	}
	fd, err := openBeneath(p.root, rel)
	if err != nil {
		return nil, 0, fmt.Errorf("backing file %s: %w", path, err)
	}
	size, err := lockAndSize(fd, path, true)
	if err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	return os.NewFile(uintptr(fd), path), size, nil
}

// openBeneath opens root/rel read-only, one component at a time without
// following a symlink anywhere below root, and accepts only a regular
// file. The last open is O_NONBLOCK and checked with fstat before anything
// is read, so a FIFO or a device never blocks or gets read.
func openBeneath(root, rel string) (int, error) {
	dirfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open directory %s: %w", root, err)
	}
	parts := strings.Split(filepath.Clean(rel), "/")
	for i, part := range parts {
		if part == ".." || part == "" || part == "." {
			unix.Close(dirfd)
			return -1, fmt.Errorf("%q leaves %s: %w", rel, root, ErrBackingOutside)
		}
		last := i == len(parts)-1
		flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
		}
		fd, err := unix.Openat(dirfd, part, flags, 0)
		unix.Close(dirfd)
		switch {
		case errors.Is(err, unix.ELOOP), !last && errors.Is(err, unix.ENOTDIR) && isSymlinkAt(root, parts[:i+1]):
			return -1, fmt.Errorf("%s is a symlink: backing files are opened without following symlinks: %w", filepath.Join(append([]string{root}, parts[:i+1]...)...), ErrBackingOutside)
		case err != nil:
			return -1, fmt.Errorf("open %s: %w", filepath.Join(append([]string{root}, parts[:i+1]...)...), err)
		}
		dirfd = fd
	}
	fd := dirfd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("is a %s, not a regular file: %w", fileKind(st.Mode), ErrBackingNotFile)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fcntl: %w", err)
	}
	return fd, nil
}

// isSymlinkAt says whether root/parts is a symlink (O_PATH|O_DIRECTORY|
// O_NOFOLLOW on a symlink fails with ENOTDIR, like on a plain file).
func isSymlinkAt(root string, parts []string) bool {
	fi, err := os.Lstat(filepath.Join(append([]string{root}, parts...)...))
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symlink"
	}
	return fmt.Sprintf("file of mode %#o", mode)
}
