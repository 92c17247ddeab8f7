package blk

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Disk image formats.
const (
	FormatRaw   = "raw"
	FormatQcow2 = "qcow2"
)

// Errors of the format rule; test with errors.Is.
var (
	// ErrFormat: a format other than raw or qcow2 was asked for.
	ErrFormat = errors.New("unknown disk format")
	// ErrFormatMismatch: the file's first bytes disagree with the format
	// its name or the user gave it.
	ErrFormatMismatch = errors.New("disk contents disagree with its format")
)

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// DecideFormat is the one rule that says how a disk is read. The format
// comes from the user (declared, "" when not given) or else from the file
// name (.qcow2 → qcow2, anything else → raw), never from the contents:
// a guest can write a qcow2 header into its raw disk, and reading that
// disk as qcow2 would open whatever host file the header names. The
// contents are only checked against that decision: hasQcow2Magic says
// whether the file starts with the qcow2 magic.
//
//   - declared raw: raw, whatever the contents (a raw disk whose guest
//     wrote a qcow2 header keeps booting as raw).
//   - declared qcow2 without the magic: refused.
//   - not declared, name without .qcow2, with the magic: refused, since
//     either the user forgot format=qcow2 or a guest wrote the header.
//   - not declared, name .qcow2, without the magic: refused.
func DecideFormat(path, declared string, hasQcow2Magic bool) (string, error) {
	format, err := intendedFormat(path, declared)
	if err != nil {
		return "", err
	}
	switch {
	case declared == FormatRaw:
		return FormatRaw, nil
	case declared == FormatQcow2 && !hasQcow2Magic:
		return "", fmt.Errorf("disk %s has no qcow2 header but format=qcow2 was given: if it is a raw disk, say format=raw: %w", path, ErrFormatMismatch)
	case format == FormatQcow2 && !hasQcow2Magic:
		return "", fmt.Errorf("disk %s has no qcow2 header but its name ends in .qcow2: if it is a raw disk, say format=raw (or rename it): %w", path, ErrFormatMismatch)
	case format == FormatRaw && hasQcow2Magic:
		return "", fmt.Errorf("disk %s starts with a qcow2 header but is used as raw (its name has no .qcow2 and no format= was given): "+
			"if it really is qcow2, say format=qcow2; if it is a raw disk, say format=raw; a guest can write such a header into a raw disk, so wisp never guesses: %w",
			path, ErrFormatMismatch)
	}
	return format, nil
}

// intendedFormat is the format the user gave, or else the one the file
// name says.
func intendedFormat(path, declared string) (string, error) {
	switch declared {
	case FormatRaw, FormatQcow2:
		return declared, nil
	case "":
		if strings.EqualFold(filepath.Ext(path), ".qcow2") {
			return FormatQcow2, nil
		}
		return FormatRaw, nil
	}
	return "", fmt.Errorf("disk %s: format %q: want raw or qcow2: %w", path, declared, ErrFormat)
}

// ResolveFormat applies DecideFormat to the file at path. It opens the
// file without blocking (a FIFO does not hang it) and reads only a regular
// file or a block device.
func ResolveFormat(path, declared string) (string, error) {
	if declared == FormatRaw {
		return FormatRaw, nil // nothing to check: raw is raw
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("disk image %s: open: %w", path, err)
	}
	defer unix.Close(fd)
	if err := checkImageType(fd, path); err != nil {
		return "", err
	}
	magic, err := hasQcow2Magic(fd, path)
	if err != nil {
		return "", err
	}
	return DecideFormat(path, declared, magic)
}

// checkImageType accepts a regular file or a block device.
func checkImageType(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("disk image %s: fstat: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFBLK:
		return nil
	case unix.S_IFDIR:
		return fmt.Errorf("disk image %s: is a directory, not an image file: %w", path, ErrNotImage)
	default:
		return fmt.Errorf("disk image %s: not a regular file or block device (mode %#o): %w", path, st.Mode, ErrNotImage)
	}
}

// hasQcow2Magic reads the first bytes of an open image.
func hasQcow2Magic(fd int, path string) (bool, error) {
	head := make([]byte, len(qcow2Magic))
	got := 0
	for got < len(head) {
		n, err := unix.Pread(fd, head[got:], int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("disk image %s: read header: %w", path, err)
		}
		if n == 0 {
			break // shorter than the magic: not qcow2
		}
		got += n
	}
	return got == len(head) && bytes.Equal(head, qcow2Magic), nil
}
