// Package qcow2 reads QEMU copy-on-write images (qcow2 versions 2 and 3):
// the two-level cluster map, deflate-compressed clusters, zero clusters and
// backing files. It never writes an image; package blk puts a throwaway
// overlay in front of it for the guest's writes.
//
// The format is described in QEMU's docs/interop/qcow2.txt. Every offset
// and size read from an image is checked, so a damaged or hostile image is
// an error, never a panic or an unbounded allocation.
package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
)

// Errors; test with errors.Is.
var (
	// ErrNotQcow2: the file does not start with the qcow2 magic.
	ErrNotQcow2 = errors.New("not a qcow2 image")
	// ErrUnsupported: a valid image using a feature this reader lacks
	// (encryption, external data file, extended L2, zstd ...).
	ErrUnsupported = errors.New("unsupported qcow2 feature")
	// ErrCorrupt: the image's metadata is inconsistent.
	ErrCorrupt = errors.New("corrupt qcow2 image")
	// ErrBackingFormat: a backing file that is not qcow2 is not declared
	// raw in the image header (backing_fmt). It is never assumed raw: the
	// header may have been written by someone who wants a host file read.
	ErrBackingFormat = errors.New("backing file format not declared")
)

// File is an open image file. *os.File implements it; ReadAt must be safe
// for concurrent use (pread is).
type File interface {
	io.ReaderAt
	Close() error
}

// Opener opens a backing file read-only (the caller may lock it). Its path
// is the name from the header, joined to the image's directory when
// relative; the name is untrusted, so the opener decides what it may reach.
type Opener func(path string) (f File, size uint64, err error)

const (
	magic = 0x514649fb // "QFI\xfb"

	// Header fields (big-endian).
	hdrV2Len        = 72
	hdrV3MinLen     = 104
	offBackingOff   = 8
	offBackingLen   = 16
	offClusterBits  = 20
	offSize         = 24
	offCryptMethod  = 32
	offL1Size       = 36
	offL1Offset     = 40
	offIncompatible = 72
	offRefcountOrd  = 96
	offHeaderLen    = 100
	offCompression  = 104

	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4

	extEnd           = 0
	extBackingFormat = 0xe2792aca

	// Table entries.
	l1OffsetMask = 0x00fffffffffffe00
	l2OffsetMask = 0x00fffffffffffe00
	l2Compressed = 1 << 62
	l2ZeroFlag   = 1 << 0

	// Limits that keep a hostile image from making us allocate or walk
	// without bound.
	minClusterBits  = 9
	maxClusterBits  = 21 // 2 MiB, QEMU's maximum
	maxSize         = 1 << 50
	maxL1Bytes      = 32 << 20
	maxBackingName  = 1023
	maxBackingDepth = 16
	maxCachedL2     = 64
	headerReadLen   = 1 << 16 // header and extensions live in the first cluster
)

// Image is an open qcow2 image and its backing chain.
type Image struct {
	f           File
	path        string
	fileSize    uint64
	size        uint64
	clusterBits uint
	l1          []uint64
	backing     backingFile // nil: unallocated clusters read as zeros

	mu      sync.Mutex
	l2Cache map[uint64][]uint64 // L2 table offset → entries
	// The last decompressed cluster: guests read compressed images mostly
	// sequentially, a cluster at a time in several requests.
	zOff  uint64
	zData []byte
}

// backingFile is what an image reads unallocated clusters from: another
// qcow2 Image or a raw file.
type backingFile interface {
	Size() uint64
	ReadAt(bufs [][]byte, off uint64) error
	Close() error
}

// Open parses the image in f (fileSize bytes, named path for messages and
// for resolving a relative backing file name) and opens its backing chain
// with open. The Image owns f and closes it on Close. open may be nil if
// the image is known to have no backing file.
func Open(f File, path string, fileSize uint64, open Opener) (*Image, error) {
	return openDepth(f, path, fileSize, open, 0)
}

func openDepth(f File, path string, fileSize uint64, open Opener, depth int) (*Image, error) {
	im, err := parse(f, path, fileSize, open, depth)
	if err != nil {
		f.Close()
		return nil, err
	}
	return im, nil
}

func parse(f File, path string, fileSize uint64, open Opener, depth int) (*Image, error) {
	hdr := make([]byte, min(fileSize, headerReadLen))
	if _, err := f.ReadAt(hdr, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2 %s: read header: %w", path, err)
	}
	if len(hdr) < hdrV2Len || binary.BigEndian.Uint32(hdr) != magic {
		return nil, fmt.Errorf("qcow2 %s: %w", path, ErrNotQcow2)
	}
	be := binary.BigEndian
	version := be.Uint32(hdr[4:])
	im := &Image{
		f:           f,
		path:        path,
		fileSize:    fileSize,
		size:        be.Uint64(hdr[offSize:]),
		clusterBits: uint(be.Uint32(hdr[offClusterBits:])),
		l2Cache:     make(map[uint64][]uint64),
	}
	headerLen := uint64(hdrV2Len)
	switch version {
	case 2:
	case 3:
		if len(hdr) < hdrV3MinLen {
			return nil, fmt.Errorf("qcow2 %s: version 3 header truncated: %w", path, ErrCorrupt)
		}
		headerLen = uint64(be.Uint32(hdr[offHeaderLen:]))
		if headerLen < hdrV3MinLen || headerLen > uint64(len(hdr)) {
			return nil, fmt.Errorf("qcow2 %s: header length %d: %w", path, headerLen, ErrCorrupt)
		}
		incompat := be.Uint64(hdr[offIncompatible:])
		if incompat&incompatCorrupt != 0 {
			return nil, fmt.Errorf("qcow2 %s: marked corrupt by QEMU; run qemu-img check -r all: %w", path, ErrCorrupt)
		}
		if incompat&incompatDataFile != 0 {
			return nil, fmt.Errorf("qcow2 %s: external data file: %w", path, ErrUnsupported)
		}
		if incompat&incompatExtendedL2 != 0 {
			return nil, fmt.Errorf("qcow2 %s: extended L2 entries: %w", path, ErrUnsupported)
		}
		if incompat&incompatCompression != 0 && (headerLen <= offCompression || hdr[offCompression] != 0) {
			return nil, fmt.Errorf("qcow2 %s: compression type other than deflate (zstd): %w", path, ErrUnsupported)
		}
		if unknown := incompat &^ (incompatDirty | incompatCompression); unknown != 0 {
			return nil, fmt.Errorf("qcow2 %s: incompatible feature bits %#x: %w", path, unknown, ErrUnsupported)
		}
		// A dirty image's refcounts may be stale; the cluster map, which is
		// all a reader uses, is always written before it is referenced.
		if order := be.Uint32(hdr[offRefcountOrd:]); order > 6 {
			return nil, fmt.Errorf("qcow2 %s: refcount order %d: %w", path, order, ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("qcow2 %s: version %d: %w", path, version, ErrUnsupported)
	}
	if be.Uint32(hdr[offCryptMethod:]) != 0 {
		return nil, fmt.Errorf("qcow2 %s: encrypted: %w", path, ErrUnsupported)
	}
	if im.clusterBits < minClusterBits || im.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("qcow2 %s: cluster bits %d: %w", path, im.clusterBits, ErrCorrupt)
	}
	if im.size > maxSize || im.size%512 != 0 {
		return nil, fmt.Errorf("qcow2 %s: virtual size %d: %w", path, im.size, ErrUnsupported)
	}
	if err := im.readL1(hdr); err != nil {
		return nil, err
	}
	backingName, backingFormat, err := im.backingInfo(hdr, headerLen)
	if err != nil {
		return nil, err
	}
	if backingName != "" {
		if err := im.openBacking(backingName, backingFormat, open, depth); err != nil {
			return nil, err
		}
	}
	return im, nil
}

func (im *Image) readL1(hdr []byte) error {
	be := binary.BigEndian
	entries := uint64(be.Uint32(hdr[offL1Size:]))
	off := be.Uint64(hdr[offL1Offset:])
	// One L2 table maps cluster/8 clusters.
	perL2 := uint64(1) << (2*im.clusterBits - 3)
	need := (im.size + perL2 - 1) / perL2
	if entries < need {
		return fmt.Errorf("qcow2 %s: L1 table of %d entries cannot map %d bytes: %w", im.path, entries, im.size, ErrCorrupt)
	}
	if entries*8 > maxL1Bytes {
		return fmt.Errorf("qcow2 %s: L1 table of %d entries: %w", im.path, entries, ErrUnsupported)
	}
	// Entries past what the size needs are never used.
	entries = need
	if err := im.checkRange(off, entries*8, "L1 table"); err != nil {
		return err
	}
	raw := make([]byte, entries*8)
	if _, err := im.f.ReadAt(raw, int64(off)); err != nil {
		return fmt.Errorf("qcow2 %s: read L1 table: %w", im.path, err)
	}
	im.l1 = make([]uint64, entries)
	for i := range im.l1 {
		im.l1[i] = be.Uint64(raw[8*i:])
	}
	return nil
}

// checkRange checks that [off, off+n) lies inside the image file.
func (im *Image) checkRange(off, n uint64, what string) error {
	if off > im.fileSize || n > im.fileSize-off {
		return fmt.Errorf("qcow2 %s: %s at [%#x, +%#x) outside the %d-byte file: %w", im.path, what, off, n, im.fileSize, ErrCorrupt)
	}
	return nil
}

// backingInfo returns the backing file name and the format named by the
// backing-format header extension ("" if absent).
func (im *Image) backingInfo(hdr []byte, headerLen uint64) (name, format string, err error) {
	be := binary.BigEndian
	// Header extensions: type, length, data padded to 8 bytes.
	for p := headerLen; p+8 <= uint64(len(hdr)); {
		typ, n := be.Uint32(hdr[p:]), uint64(be.Uint32(hdr[p+4:]))
		if typ == extEnd {
			break
		}
		data := p + 8
		if n > uint64(len(hdr))-data {
			return "", "", fmt.Errorf("qcow2 %s: header extension %#x of %d bytes: %w", im.path, typ, n, ErrCorrupt)
		}
		if typ == extBackingFormat {
			format = string(hdr[data : data+n])
		}
		p = data + (n+7)&^7
	}
	off, n := be.Uint64(hdr[offBackingOff:]), uint64(be.Uint32(hdr[offBackingLen:]))
	if off == 0 {
		return "", "", nil
	}
	if n == 0 || n > maxBackingName || off > uint64(len(hdr)) || n > uint64(len(hdr))-off {
		return "", "", fmt.Errorf("qcow2 %s: backing file name at [%#x, +%d): %w", im.path, off, n, ErrCorrupt)
	}
	return string(hdr[off : off+n]), format, nil
}

func (im *Image) openBacking(name, format string, open Opener, depth int) error {
	if open == nil {
		return fmt.Errorf("qcow2 %s: has backing file %q but no way to open it: %w", im.path, name, ErrUnsupported)
	}
	if depth+1 >= maxBackingDepth {
		return fmt.Errorf("qcow2 %s: backing chain deeper than %d (a loop?): %w", im.path, maxBackingDepth, ErrCorrupt)
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(im.path), name)
	}
	f, size, err := open(path)
	if err != nil {
		return fmt.Errorf("qcow2 %s: backing file: %w", im.path, err)
	}
	switch format {
	case "raw":
		im.backing = &rawBacking{f: f, size: size}
		return nil
	case "qcow2", "":
		var m [4]byte
		if _, err := f.ReadAt(m[:], 0); err == nil && binary.BigEndian.Uint32(m[:]) == magic {
			b, err := openDepth(f, path, size, open, depth+1)
			if err != nil {
				return err
			}
			im.backing = b
			return nil
		}
		f.Close()
		if format == "qcow2" {
			return fmt.Errorf("qcow2 %s: backing file %s is not qcow2: %w", im.path, path, ErrCorrupt)
		}
		return fmt.Errorf("qcow2 %s: backing file %s is not qcow2 and the image does not declare it raw: if it is a raw image, record that with qemu-img rebase -u -F raw -b NAME: %w",
			im.path, path, ErrBackingFormat)
	default:
		f.Close()
		return fmt.Errorf("qcow2 %s: backing format %q: %w", im.path, format, ErrUnsupported)
	}
}

// Size is the virtual disk size in bytes.
func (im *Image) Size() uint64 { return im.size }

// Close closes the image and its backing chain.
func (im *Image) Close() error {
	err := im.f.Close()
	if im.backing != nil {
		err = errors.Join(err, im.backing.Close())
	}
	return err
}

// ReadAt fills bufs from the virtual disk at byte off. The range must lie
// within Size.
func (im *Image) ReadAt(bufs [][]byte, off uint64) error {
	total := uint64(0)
	for _, b := range bufs {
		total += uint64(len(b))
	}
	if off > im.size || total > im.size-off {
		return fmt.Errorf("qcow2 %s: read [%#x, +%#x) beyond the %d-byte disk", im.path, off, total, im.size)
	}
	clusterSize := uint64(1) << im.clusterBits
	for total > 0 {
		n := min(total, clusterSize-off&(clusterSize-1))
		var piece [][]byte
		piece, bufs = cut(bufs, n)
		if err := im.readCluster(piece, off); err != nil {
			return err
		}
		off += n
		total -= n
	}
	return nil
}

// readCluster serves a read that lies inside one cluster.
func (im *Image) readCluster(bufs [][]byte, off uint64) error {
	entry, err := im.l2Entry(off)
	if err != nil {
		return err
	}
	within := off & (uint64(1)<<im.clusterBits - 1)
	switch {
	case entry&l2Compressed != 0:
		data, err := im.compressedCluster(entry)
		if err != nil {
			return err
		}
		for _, b := range bufs {
			within += uint64(copy(b, data[within:]))
		}
		return nil
	case entry&l2ZeroFlag != 0:
		zero(bufs)
		return nil
	case entry&l2OffsetMask == 0:
		return im.readUnallocated(bufs, off)
	}
	host := entry&l2OffsetMask + within
	n := uint64(0)
	for _, b := range bufs {
		n += uint64(len(b))
	}
	if err := im.checkRange(host, n, "data cluster"); err != nil {
		return err
	}
	for _, b := range bufs {
		if _, err := im.f.ReadAt(b, int64(host)); err != nil {
			return fmt.Errorf("qcow2 %s: read cluster data at %#x: %w", im.path, host, err)
		}
		host += uint64(len(b))
	}
	return nil
}

// readUnallocated reads from the backing file, which may be smaller than
// this image (the rest reads as zeros).
func (im *Image) readUnallocated(bufs [][]byte, off uint64) error {
	if im.backing == nil {
		zero(bufs)
		return nil
	}
	size := im.backing.Size()
	for _, b := range bufs {
		in := uint64(0)
		if off < size {
			in = min(uint64(len(b)), size-off)
		}
		if in > 0 {
			if err := im.backing.ReadAt([][]byte{b[:in]}, off); err != nil {
				return err
			}
		}
		clear(b[in:])
		off += uint64(len(b))
	}
	return nil
}

// l2Entry finds the L2 entry for the cluster holding off.
func (im *Image) l2Entry(off uint64) (uint64, error) {
	l2Bits := im.clusterBits - 3
	cluster := off >> im.clusterBits
	l1Index := cluster >> l2Bits
	l2Index := cluster & (1<<l2Bits - 1)
	if l1Index >= uint64(len(im.l1)) {
		return 0, fmt.Errorf("qcow2 %s: offset %#x beyond the L1 table: %w", im.path, off, ErrCorrupt)
	}
	l1 := im.l1[l1Index]
	tableOff := l1 & l1OffsetMask
	if tableOff == 0 {
		return 0, nil // unallocated
	}
	table, err := im.l2Table(tableOff)
	if err != nil {
		return 0, err
	}
	return table[l2Index], nil
}

func (im *Image) l2Table(off uint64) ([]uint64, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if t, ok := im.l2Cache[off]; ok {
		return t, nil
	}
	clusterSize := uint64(1) << im.clusterBits
	if off&(clusterSize-1) != 0 {
		return nil, fmt.Errorf("qcow2 %s: L2 table at %#x not cluster aligned: %w", im.path, off, ErrCorrupt)
	}
	if err := im.checkRange(off, clusterSize, "L2 table"); err != nil {
		return nil, err
	}
	raw := make([]byte, clusterSize)
	if _, err := im.f.ReadAt(raw, int64(off)); err != nil {
		return nil, fmt.Errorf("qcow2 %s: read L2 table at %#x: %w", im.path, off, err)
	}
	t := make([]uint64, clusterSize/8)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	if len(im.l2Cache) >= maxCachedL2 {
		clear(im.l2Cache) // crude, but bounded; a working set this large is rare
	}
	im.l2Cache[off] = t
	return t, nil
}

// compressedCluster returns the decompressed contents of the cluster that
// entry describes. Its layout: the low x bits are the host byte offset,
// the next bits the number of additional 512-byte sectors the compressed
// data spans, with x = 62 - (cluster_bits - 8).
func (im *Image) compressedCluster(entry uint64) ([]byte, error) {
	x := 62 - (im.clusterBits - 8)
	host := entry & (uint64(1)<<x - 1)
	sectors := (entry>>x)&(uint64(1)<<(im.clusterBits-8)-1) + 1
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.zData != nil && im.zOff == host {
		return im.zData, nil
	}
	n := sectors*512 - host&511
	// The last compressed cluster may end before its last sector does.
	if host > im.fileSize {
		return nil, fmt.Errorf("qcow2 %s: compressed cluster at %#x outside the file: %w", im.path, host, ErrCorrupt)
	}
	n = min(n, im.fileSize-host)
	raw := make([]byte, n)
	if _, err := im.f.ReadAt(raw, int64(host)); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2 %s: read compressed cluster at %#x: %w", im.path, host, err)
	}
	clusterSize := int64(1) << im.clusterBits
	out := make([]byte, clusterSize)
	// QEMU writes raw deflate (no zlib header); trailing bytes of the last
	// sector are ignored.
	zr := flate.NewReader(bytes.NewReader(raw))
	defer zr.Close()
	got, err := io.ReadFull(zr, out)
	if err != nil && !(errors.Is(err, io.ErrUnexpectedEOF) && got > 0) {
		return nil, fmt.Errorf("qcow2 %s: inflate cluster at %#x: %w: %w", im.path, host, ErrCorrupt, err)
	}
	clear(out[got:])
	im.zOff, im.zData = host, out
	return out, nil
}

// cut splits bufs after n bytes, reslicing without copying data.
func cut(bufs [][]byte, n uint64) (head, tail [][]byte) {
	for i, b := range bufs {
		if n == 0 {
			return head, bufs[i:]
		}
		if uint64(len(b)) > n {
			head = append(head, b[:n])
			return head, append([][]byte{b[n:]}, bufs[i+1:]...)
		}
		head = append(head, b)
		n -= uint64(len(b))
	}
	return head, nil
}

func zero(bufs [][]byte) {
	for _, b := range bufs {
		clear(b)
	}
}

// rawBacking is a raw backing file.
type rawBacking struct {
	f    File
	size uint64
}

func (r *rawBacking) Size() uint64 { return r.size }

func (r *rawBacking) ReadAt(bufs [][]byte, off uint64) error {
	for _, b := range bufs {
		if _, err := r.f.ReadAt(b, int64(off)); err != nil {
			return fmt.Errorf("read backing file at %#x: %w", off, err)
		}
		off += uint64(len(b))
	}
	return nil
}

func (r *rawBacking) Close() error { return r.f.Close() }
