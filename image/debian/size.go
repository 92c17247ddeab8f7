package debian

import "github.com/wisp-vmm/wisp/vmm"

// ext4 layout numbers mkfs.ext4 uses by default (mke2fs.conf "default"
// type), and the reserve Build asks for.
const (
	blockSize      = 4096
	inodeRatio     = 16384 // bytes of disk per inode
	inodeSize      = 256
	reservePercent = 1 // mkfs.ext4 -m 1: blocks only root may use
	suggestStep    = 256 << 20
)

// journalBytes is e2fsprogs' default journal size for a filesystem of
// size bytes (ext2fs_default_journal_size).
func journalBytes(size uint64) uint64 {
	blocks := size / blockSize
	var j uint64
	switch {
	case blocks < 2048:
		j = 0
	case blocks < 32768:
		j = 1024
	case blocks < 256*1024:
		j = 4096
	case blocks < 512*1024:
		j = 8192
	case blocks < 4096*1024:
		j = 16384
	case blocks < 8192*1024:
		j = 32768
	case blocks < 16384*1024:
		j = 65536
	case blocks < 32768*1024:
		j = 131072
	default:
		j = 262144
	}
	return j * blockSize
}

// inodesFor is how many inodes Build gives a filesystem of size bytes
// holding a tree of u: mkfs's default ratio, or more if the tree has many
// small files (with room to grow).
func inodesFor(u usage, size uint64) uint64 {
	return max(size/inodeRatio, u.Inodes*3/2)
}

// needBytes estimates the disk size the tree needs: its data (plus 5%
// for differences in how the two filesystems allocate) and ext4's own
// journal, inode tables, reserved blocks, bitmaps and descriptors.
func needBytes(u usage, size uint64) uint64 {
	data := u.Bytes + u.Bytes/20
	overhead := journalBytes(size) + inodesFor(u, size)*inodeSize + size*reservePercent/100 + size/200
	return data + overhead
}

// fits reports whether the tree fits a disk of size bytes.
func fits(u usage, size uint64) bool { return needBytes(u, size) <= size }

// suggestSize is the smallest multiple of 256M the tree fits in.
func suggestSize(u usage) uint64 {
	s := (u.Bytes/suggestStep + 1) * suggestStep
	for !fits(u, s) {
		s += suggestStep
	}
	return s
}

// tooSmall is the error for a tree that does not fit: one line saying
// how much it needs and what to pass instead.
func tooSmall(u usage, size uint64) error {
	s := suggestSize(u)
	return vmm.Invalidf("--size %s is too small: the installed system takes %s and needs a disk of at least %s; use --size %s or more",
		vmm.FormatSize(size), humanSize(u.Bytes), vmm.FormatSize(s), vmm.FormatSize(s))
}

// humanSize prints n in M with no decimals (FormatSize wants exact
// multiples).
func humanSize(n uint64) string {
	return vmm.FormatSize((n + 1<<20 - 1) >> 20 << 20)
}
