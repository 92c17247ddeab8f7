package debian

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/image/vmdir"
	"github.com/wisp-vmm/wisp/internal/cache"
	"github.com/wisp-vmm/wisp/vmm"
)

// Space estimates for the free-space check before a build. The base
// system takes about 500M installed and a little more as an image; these
// leave room for extra packages.
const (
	imageEstimate = 1 << 30   // the disk image's data
	debsEstimate  = 256 << 20 // downloaded packages
)

// runScript boots the machine directory it sits in.
const runScript = `#!/bin/sh
# Boots this machine directory (written by wisp image build). Arguments are
# passed on to wisp run; set WISP to use a wisp that is not on $PATH.
exec "${WISP:-wisp}" run --vm "$(dirname "$0")" "$@"
`

// Cmdline is the kernel command line written into vm.json: the root by
// label (read-only until systemd remounts it per fstab) and wisp's usual
// console and reboot settings.
func Cmdline() string { return "root=LABEL=" + RootLabel + " ro " + vmm.DefaultCmdline }

// checkSpace fails early, in one line, when the cache's or the output's
// filesystem cannot hold the build: the tree and the raw image (and a
// qcow2 copy) in the cache, the image's copy in the output.
func checkSpace(cacheDir, outDir string, o Options, cached bool) error {
	est := min(o.Size, imageEstimate)
	var cacheNeed uint64
	if !cached {
		cacheNeed = 2*est + debsEstimate
		if o.Format == image.FormatQCOW2 {
			cacheNeed += est
		}
	}
	outNeed := est
	cacheFS, err := statfs(cacheDir)
	if err != nil {
		return err
	}
	outFS, err := statfs(filepath.Dir(filepath.Clean(outDir)))
	if err != nil {
		return err
	}
	if cacheFS.id == outFS.id {
		if need := cacheNeed + outNeed; cacheFS.free < need {
			return noSpace(cacheDir+" and "+outDir, cacheFS.free, need)
		}
		return nil
	}
	if cacheFS.free < cacheNeed {
		return noSpace(cacheDir, cacheFS.free, cacheNeed)
	}
	if outFS.free < outNeed {
		return noSpace(outDir, outFS.free, outNeed)
	}
	return nil
}

// ErrNoSpace: a filesystem is too full to build or write the image.
var ErrNoSpace = errors.New("no space")

func noSpace(where string, free, need uint64) error {
	return fmt.Errorf("%w: %s has %s free and the build needs about %s: free some space, or put the cache (WISP_CACHE) or -o on a bigger filesystem",
		ErrNoSpace, where, humanSize(free), humanSize(need))
}

type fsInfo struct {
	id   [2]int32
	free uint64
}

// statfs reports the filesystem holding path (or its nearest existing
// parent: the cache directory may not exist yet).
func statfs(path string) (fsInfo, error) {
	p := filepath.Clean(path)
	for {
		var s unix.Statfs_t
		err := unix.Statfs(p, &s)
		if err == nil {
			return fsInfo{id: s.Fsid.Val, free: s.Bavail * uint64(s.Bsize)}, nil
		}
		if !errors.Is(err, unix.ENOENT) || p == filepath.Dir(p) {
			return fsInfo{}, fmt.Errorf("statfs %s: %w", p, err)
		}
		p = filepath.Dir(p)
	}
}

// writeOutput copies the cache entry into a temporary directory next to
// outDir, adds vm.json and run.sh, and renames it to outDir.
func writeOutput(ctx context.Context, entry string, meta entryMeta, o Options, outDir string) (err error) {
	outDir = filepath.Clean(outDir)
	tmp, err := os.MkdirTemp(filepath.Dir(outDir), "."+filepath.Base(outDir)+cacheTmpSuffix)
	if err != nil {
		return fmt.Errorf("write %s: %w", outDir, err)
	}
	defer func() {
		if err != nil {
			cache.Remove(tmp)
		}
	}()
	for _, f := range []string{meta.Disk, KernelFile, InitrdFile} {
		if err := image.CopyFile(ctx, filepath.Join(entry, f), filepath.Join(tmp, f)); err != nil {
			return err
		}
	}
	m := &vmdir.Machine{
		Dir:         tmp,
		Kernel:      KernelFile,
		Initrd:      InitrdFile,
		Cmdline:     Cmdline(),
		CPUs:        o.CPUs,
		MemoryBytes: o.MemoryBytes,
		Disks:       []vmdir.Disk{{Path: meta.Disk, Format: meta.Format}},
		Nets:        []vmdir.Net{{Mode: vmdir.NetUser}},
	}
	if err := vmdir.Save(m); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, RunScript), []byte(runScript), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", RunScript, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	// rename(2) replaces an empty outDir and fails on a non-empty one
	// (filled while we copied), and the copy is removed. (os.Rename
	// refuses any existing directory.)
	if err := unix.Rename(tmp, outDir); err != nil {
		return fmt.Errorf("write %s: %w", outDir, err)
	}
	return nil
}

// cacheTmpSuffix marks temporary output directories.
const cacheTmpSuffix = ".tmp-"
