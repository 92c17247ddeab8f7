package blk

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockedError says a disk image is locked by another user. It matches
// ErrLocked with errors.Is; PID and Command are zero when /proc/locks did
// not name the holder.
type LockedError struct {
	Path string
	// PID and Command identify the holder, if found.
	PID     int
	Command string
	// HolderWrites is true when the holder has the image open for writing
	// (an exclusive lock); false when it shares it read-only or is unknown.
	HolderWrites bool
	// WantWrite is true when we asked for write access.
	WantWrite bool
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID != 0 {
		who = fmt.Sprintf("pid %d", e.PID)
		if e.Command != "" {
			who += " (" + e.Command + ")"
		}
	}
	switch {
	case e.HolderWrites:
		return fmt.Sprintf("disk %s is in use by %s, which writes to it; stop that VM first", e.Path, who)
	case e.WantWrite && e.PID != 0:
		return fmt.Sprintf("disk %s is in use read-only by %s; stop that VM or pass ,ro to share it read-only", e.Path, who)
	default:
		return fmt.Sprintf("disk %s is in use by %s; stop that VM or pass ,ro to share it read-only", e.Path, who)
	}
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// openImage opens and locks the image at path: an exclusive flock for a
// writable image, a shared one for a read-only image, so two VMs never
// write the same image and nobody reads one that is being written. flock
// is per open file description and released when fd is closed. The open
// does not block (O_NONBLOCK), so a FIFO is refused instead of hanging.
func openImage(path string, readOnly bool) (fd int, size uint64, err error) {
	flags := unix.O_RDWR
	if readOnly {
		flags = unix.O_RDONLY
	}
	fd, err = unix.Open(path, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if readOnly || !errors.Is(err, unix.EISDIR) {
			return -1, 0, fmt.Errorf("disk image %s: open: %w", path, err)
		}
		// Fall through to the clearer message below.
		if fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
			return -1, 0, fmt.Errorf("disk image %s: open: %w", path, err)
		}
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if err := checkImageType(fd, path); err != nil {
		return -1, 0, err
	}
	// Only the open needed it; reads and writes of an image always block.
	if err := unix.SetNonblock(fd, false); err != nil {
		return -1, 0, fmt.Errorf("disk image %s: fcntl: %w", path, err)
	}
	size, err = lockAndSize(fd, path, readOnly)
	if err != nil {
		return -1, 0, err
	}
	return fd, size, nil
}

// lockAndSize takes the image's flock (shared when readOnly) and returns
// its size.
func lockAndSize(fd int, path string, readOnly bool) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("disk image %s: fstat: %w", path, err)
	}
	lock := unix.LOCK_EX
	if readOnly {
		lock = unix.LOCK_SH
	}
	var err error
	for {
		err = unix.Flock(fd, lock|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		le := &LockedError{Path: path, WantWrite: !readOnly}
		le.PID, le.HolderWrites = lockHolder(st.Dev, st.Ino)
		if readOnly {
			le.HolderWrites = true // only an exclusive lock blocks a shared one
		}
		if le.PID != 0 {
			le.Command = processName(le.PID)
		}
		return 0, le
	}
	if err != nil {
		return 0, fmt.Errorf("disk image %s: flock: %w", path, err)
	}
	// SEEK_END gives the size of regular files and block devices alike.
	end, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return 0, fmt.Errorf("disk image %s: size: %w", path, err)
	}
	return uint64(end), nil
}

// lockHolder looks for the flock on device dev, inode ino in /proc/locks
// and returns the pid that took it and whether it is exclusive. It returns
// 0 when the holder cannot be found (another PID namespace, or the lock
// went away meanwhile).
func lockHolder(dev, ino uint64) (pid int, exclusive bool) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return findLockHolder(bufio.NewScanner(f), dev, ino)
}

// findLockHolder parses /proc/locks lines such as
//
//	1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
//
// where the device is major:minor in hex and the inode decimal. Lines of
// waiters ("1: -> FLOCK ...") are skipped.
func findLockHolder(sc *bufio.Scanner, dev, ino uint64) (pid int, exclusive bool) {
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		id := strings.Split(fields[5], ":")
		if len(id) != 3 {
			continue
		}
		major, err1 := strconv.ParseUint(id[0], 16, 32)
		minor, err2 := strconv.ParseUint(id[1], 16, 32)
		inode, err3 := strconv.ParseUint(id[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if uint32(major) != unix.Major(dev) || uint32(minor) != unix.Minor(dev) || inode != ino {
			continue
		}
		p, err := strconv.Atoi(fields[4])
		if err != nil || p <= 0 {
			continue
		}
		return p, fields[3] == "WRITE"
	}
	return 0, false
}

// processName is the command name of pid, or "" if it cannot be read.
func processName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
