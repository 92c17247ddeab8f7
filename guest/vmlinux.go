package guest

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// ErrUnsupportedCompression: the bzImage payload uses a compression this
// package cannot undo (xz with the x86 BCJ filter, LZO).
var ErrUnsupportedCompression = errors.New("unsupported kernel payload compression")

// maxVmlinux bounds decompression so a corrupt or hostile image cannot make
// us allocate without limit. Real x86-64 vmlinux files are well below it.
const maxVmlinux = 512 << 20

// Offsets in the x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1f1
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206
	hdrPayloadOffset = 0x248
	hdrPayloadLength = 0x24c
	hdrEnd           = 0x250
	minPayloadProto  = 0x208 // payload fields exist since boot protocol 2.08
)

// ExtractVmlinux returns the uncompressed ELF vmlinux inside a bzImage. The
// compressed payload is located through the setup header's payload_offset
// and payload_length (relative to the protected-mode code, which starts
// after the 512-byte boot sector and setup_sects sectors of setup code).
func ExtractVmlinux(image []byte) ([]byte, error) {
	if len(image) < hdrEnd {
		return nil, fmt.Errorf("bzImage: %d bytes is too short for a setup header", len(image))
	}
	if string(image[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("bzImage: no HdrS magic at %#x", hdrMagic)
	}
	if v := binary.LittleEndian.Uint16(image[hdrVersion:]); v < minPayloadProto {
		return nil, fmt.Errorf("bzImage: boot protocol %#x predates payload fields (need %#x)", v, minPayloadProto)
	}
	setupSects := int(image[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4 // boot.rst: 0 means 4
	}
	pm := uint64(setupSects+1) * 512
	off := uint64(binary.LittleEndian.Uint32(image[hdrPayloadOffset:]))
	n := uint64(binary.LittleEndian.Uint32(image[hdrPayloadLength:]))
	start, end := pm+off, pm+off+n
	if n == 0 || end > uint64(len(image)) {
		return nil, fmt.Errorf("bzImage: payload [%#x, %#x) outside the %d-byte image", start, end, len(image))
	}
	elfImage, err := decompressPayload(image[start:end])
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(elfImage))
	if err != nil {
		return nil, fmt.Errorf("bzImage: decompressed payload is not ELF: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("bzImage: payload is %v %v, want ELFCLASS64 EM_X86_64", f.Class, f.Machine)
	}
	return elfImage, nil
}

// Magic numbers of the compressors Linux's arch/x86/boot/compressed supports.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicLz4   = []byte{0x02, 0x21, 0x4c, 0x18} // legacy frame, as `lz4 -l` writes
	magicLzma  = []byte{0x5d, 0x00, 0x00}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	magicLzo   = []byte{0x89, 'L', 'Z', 'O'}
	magicELF   = []byte{0x7f, 'E', 'L', 'F'}
)

// decompressPayload undoes the kernel's payload compression. Every format
// but gzip is followed by a little-endian 32-bit uncompressed size (the
// kernel Makefile's size_append), which we strip and check.
func decompressPayload(p []byte) ([]byte, error) {
	if bytes.HasPrefix(p, magicGzip) {
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("bzImage: gzip payload: %w", err)
		}
		zr.Multistream(false)
		return readBounded("gzip", zr)
	}
	if bytes.HasPrefix(p, magicELF) {
		return p, nil
	}
	if len(p) < 8 {
		return nil, fmt.Errorf("bzImage: payload of %d bytes is too short", len(p))
	}
	body, want := p[:len(p)-4], binary.LittleEndian.Uint32(p[len(p)-4:])
	var (
		name string
		r    io.Reader
	)
	switch {
	case bytes.HasPrefix(p, magicZstd):
		d, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinux))
		if err != nil {
			return nil, fmt.Errorf("bzImage: zstd payload: %w", err)
		}
		defer d.Close()
		name, r = "zstd", d
	case bytes.HasPrefix(p, magicLz4):
		name, r = "lz4", lz4.NewReader(bytes.NewReader(body))
	case bytes.HasPrefix(p, magicXz):
		xr, err := xz.NewReader(bytes.NewReader(body))
		if err != nil {
			// The kernel's xz_wrap.sh adds the x86 BCJ filter, which the
			// xz library does not implement.
			return nil, fmt.Errorf("bzImage: xz payload: %w: %w", ErrUnsupportedCompression, err)
		}
		name, r = "xz", xr
	case bytes.HasPrefix(p, magicLzma):
		lr, err := lzma.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("bzImage: lzma payload: %w", err)
		}
		name, r = "lzma", lr
	case bytes.HasPrefix(p, magicBzip2):
		name, r = "bzip2", bzip2.NewReader(bytes.NewReader(body))
	case bytes.HasPrefix(p, magicLzo):
		return nil, fmt.Errorf("bzImage: lzo payload: %w", ErrUnsupportedCompression)
	default:
		return nil, fmt.Errorf("bzImage: payload starts with % x: %w", p[:4], ErrUnsupportedCompression)
	}
	out, err := readBounded(name, r)
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) != uint64(want) {
		return nil, fmt.Errorf("bzImage: %s payload decompressed to %d bytes, trailer says %d", name, len(out), want)
	}
	return out, nil
}

func readBounded(name string, r io.Reader) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return nil, fmt.Errorf("bzImage: %s payload: %w", name, err)
	}
	if len(out) > maxVmlinux {
		return nil, fmt.Errorf("bzImage: %s payload exceeds %d bytes", name, maxVmlinux)
	}
	return out, nil
}
