package image

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/wisp-vmm/wisp/internal/cache"
	"github.com/wisp-vmm/wisp/internal/command"
)

// Limits on boot files read out of an image: a hostile image could claim
// a "kernel" of any size, and the files are copied to the host's disk.
const (
	maxKernelSize = 256 << 20
	maxInitrdSize = 2 << 30
)

// extractVersion changes when extraction changes what it produces, so
// older cache entries are redone.
const extractVersion = 1

// bootMeta is written last into a boot cache entry; an entry without it
// is not trusted.
const bootMeta = "boot.json"

// bootEntry describes a cache entry: the disk it came from (by identity
// and the size and time of its last change) and what was found.
type bootEntry struct {
	Version   int    `json:"version"`
	Disk      string `json:"disk"`
	Size      int64  `json:"size"`
	MtimeNs   int64  `json:"mtime_ns"`
	Kernel    string `json:"kernel"` // file name in the entry
	Initrd    string `json:"initrd,omitempty"`
	RootSpec  string `json:"root"`
	FromPath  string `json:"from"` // the kernel's path in the image
	Partition int    `json:"partition"`
}

// ExtractBoot copies the kernel and initrd out of disk's root filesystem
// without mounting it, and says how the kernel finds that filesystem
// again (rootSpec, e.g. "root=UUID=..."; add "ro" or "rw" to taste).
//
// disk is raw or qcow2 (qcow2 is first converted to a temporary raw file
// with qemu-img). The root filesystem is the disk itself if it is ext2/3/4,
// else the first MBR or GPT partition that is ext2/3/4 and holds a kernel.
// The kernel is /boot/vmlinuz, /vmlinuz or the newest /boot/vmlinuz-*; the
// initrd is the one of the same version, else /boot/initrd.img or
// /initrd.img. Symlinks are followed inside the image. Without an initrd,
// rootSpec names the device (/dev/vda or /dev/vdaN), since only an
// initramfs understands UUID=.
//
// Results are cached in destDir, one entry per disk file (by device and
// inode), redone when the disk's size or modification time changes.
func ExtractBoot(ctx context.Context, disk, destDir string) (kernel, initrd, rootSpec string, err error) {
	st, err := os.Stat(disk)
	if err != nil {
		return "", "", "", fmt.Errorf("boot from image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", "", "", fmt.Errorf("boot from image %s: not a regular file", disk)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", "", "", fmt.Errorf("boot from image %s: no inode information", disk)
	}
	id := sha256.Sum256(fmt.Appendf(nil, "%d:%d", sys.Dev, sys.Ino))
	entry := filepath.Join(destDir, "boot-"+hex.EncodeToString(id[:8]))
	want := bootEntry{Version: extractVersion, Disk: disk, Size: st.Size(), MtimeNs: st.ModTime().UnixNano()}

	if e, err := readBootEntry(entry, want); err == nil {
		return e.paths(entry)
	}
	lock, err := cache.Acquire(ctx, destDir, filepath.Base(entry))
	if err != nil {
		return "", "", "", err
	}
	defer lock.Unlock()
	if e, err := readBootEntry(entry, want); err == nil {
		return e.paths(entry)
	}

	tmp, err := cache.Staging(entry)
	if err != nil {
		return "", "", "", err
	}
	defer cache.Remove(tmp)
	e, err := extractInto(ctx, disk, tmp, want)
	if err != nil {
		return "", "", "", fmt.Errorf("boot from image %s: %w", disk, err)
	}
	if err := cache.WriteJSON(filepath.Join(tmp, bootMeta), e); err != nil {
		return "", "", "", err
	}
	if err := cache.Replace(tmp, entry); err != nil {
		return "", "", "", err
	}
	return e.paths(entry)
}

func (e bootEntry) paths(dir string) (kernel, initrd, rootSpec string, err error) {
	kernel = filepath.Join(dir, e.Kernel)
	if e.Initrd != "" {
		initrd = filepath.Join(dir, e.Initrd)
	}
	return kernel, initrd, e.RootSpec, nil
}

// readBootEntry loads a cache entry if it describes the same disk state.
func readBootEntry(dir string, want bootEntry) (bootEntry, error) {
	var e bootEntry
	b, err := os.ReadFile(filepath.Join(dir, bootMeta))
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, err
	}
	if e.Version != want.Version || e.Size != want.Size || e.MtimeNs != want.MtimeNs {
		return e, errors.New("stale")
	}
	for _, f := range []string{e.Kernel, e.Initrd} {
		if f == "" {
			continue
		}
		if f != filepath.Base(f) {
			return e, errors.New("bad file name")
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return e, err
		}
	}
	return e, nil
}

// extractInto does the work of ExtractBoot in the staging directory tmp.
func extractInto(ctx context.Context, disk, tmp string, e bootEntry) (bootEntry, error) {
	if err := command.Need(map[string]string{"debugfs": "e2fsprogs"}); err != nil {
		return e, err
	}
	format, err := DetectFormat(disk)
	if err != nil {
		return e, err
	}
	raw := disk
	if format == FormatQCOW2 {
		// debugfs reads raw images only. qemu-img writes zeros as holes,
		// so the copy costs the data's size, and is deleted with tmp.
		raw = filepath.Join(tmp, "disk.raw")
		if err := Convert(ctx, disk, raw, FormatRaw, nil); err != nil {
			return e, err
		}
		defer os.Remove(raw)
	}
	filesystems, err := findExtFilesystems(raw)
	if err != nil {
		return e, err
	}
	var errs []error
	for _, fs := range filesystems {
		d := newDebugfs(raw, fs.Offset)
		kpath, kin, err := findKernel(ctx, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", describeFS(fs), err))
			continue
		}
		if kin.Size > maxKernelSize {
			return e, fmt.Errorf("%s: kernel %s is %d bytes, more than %d", describeFS(fs), kpath, kin.Size, maxKernelSize)
		}
		e.Kernel, e.FromPath, e.Partition = "vmlinuz", kpath, fs.Partition
		if err := dumpFile(ctx, d, kpath, filepath.Join(tmp, e.Kernel), kin.Size); err != nil {
			return e, err
		}
		ipath, iin, err := findInitrd(ctx, d, kpath)
		switch {
		case err == nil:
			if iin.Size > maxInitrdSize {
				return e, fmt.Errorf("%s: initrd %s is %d bytes, more than %d", describeFS(fs), ipath, iin.Size, maxInitrdSize)
			}
			e.Initrd = "initrd.img"
			if err := dumpFile(ctx, d, ipath, filepath.Join(tmp, e.Initrd), iin.Size); err != nil {
				return e, err
			}
			e.RootSpec = rootSpec(fs)
		case errors.Is(err, ErrNotInImage):
			fs.UUID = "" // without an initramfs the kernel cannot find UUID=
			e.RootSpec = rootSpec(fs)
		default:
			return e, err
		}
		return e, nil
	}
	return e, fmt.Errorf("%w: %w", ErrNoRootFS, errors.Join(errs...))
}

func describeFS(fs extFS) string {
	if fs.Partition == 0 {
		return "filesystem"
	}
	return fmt.Sprintf("partition %d", fs.Partition)
}

// findKernel returns the kernel's real path (symlinks followed).
func findKernel(ctx context.Context, d debugfs) (string, inode, error) {
	for _, p := range []string{"/boot/vmlinuz", "/vmlinuz"} {
		real, in, err := d.resolve(ctx, p)
		if err == nil {
			return real, in, nil
		}
		if !errors.Is(err, ErrNotInImage) {
			return "", inode{}, err
		}
	}
	entries, err := d.list(ctx, "/boot")
	if err != nil {
		if errors.Is(err, ErrNotInImage) {
			return "", inode{}, fmt.Errorf("no /boot/vmlinuz, /vmlinuz or /boot directory: %w", ErrNotInImage)
		}
		return "", inode{}, err
	}
	var versions []string
	for _, e := range entries {
		if v, ok := strings.CutPrefix(e.Name, "vmlinuz-"); ok && (e.isRegular() || e.isLink()) {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		return "", inode{}, fmt.Errorf("no /boot/vmlinuz, /vmlinuz or /boot/vmlinuz-*: %w", ErrNotInImage)
	}
	slices.SortFunc(versions, compareVersions)
	return d.resolve(ctx, "/boot/vmlinuz-"+versions[len(versions)-1])
}

// findInitrd returns the initrd that goes with the kernel at kpath.
func findInitrd(ctx context.Context, d debugfs, kpath string) (string, inode, error) {
	var candidates []string
	if v, ok := strings.CutPrefix(path.Base(kpath), "vmlinuz-"); ok {
		dir := path.Dir(kpath)
		candidates = append(candidates, path.Join(dir, "initrd.img-"+v), path.Join(dir, "initramfs-"+v+".img"))
	}
	candidates = append(candidates, "/boot/initrd.img", "/initrd.img")
	for _, p := range candidates {
		real, in, err := d.resolve(ctx, p)
		if err == nil {
			return real, in, nil
		}
		if !errors.Is(err, ErrNotInImage) {
			return "", inode{}, err
		}
	}
	return "", inode{}, fmt.Errorf("no initrd for %s: %w", kpath, ErrNotInImage)
}

// dumpFile copies p out of the image to out and checks it got all of it.
func dumpFile(ctx context.Context, d debugfs, p, out string, size int64) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := d.cat(ctx, p, f, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("read %d of %s's %d bytes out of the image", st.Size(), p, size)
	}
	return nil
}

// compareVersions orders kernel release strings like Debian does for the
// common cases: runs of digits compare as numbers, the rest as text
// ("6.1.0-9" < "6.1.0-10").
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		if da != "" && db != "" {
			na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}
