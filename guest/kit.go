// Package guest is wisp's guest kit: it fetches Debian's cloud kernel,
// builds a minimal microVM kernel from Debian's kernel source and an
// in-repo config fragment, and builds the default initramfs (wisp's Go init
// plus busybox and the kernel's virtio modules). Everything it produces is
// cached under a cache directory and written atomically (temporary
// directory + rename), so an interrupted fetch or build never leaves a
// half-made result that a later call would trust.
package guest

import (
	"errors"
	"io"
	"os"
	"path/filepath"
)

// Errors callers can test for with errors.Is.
var (
	// ErrNoKernel: neither apt nor a host /boot/vmlinuz-* is available.
	ErrNoKernel = errors.New("no kernel source available: neither apt-get nor /boot/vmlinuz-* found")
	// ErrNotCached: a cache-only lookup found nothing.
	ErrNotCached = errors.New("not in the cache")
)

// DefaultCacheDir is $WISP_CACHE, else ~/.cache/wisp (falling back to
// $TMPDIR/wisp-cache when there is no home directory).
func DefaultCacheDir() string {
	if d := os.Getenv("WISP_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "wisp")
	}
	return filepath.Join(os.TempDir(), "wisp-cache")
}

// Kit fetches and builds guest kernels and initramfs images into CacheDir.
// A Kit holds no state besides its fields, so several Kits (even in several
// processes) may share one CacheDir: cache entries are guarded by file
// locks.
type Kit struct {
	// CacheDir is where results are kept; "" means DefaultCacheDir().
	CacheDir string
	// Progress receives progress bars, counters and the output of apt;
	// nil means silent.
	Progress io.Writer
}

// Kernel is a guest kernel on the host's disk.
type Kernel struct {
	// Version is the kernel release (uname -r inside the guest), e.g.
	// "6.1.0-56-cloud-amd64".
	Version string `json:"version"`
	// Image is the bootable bzImage/vmlinuz path.
	Image string `json:"image"`
	// ELF is the uncompressed ELF vmlinux path ("" if none could be made).
	ELF string `json:"elf,omitempty"`
	// ModulesDir is the lib/modules/<version> tree ("" if the kernel has
	// everything built in).
	ModulesDir string `json:"modules_dir,omitempty"`
}

func (k *Kit) cacheDir() string {
	if k.CacheDir != "" {
		return k.CacheDir
	}
	return DefaultCacheDir()
}

func (k *Kit) progress() io.Writer {
	if k.Progress == nil {
		return io.Discard
	}
	return k.Progress
}
