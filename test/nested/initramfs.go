package nested

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/u-root/u-root/pkg/cpio"
)

// Initramfs gathers the entries of a newc cpio archive for the kernel to
// unpack as its root file system. Host files are opened only when the
// archive is written.
type Initramfs struct {
	entries []entry
}

type entry struct {
	name string // inside the archive, no leading "/"
	mode uint64 // cpio mode bits, type included
	host string // regular files: the host file ("" for data)
	data []byte
	size int64 // of the host file, checked when written
	dev  [2]uint64
}

// NewInitramfs starts an archive with the directories and the console
// device every boot needs: the kernel opens /dev/console for init's
// standard streams before init can mount devtmpfs.
func NewInitramfs() *Initramfs {
	r := &Initramfs{}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "root"} {
		r.AddDir(d)
	}
	r.entries = append(r.entries, entry{name: "dev/console", mode: cpio.S_IFCHR | 0o600, dev: [2]uint64{5, 1}})
	return r
}

// Clone is a copy that can be added to without changing r: each nested VM
// boots r plus its own init and plan.
func (r *Initramfs) Clone() *Initramfs {
	return &Initramfs{entries: append([]entry(nil), r.entries...)}
}

// AddDir adds an empty directory.
func (r *Initramfs) AddDir(name string) {
	r.entries = append(r.entries, entry{name: clean(name), mode: cpio.S_IFDIR | 0o755})
}

// AddBytes adds a regular file with the given contents.
func (r *Initramfs) AddBytes(name string, data []byte, perm fs.FileMode) {
	r.entries = append(r.entries, entry{name: clean(name), mode: cpio.S_IFREG | uint64(perm.Perm()), data: data})
}

// AddFile adds the host file at host (following symlinks) as name, with
// its permission bits.
func (r *Initramfs) AddFile(name, host string) error {
	st, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file", host)
	}
	r.entries = append(r.entries, entry{name: clean(name), mode: cpio.S_IFREG | uint64(st.Mode().Perm()), host: host, size: st.Size()})
	return nil
}

// AddTree adds every directory and regular file under the host directory
// dir as name/... Other kinds of files (sockets, devices) are left out.
func (r *Initramfs) AddTree(name, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		inside := path.Join(name, filepath.ToSlash(rel))
		if d.IsDir() {
			r.AddDir(inside)
			return nil
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return r.AddFile(inside, p)
		}
		return nil
	})
}

// Write writes the archive to the file out.
func (r *Initramfs) Write(out string) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("initramfs: %w", cerr)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := cpio.Newc.Writer(bw)
	written := map[string]bool{}
	for _, e := range r.entries {
		// Parent directories go first: the kernel does not create them
		// and drops files whose directory is missing.
		for _, dir := range parents(e.name) {
			if !written[dir] {
				if err := w.WriteRecord(cpio.Directory(dir, 0o755)); err != nil {
					return fmt.Errorf("initramfs %s: %w", dir, err)
				}
				written[dir] = true
			}
		}
		if written[e.name] {
			if e.mode&cpio.S_IFMT == cpio.S_IFDIR {
				continue
			}
			return fmt.Errorf("initramfs: %s added twice", e.name)
		}
		rec, closeFn, err := e.record()
		if err != nil {
			return err
		}
		err = w.WriteRecord(rec)
		closeFn()
		if err != nil {
			return fmt.Errorf("initramfs %s: %w", e.name, err)
		}
		written[e.name] = true
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return fmt.Errorf("initramfs: trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

func (e entry) record() (cpio.Record, func(), error) {
	info := cpio.Info{Name: e.name, Mode: e.mode, NLink: 1, Rmajor: e.dev[0], Rminor: e.dev[1]}
	if e.host == "" {
		info.FileSize = uint64(len(e.data))
		return cpio.Record{ReaderAt: bytes.NewReader(e.data), Info: info}, func() {}, nil
	}
	f, err := os.Open(e.host)
	if err != nil {
		return cpio.Record{}, nil, fmt.Errorf("initramfs: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return cpio.Record{}, nil, fmt.Errorf("initramfs: %w", err)
	}
	if st.Size() != e.size {
		f.Close()
		return cpio.Record{}, nil, fmt.Errorf("initramfs: %s changed size while the archive was built", e.host)
	}
	info.FileSize = uint64(st.Size())
	return cpio.Record{ReaderAt: f, Info: info}, func() { f.Close() }, nil
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var dirs []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	return dirs
}

func clean(name string) string {
	return cpio.Normalize(path.Clean("/" + name))
}
