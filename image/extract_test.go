package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/internal/command"
)

// needTools skips a test that drives tools this host lacks.
func needTools(t *testing.T, tools map[string]string) {
	t.Helper()
	if err := command.Need(tools); err != nil {
		t.Skipf("cannot test without the tools: %v", err)
	}
}

// fakeRoot makes a root filesystem tree with two kernels, the Debian
// symlinks (relative, in /boot) and an absolute /vmlinuz link.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"boot/vmlinuz-6.1.0-9-amd64":     "old kernel",
		"boot/vmlinuz-6.1.0-10-amd64":    "new kernel",
		"boot/initrd.img-6.1.0-9-amd64":  "old initrd",
		"boot/initrd.img-6.1.0-10-amd64": "new initrd",
		"etc/hostname":                   "fake\n",
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	return root
}

// mkfs makes an ext4 filesystem of tree in disk at offset.
func mkfs(t *testing.T, disk, tree string, offset, size int64) {
	t.Helper()
	args := []string{"-q", "-F", "-t", "ext4", "-L", "fakeroot", "-d", tree}
	if offset > 0 {
		args = append(args, "-E", fmt.Sprintf("offset=%d", offset))
	}
	args = append(args, disk, fmt.Sprintf("%dk", size>>10))
	out, err := exec.Command("mkfs.ext4", args...).CombinedOutput()
	require.NoError(t, err, "mkfs.ext4: %s", out)
}

func wholeDiskImage(t *testing.T, tree string) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.raw")
	require.NoError(t, os.WriteFile(disk, nil, 0o644))
	require.NoError(t, os.Truncate(disk, 32<<20))
	mkfs(t, disk, tree, 0, 32<<20)
	return disk
}

const (
	partStart = 1 << 20
	partSize  = 32 << 20
	diskSize  = partStart + partSize + 1<<20
)

// partitionedImage writes a partition table of kind gpt or mbr with an
// empty first partition and the ext4 root as the second.
func partitionedImage(t *testing.T, kind, tree string) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), kind+".raw")
	f, err := os.Create(disk)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(diskSize))
	// Partition 1 is a small non-ext partition in front; 2 is the root.
	rootStart := uint64(partStart+(2<<20)) / 512
	rootEnd := uint64(partStart+partSize)/512 - 1
	switch kind {
	case "gpt":
		table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
			{Index: 1, Start: partStart / 512, End: partStart/512 + (2<<20)/512 - 1, Type: gpt.EFISystemPartition, Name: "esp"},
			{Index: 2, Start: rootStart, End: rootEnd, Type: gpt.LinuxFilesystem, Name: "root"},
		}}
		require.NoError(t, table.Write(f, diskSize))
	case "mbr":
		table := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{
			{Type: mbr.Fat32LBA, Start: partStart / 512, Size: (2 << 20) / 512},
			{Type: mbr.Linux, Start: uint32(rootStart), Size: uint32(rootEnd - rootStart + 1)},
		}}
		require.NoError(t, table.Write(f, diskSize))
	}
	require.NoError(t, f.Close())
	mkfs(t, disk, tree, int64(rootStart*512), int64(rootEnd-rootStart+1)*512)
	return disk
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func TestExtractBootLayouts(t *testing.T) {
	needTools(t, map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs"})
	ctx := context.Background()

	debianLinks := func(t *testing.T) string {
		root := fakeRoot(t)
		require.NoError(t, os.Symlink("vmlinuz-6.1.0-9-amd64", filepath.Join(root, "boot/vmlinuz")))
		require.NoError(t, os.Symlink("initrd.img-6.1.0-9-amd64", filepath.Join(root, "boot/initrd.img")))
		return root
	}
	tests := []struct {
		name       string
		disk       func(t *testing.T) string
		kernel     string
		initrd     string
		rootPrefix string
	}{
		{"whole disk, /boot/vmlinuz symlink", func(t *testing.T) string { return wholeDiskImage(t, debianLinks(t)) },
			"old kernel", "old initrd", "root=UUID="},
		{"whole disk, absolute /vmlinuz", func(t *testing.T) string {
			root := fakeRoot(t)
			require.NoError(t, os.Symlink("/boot/vmlinuz-6.1.0-9-amd64", filepath.Join(root, "vmlinuz")))
			return wholeDiskImage(t, root)
		}, "old kernel", "old initrd", "root=UUID="},
		{"whole disk, newest vmlinuz-*", func(t *testing.T) string { return wholeDiskImage(t, fakeRoot(t)) },
			"new kernel", "new initrd", "root=UUID="},
		{"gpt", func(t *testing.T) string { return partitionedImage(t, "gpt", debianLinks(t)) },
			"old kernel", "old initrd", "root=UUID="},
		{"mbr", func(t *testing.T) string { return partitionedImage(t, "mbr", fakeRoot(t)) },
			"new kernel", "new initrd", "root=UUID="},
		{"no initrd", func(t *testing.T) string {
			root := fakeRoot(t)
			require.NoError(t, os.Remove(filepath.Join(root, "boot/initrd.img-6.1.0-10-amd64")))
			return partitionedImage(t, "gpt", root)
		}, "new kernel", "", "root=/dev/vda2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := tt.disk(t)
			kernel, initrd, root, err := ExtractBoot(ctx, disk, t.TempDir())
			require.NoError(t, err)
			assert.Equal(t, tt.kernel, readString(t, kernel))
			if tt.initrd == "" {
				assert.Empty(t, initrd)
			} else {
				assert.Equal(t, tt.initrd, readString(t, initrd))
			}
			assert.True(t, strings.HasPrefix(root, tt.rootPrefix), root)
		})
	}
}

func TestExtractBootQCOW2AndCache(t *testing.T) {
	needTools(t, map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "qemu-img": "qemu-utils"})
	ctx := context.Background()
	raw := partitionedImage(t, "gpt", fakeRoot(t))
	qcow := filepath.Join(t.TempDir(), "disk.qcow2")
	require.NoError(t, Convert(ctx, raw, qcow, FormatQCOW2, nil))
	format, err := DetectFormat(qcow)
	require.NoError(t, err)
	require.Equal(t, FormatQCOW2, format)

	cacheDir := t.TempDir()
	kernel, initrd, root, err := ExtractBoot(ctx, qcow, cacheDir)
	require.NoError(t, err)
	assert.Equal(t, "new kernel", readString(t, kernel))
	assert.Equal(t, "new initrd", readString(t, initrd))
	assert.True(t, strings.HasPrefix(root, "root=UUID="), root)

	// The temporary raw copy is gone: the entry holds the boot files and
	// its description only.
	entries, err := os.ReadDir(filepath.Dir(kernel))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"vmlinuz", "initrd.img", bootMeta}, names)

	// Unchanged disk: the cached entry is used as it is.
	meta := filepath.Join(filepath.Dir(kernel), bootMeta)
	before, err := os.Stat(meta)
	require.NoError(t, err)
	kernel2, _, root2, err := ExtractBoot(ctx, qcow, cacheDir)
	require.NoError(t, err)
	assert.Equal(t, kernel, kernel2)
	assert.Equal(t, root, root2)
	after, err := os.Stat(meta)
	require.NoError(t, err)
	assert.Equal(t, before.ModTime(), after.ModTime(), "cache hit rewrites nothing")

	// A changed disk (new mtime) is extracted again, into the same entry.
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(qcow, later, later))
	kernel3, _, _, err := ExtractBoot(ctx, qcow, cacheDir)
	require.NoError(t, err)
	assert.Equal(t, kernel, kernel3)
	after, err = os.Stat(meta)
	require.NoError(t, err)
	assert.NotEqual(t, before.ModTime(), after.ModTime(), "changed disk is re-extracted")
	dirs, err := os.ReadDir(cacheDir)
	require.NoError(t, err)
	var entryDirs int
	for _, d := range dirs {
		if d.IsDir() {
			entryDirs++
		}
	}
	assert.Equal(t, 1, entryDirs, "one entry per disk file, no staging left")
}

func TestExtractBootNoKernel(t *testing.T) {
	needTools(t, map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs"})
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "hello"), []byte("hi"), 0o644))
	disk := wholeDiskImage(t, root)
	_, _, _, err := ExtractBoot(context.Background(), disk, t.TempDir())
	require.ErrorIs(t, err, ErrNoRootFS)
	assert.Contains(t, err.Error(), "/boot")
}

func TestExtractBootNotADisk(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "junk.img")
	require.NoError(t, os.WriteFile(disk, []byte(strings.Repeat("junk", 4096)), 0o644))
	needTools(t, map[string]string{"debugfs": "e2fsprogs"})
	_, _, _, err := ExtractBoot(context.Background(), disk, t.TempDir())
	require.ErrorIs(t, err, ErrNoRootFS)

	_, _, _, err = ExtractBoot(context.Background(), filepath.Join(t.TempDir(), "missing"), t.TempDir())
	require.True(t, errors.Is(err, os.ErrNotExist), err)
}

func TestExtractBootSymlinkLoop(t *testing.T) {
	needTools(t, map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs"})
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "boot"), 0o755))
	require.NoError(t, os.Symlink("vmlinuz", filepath.Join(root, "boot/vmlinuz")))
	disk := wholeDiskImage(t, root)
	_, _, _, err := ExtractBoot(context.Background(), disk, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "symlinks")
}

func TestCompareVersions(t *testing.T) {
	assert.Negative(t, compareVersions("6.1.0-9-amd64", "6.1.0-10-amd64"))
	assert.Positive(t, compareVersions("6.10.0", "6.9.0"))
	assert.Zero(t, compareVersions("6.1.0", "6.1.0"))
	assert.Negative(t, compareVersions("6.1", "6.1.1"))
	assert.Negative(t, compareVersions("5.10.0-30-cloud-amd64", "6.1.0-1-cloud-amd64"))
}

func TestParseStat(t *testing.T) {
	out := []byte(`Inode: 19   Type: symlink    Mode:  0777   Flags: 0x0
Generation: 0    Version: 0x00000000:00000000
User:     0   Group:     0   Project:     0   Size: 28
Fragment:  Address: 0    Number: 0    Size: 0
Fast link dest: "vmlinuz-6.1.0-50-cloud-amd64"
`)
	in, err := parseStat(out)
	require.NoError(t, err)
	assert.Equal(t, inode{Type: "symlink", Size: 28, LinkDest: "vmlinuz-6.1.0-50-cloud-amd64"}, in)

	in, err = parseStat([]byte("Inode: 26   Type: character special    Mode:  0666   Flags: 0x0\nUser: 0 Size: 0\n"))
	require.NoError(t, err)
	assert.Equal(t, "character special", in.Type)

	_, err = parseStat([]byte("garbage"))
	assert.Error(t, err)
}

func TestParseList(t *testing.T) {
	out := []byte(`/13/040755/0/0/.//
/2/040755/0/0/..//
/17/100644/0/0/initrd.img-6.1.0-50-cloud-amd64/15285424/
/19/120777/0/0/vmlinuz/28/
garbage
/x/notoctal/0/0/bad/1/
`)
	entries := parseList(out)
	require.Len(t, entries, 2)
	assert.Equal(t, "initrd.img-6.1.0-50-cloud-amd64", entries[0].Name)
	assert.True(t, entries[0].isRegular())
	assert.Equal(t, int64(15285424), entries[0].Size)
	assert.True(t, entries[1].isLink())
}

func TestQuote(t *testing.T) {
	q, err := quote("/boot/vmlinuz")
	require.NoError(t, err)
	assert.Equal(t, `"/boot/vmlinuz"`, q)
	for _, bad := range []string{`/a"b`, "/a\nb", `/a\b`} {
		_, err := quote(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzFindExtFilesystems(f *testing.F) {
	// Seeds: an MBR signature, a GPT header, an ext superblock.
	mbrSeed := make([]byte, 1024)
	mbrSeed[510], mbrSeed[511] = 0x55, 0xaa
	f.Add(mbrSeed)
	gptSeed := make([]byte, 4096)
	copy(gptSeed[512:], gptSignature)
	f.Add(gptSeed)
	extSeed := make([]byte, 4096)
	extSeed[1024+sbMagicOffset], extSeed[1024+sbMagicOffset+1] = 0x53, 0xef
	f.Add(extSeed)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "disk")
		require.NoError(t, os.WriteFile(p, data, 0o644))
		found, err := findExtFilesystems(p)
		if err != nil {
			return
		}
		for _, fs := range found {
			assert.GreaterOrEqual(t, fs.Offset, int64(0))
			assert.LessOrEqual(t, fs.Offset+fs.Size, int64(len(data)))
		}
	})
}
