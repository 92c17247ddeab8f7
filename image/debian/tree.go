package debian

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// tree is the installed system's root directory. Files are written with
// openat2(RESOLVE_IN_ROOT), which resolves symlinks as if the tree were /:
// the tree is full of absolute symlinks, and following one the host's way
// as root would write into the host's own /etc.
type tree struct {
	root string
	fd   int
}

func openTree(root string) (*tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tree %s: %w", root, err)
	}
	return &tree{root: root, fd: fd}, nil
}

func (t *tree) close() { unix.Close(t.fd) }

// rel turns an absolute in-tree path into one relative to the tree's fd.
func rel(p string) string {
	r := strings.TrimLeft(path.Clean("/"+p), "/")
	if r == "" {
		return "."
	}
	return r
}

func (t *tree) open(p string, flags uint64, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(t.fd, rel(p), &unix.OpenHow{
			Flags:   flags | unix.O_CLOEXEC,
			Mode:    uint64(mode),
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // openat2 asks to retry when a rename raced it
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: filepath.Join(t.root, rel(p)), Err: err}
		}
		return fd, nil
	}
}

// mkdirAll makes directory p and its parents inside the tree.
func (t *tree) mkdirAll(p string, mode os.FileMode) error {
	dir := "/"
	for _, part := range strings.Split(rel(p), "/") {
		if part == "." || part == "" {
			continue
		}
		parent, err := t.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(parent, part, uint32(mode.Perm()))
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdirat", Path: filepath.Join(t.root, dir, part), Err: err}
		}
		dir = path.Join(dir, part)
	}
	return nil
}

// writeFile writes data to p inside the tree with exactly mode.
func (t *tree) writeFile(p string, data []byte, mode os.FileMode) error {
	if err := t.mkdirAll(path.Dir(path.Clean("/"+p)), 0o755); err != nil {
		return err
	}
	fd, err := t.open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, uint32(mode.Perm()))
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(t.root, rel(p)))
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// The umask trimmed the creation mode; an existing file kept its own.
	return f.Chmod(mode.Perm())
}

// copyOut copies the file at p (symlinks followed inside the tree) to the
// host path out.
func (t *tree) copyOut(p, out string) error {
	fd, err := t.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	in := os.NewFile(uintptr(fd), filepath.Join(t.root, rel(p)))
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	o, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return fmt.Errorf("copy %s out of the tree: %w", p, err)
	}
	return o.Close()
}

// linkTarget returns the final path of the symlink chain at p inside the
// tree (p itself if it is not a symlink).
func (t *tree) linkTarget(p string) (string, error) {
	p = path.Clean("/" + p)
	for range 16 {
		target, err := os.Readlink(filepath.Join(t.root, rel(p)))
		if errors.Is(err, unix.EINVAL) {
			return p, nil
		}
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = path.Clean(target)
	}
	return "", fmt.Errorf("%s: too many symlinks", p)
}

// usage is what a tree needs from a filesystem.
type usage struct {
	Bytes  uint64 // allocated bytes, hard links counted once
	Inodes uint64
}

// measure walks the tree like du: allocated blocks of every inode once.
func measure(root string) (usage, error) {
	var u usage
	type id struct{ dev, ino uint64 }
	seen := map[id]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat information", p)
		}
		k := id{uint64(st.Dev), st.Ino}
		if seen[k] {
			return nil
		}
		seen[k] = true
		u.Inodes++
		u.Bytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return usage{}, fmt.Errorf("measure %s: %w", root, err)
	}
	return u, nil
}

// symlink makes p a symlink to target inside the tree, replacing what is
// there.
func (t *tree) symlink(target, p string) error {
	p = path.Clean("/" + p)
	parent, err := t.open(path.Dir(p), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	name := path.Base(p)
	if err := unix.Unlinkat(parent, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlinkat", Path: filepath.Join(t.root, rel(p)), Err: err}
	}
	if err := unix.Symlinkat(target, parent, name); err != nil {
		return &os.PathError{Op: "symlinkat", Path: filepath.Join(t.root, rel(p)), Err: err}
	}
	return nil
}
