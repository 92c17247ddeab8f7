package image

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/partition"
)

// Disk image formats.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// ErrNoRootFS: the disk holds no ext2/3/4 filesystem wisp can boot from.
var ErrNoRootFS = errors.New("no ext2/3/4 filesystem with /boot/vmlinuz found")

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// DetectFormat says whether path is a qcow2 image; anything else is raw.
// It reads the contents, so it is only for files the user hands to the
// image tools as what they are (convert's input, an image already checked
// with vmm.DiskFormat). A disk a VM boots never gets its format from here:
// a guest can write a qcow2 header into its raw disk, and vmm.DiskFormat
// takes the format from the user or the file name instead.
func DetectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, len(qcow2Magic))
	if _, err := io.ReadFull(f, head); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if bytes.Equal(head, qcow2Magic) {
		return FormatQCOW2, nil
	}
	return FormatRaw, nil
}

// CheckFormat accepts the formats wisp writes and boots.
func CheckFormat(format string) error {
	switch format {
	case FormatRaw, FormatQCOW2:
		return nil
	}
	return fmt.Errorf("format %q: use raw or qcow2", format)
}

// Superblock fields we read (offsets within the superblock, which starts
// 1024 bytes into the filesystem).
const (
	superblockOffset = 1024
	superblockSize   = 1024
	sbMagicOffset    = 0x38
	sbUUIDOffset     = 0x68
	sbLabelOffset    = 0x78
	extMagic         = 0xef53
)

// extFS is an ext2/3/4 filesystem found on a raw disk.
type extFS struct {
	// Offset and Size locate it in the disk, in bytes.
	Offset, Size int64
	// Partition is its 1-based partition number, 0 for a whole-disk
	// filesystem.
	Partition int
	UUID      string // "" if all zero
	Label     string
}

// readSuperblock returns the filesystem at offset, or ok=false if there
// is none.
func readSuperblock(r io.ReaderAt, offset int64) (fs extFS, ok bool, err error) {
	sb := make([]byte, superblockSize)
	n, err := r.ReadAt(sb, offset+superblockOffset)
	if n < len(sb) {
		if err == nil || errors.Is(err, io.EOF) {
			return extFS{}, false, nil
		}
		return extFS{}, false, err
	}
	if binary.LittleEndian.Uint16(sb[sbMagicOffset:]) != extMagic {
		return extFS{}, false, nil
	}
	fs = extFS{Offset: offset}
	uuid := sb[sbUUIDOffset : sbUUIDOffset+16]
	if !bytes.Equal(uuid, make([]byte, 16)) {
		h := hex.EncodeToString(uuid)
		fs.UUID = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	}
	label := sb[sbLabelOffset : sbLabelOffset+16]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	fs.Label = string(label)
	return fs, true, nil
}

// findExtFilesystems lists the ext filesystems on a raw disk: the whole
// disk if it is one, else each MBR or GPT partition that is one. The
// partition table is untrusted: entries that point outside the disk are
// skipped.
func findExtFilesystems(path string) ([]extFS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if fs, ok, err := readSuperblock(f, 0); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	} else if ok {
		fs.Size = size
		return []extFS{fs}, nil
	}
	table, err := readPartitionTable(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: neither an ext filesystem nor a disk with an MBR or GPT partition table: %w", path, ErrNoRootFS)
	}
	var found []extFS
	for i, p := range table.GetPartitions() {
		start, psize := p.GetStart(), p.GetSize()
		if start <= 0 || psize <= 0 || start > size || psize > size-start {
			continue
		}
		fs, ok, err := readSuperblock(f, start)
		if err != nil {
			return nil, fmt.Errorf("read %s partition %d: %w", path, i+1, err)
		}
		if !ok {
			continue
		}
		fs.Size = psize
		fs.Partition = p.GetIndex()
		if fs.Partition <= 0 {
			fs.Partition = i + 1
		}
		found = append(found, fs)
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%s: %s partition table has no ext2/3/4 partition: %w", path, table.Type(), ErrNoRootFS)
	}
	return found, nil
}

// rootSpec is the root= kernel parameter that finds fs: its UUID when it
// has one (unique, and independent of disk order), else the device.
func rootSpec(fs extFS) string {
	if fs.UUID != "" {
		return "root=UUID=" + fs.UUID
	}
	if fs.Partition == 0 {
		return "root=/dev/vda"
	}
	return fmt.Sprintf("root=/dev/vda%d", fs.Partition)
}

// GPT header fields we check before handing the table to go-diskfs.
const (
	gptSignature        = "EFI PART"
	gptNumEntriesOffset = 80
	gptEntrySizeOffset  = 84
	maxGPTEntries       = 4096
	maxGPTEntrySize     = 4096
)

// readPartitionTable reads an MBR or GPT table with go-diskfs, with
// 512-byte sectors as on virtio disks. The library sizes its reads from
// header fields, so a hostile header could make it allocate gigabytes:
// those fields are checked first, and a panic in the parser becomes an
// error.
func readPartitionTable(f *os.File, size int64) (table partition.Table, err error) {
	for _, lba := range []int64{1, size/512 - 1} {
		hdr := make([]byte, 512)
		if lba < 1 {
			continue
		}
		if n, _ := f.ReadAt(hdr, lba*512); n < len(hdr) || string(hdr[:8]) != gptSignature {
			continue
		}
		entries := binary.LittleEndian.Uint32(hdr[gptNumEntriesOffset:])
		entrySize := binary.LittleEndian.Uint32(hdr[gptEntrySizeOffset:])
		if entries > maxGPTEntries || entrySize < 128 || entrySize > maxGPTEntrySize || entrySize%8 != 0 {
			return nil, fmt.Errorf("GPT header at sector %d claims %d entries of %d bytes: not a sane partition table", lba, entries, entrySize)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			table, err = nil, fmt.Errorf("partition table parser failed: %v", r)
		}
	}()
	return partition.Read(f, 512, 512)
}
