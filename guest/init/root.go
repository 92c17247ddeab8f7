package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

// rootWait bounds how long init waits for the root disk to appear: virtio
// disks show up while their module loads, but devtmpfs may lag a little.
const rootWait = 10 * time.Second

const newRoot = "/newroot"

var errNoRoot = errors.New("root device not found")

// switchRoot mounts the disk named by root= and makes it the root
// filesystem, moving /dev, /proc, /sys and /run along, as the kernel's own
// root mounting and initramfs-tools' switch_root do. The initramfs stays
// in memory (it is small); nothing in it is needed afterwards.
func switchRoot(log *logger, p initproto.Params) error {
	dev, err := waitForRoot(p.Root, rootWait)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", newRoot, err)
	}
	var flags uintptr
	if !p.RootRW {
		flags |= unix.MS_RDONLY
	}
	fstypes := []string{p.RootFSType}
	if p.RootFSType == "" {
		fstypes = []string{"ext4", "ext3", "ext2", "xfs", "btrfs", "vfat"}
	}
	var mountErr error
	for _, fs := range fstypes {
		if mountErr = unix.Mount(dev, newRoot, fs, flags, p.RootFlags); mountErr == nil {
			break
		}
	}
	if mountErr != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", dev, newRoot, strings.Join(fstypes, ", "), mountErr)
	}
	log.infof("mounted root %s (%s)", dev, map[bool]string{true: "rw", false: "ro"}[p.RootRW])
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		target := filepath.Join(newRoot, m)
		if st, err := os.Stat(target); err != nil || !st.IsDir() {
			log.errorf("new root has no %s; not moving it", m)
			continue
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			log.errorf("move %s into the new root: %v", m, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// waitForRoot resolves root= (a device path, LABEL= or UUID=) to a device
// node, polling until it appears or wait passes.
func waitForRoot(spec string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		dev, err := resolveRoot(spec)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, errNoRoot) || time.Now().After(deadline) {
			return "", fmt.Errorf("root=%s: %w", spec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func resolveRoot(spec string) (string, error) {
	switch {
	case strings.HasPrefix(spec, "LABEL="):
		return findExtFS(func(sb []byte) bool { return extLabel(sb) == strings.TrimPrefix(spec, "LABEL=") })
	case strings.HasPrefix(spec, "UUID="):
		want := strings.ToLower(strings.TrimPrefix(spec, "UUID="))
		return findExtFS(func(sb []byte) bool { return extUUID(sb) == want })
	case strings.HasPrefix(spec, "/dev/"):
		if _, err := os.Stat(spec); err != nil {
			return "", errNoRoot
		}
		return spec, nil
	}
	return "", fmt.Errorf("want /dev/NAME, LABEL=name or UUID=uuid")
}

// ext2/3/4 superblock fields (at byte 1024 of the filesystem).
const (
	extSuperOffset = 1024
	extMagicOffset = 0x38
	extUUIDOffset  = 0x68
	extLabelOffset = 0x78
	extMagic       = 0xEF53
)

// findExtFS returns the first block device whose ext superblock matches.
func findExtFS(match func(sb []byte) bool) (string, error) {
	names, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return "", fmt.Errorf("list block devices: %w", err)
	}
	for _, n := range names {
		dev := "/dev/" + n.Name()
		sb, err := readSuperblock(dev)
		if err == nil && match(sb) {
			return dev, nil
		}
	}
	return "", errNoRoot
}

func readSuperblock(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb := make([]byte, 256)
	if _, err := f.ReadAt(sb, extSuperOffset); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint16(sb[extMagicOffset:]) != extMagic {
		return nil, errNoRoot
	}
	return sb, nil
}

func extLabel(sb []byte) string {
	l := sb[extLabelOffset : extLabelOffset+16]
	if i := strings.IndexByte(string(l), 0); i >= 0 {
		l = l[:i]
	}
	return string(l)
}

func extUUID(sb []byte) string {
	u := sb[extUUIDOffset : extUUIDOffset+16]
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// execInit hands PID 1 to the new root's init. It returns only on error.
func execInit(path string) error {
	if path == "" {
		path = "/sbin/init"
	}
	err := unix.Exec(path, []string{path}, childEnv(os.Environ()))
	return fmt.Errorf("exec %s: %w", path, err)
}
