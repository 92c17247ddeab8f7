package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qemu runs a qemu-img or qemu-io command (Debian package qemu-utils).
func qemu(t *testing.T, tool string, args ...string) {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not found (apt-get install qemu-utils): cannot build qcow2 test images", tool)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", tool, args, out)
}

func osOpener(p string) (File, uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, uint64(st.Size()), nil
}

func openImage(t *testing.T, path string) *Image {
	t.Helper()
	f, size, err := osOpener(path)
	require.NoError(t, err)
	im, err := Open(f, path, size, osOpener)
	require.NoError(t, err)
	t.Cleanup(func() { im.Close() })
	return im
}

const diskSize = 4 << 20

// reference is a raw disk with data, compressible runs and holes, so every
// kind of cluster shows up in the converted images.
func reference(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	data := make([]byte, diskSize)
	for i := range data {
		switch {
		case i < 300<<10: // incompressible-ish
			data[i] = byte(i*131 + i>>8*17 + i>>16)
		case i < 1<<20: // hole
		case i < 2<<20: // compressible
			data[i] = byte(i >> 12)
		case i >= diskSize-4096: // the last cluster
			data[i] = 0x5a
		}
	}
	path := filepath.Join(dir, "ref.raw")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path, data
}

// readAll reads the whole disk in requests of awkward sizes split over
// awkward segments, as a guest's scatter-gather lists are.
func readAll(t *testing.T, im *Image) []byte {
	t.Helper()
	out := make([]byte, im.Size())
	step := uint64(96 << 10) // crosses cluster boundaries
	for off := uint64(0); off < im.Size(); off += step {
		n := min(step, im.Size()-off)
		buf := out[off : off+n]
		segs := [][]byte{buf[:512], buf[512 : n/2], buf[n/2:]}
		require.NoError(t, im.ReadAt(segs, off), "read at %#x", off)
	}
	return out
}

func TestReadConvertedImages(t *testing.T) {
	dir := t.TempDir()
	raw, want := reference(t, dir)
	tests := []struct {
		name string
		args []string
	}{
		{"v3", nil},
		{"v2", []string{"-o", "compat=0.10"}},
		{"v3 compressed", []string{"-c"}},
		{"v2 compressed", []string{"-c", "-o", "compat=0.10"}},
		{"512-byte clusters", []string{"-o", "cluster_size=512"}},
		{"512-byte clusters compressed", []string{"-c", "-o", "cluster_size=512"}},
		{"2 MiB clusters", []string{"-o", "cluster_size=2M"}},
		{"2 MiB clusters compressed", []string{"-c", "-o", "cluster_size=2M"}},
		{"4 KiB clusters", []string{"-o", "cluster_size=4096"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(dir, fmt.Sprintf("img%d.qcow2", i))
			args := append([]string{"convert", "-f", "raw", "-O", "qcow2"}, tt.args...)
			qemu(t, "qemu-img", append(args, raw, img)...)
			im := openImage(t, img)
			require.Equal(t, uint64(diskSize), im.Size())
			assert.True(t, bytes.Equal(want, readAll(t, im)), "contents match the raw disk")
			if slices.Contains(tt.args, "-c") {
				assert.Positive(t, countCompressed(t, im), "compressed clusters exercised")
			}
		})
	}
}

func countCompressed(t *testing.T, im *Image) int {
	n := 0
	for off := uint64(0); off < im.Size(); off += 1 << im.clusterBits {
		e, err := im.l2Entry(off)
		require.NoError(t, err)
		if e&l2Compressed != 0 {
			n++
		}
	}
	return n
}

func TestBackingChainAndZeroClusters(t *testing.T) {
	dir := t.TempDir()
	raw, want := reference(t, dir)
	// base.raw (4 MiB) ← mid.qcow2 (writes at 1 MiB) ← top.qcow2 (8 MiB,
	// a zero cluster over base data, a write at 3 MiB).
	qemu(t, "qemu-img", "create", "-f", "qcow2", "-b", "ref.raw", "-F", "raw", filepath.Join(dir, "mid.qcow2"))
	qemu(t, "qemu-io", "-c", "write -P 0xab 1M 64k", filepath.Join(dir, "mid.qcow2"))
	copy(want[1<<20:], bytes.Repeat([]byte{0xab}, 64<<10))
	top := filepath.Join(dir, "top.qcow2")
	qemu(t, "qemu-img", "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, "8M")
	qemu(t, "qemu-io", "-c", "write -z 0 64k", "-c", "write -P 0xcd 3M 4k", top)
	clear(want[:64<<10])
	copy(want[3<<20:], bytes.Repeat([]byte{0xcd}, 4096))
	want = append(want, make([]byte, 4<<20)...) // past the backing file: zeros

	im := openImage(t, top)
	require.Equal(t, uint64(8<<20), im.Size())
	assert.True(t, bytes.Equal(want, readAll(t, im)))
	_ = raw
}

func TestBackingWithoutFormatIsProbed(t *testing.T) {
	dir := t.TempDir()
	_, want := reference(t, dir)
	qemu(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "ref.raw"), filepath.Join(dir, "base.qcow2"))
	top := filepath.Join(dir, "top.qcow2")
	qemu(t, "qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	// Strip the backing-format extension by rewriting its type to an
	// unknown one, which readers must skip.
	b, err := os.ReadFile(top)
	require.NoError(t, err)
	i := bytes.Index(b, []byte{0xe2, 0x79, 0x2a, 0xca})
	require.Positive(t, i)
	copy(b[i:], []byte{0x12, 0x34, 0x56, 0x78})
	require.NoError(t, os.WriteFile(top, b, 0o644))
	assert.True(t, bytes.Equal(want, readAll(t, openImage(t, top))))
}

// header builds a minimal version-3 image: 64 KiB clusters, an L1 table of
// one entry at cluster 1, no L2 tables.
func header(mutate func(h []byte)) []byte {
	img := make([]byte, 3<<16)
	be := binary.BigEndian
	be.PutUint32(img[0:], magic)
	be.PutUint32(img[4:], 3)
	be.PutUint32(img[offClusterBits:], 16)
	be.PutUint64(img[offSize:], 1<<20)
	be.PutUint32(img[offL1Size:], 1)
	be.PutUint64(img[offL1Offset:], 1<<16)
	be.PutUint32(img[offRefcountOrd:], 4)
	be.PutUint32(img[offHeaderLen:], 112)
	if mutate != nil {
		mutate(img)
	}
	return img
}

type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }

func openBytes(img []byte, open Opener) (*Image, error) {
	return Open(memFile{bytes.NewReader(img)}, "/images/test.qcow2", uint64(len(img)), open)
}

func TestMinimalImageReadsZeros(t *testing.T) {
	im, err := openBytes(header(nil), nil)
	require.NoError(t, err)
	buf := bytes.Repeat([]byte{1}, 4096)
	require.NoError(t, im.ReadAt([][]byte{buf}, 1<<20-4096))
	assert.Equal(t, make([]byte, 4096), buf)
	require.Error(t, im.ReadAt([][]byte{buf}, 1<<20-512), "past the end")
	require.Error(t, im.ReadAt([][]byte{buf}, ^uint64(0)-10))
}

func TestBadImages(t *testing.T) {
	be := binary.BigEndian
	l2 := func(entry uint64) func(h []byte) {
		return func(h []byte) {
			be.PutUint64(h[1<<16:], 2<<16) // L1[0] → L2 at cluster 2
			be.PutUint64(h[2<<16:], entry) // L2[0]
		}
	}
	tests := []struct {
		name    string
		img     []byte
		wantErr error
		onRead  bool // the error shows on reading cluster 0, not on Open
	}{
		{"empty file", nil, ErrNotQcow2, false},
		{"bad magic", header(func(h []byte) { h[0] = 'X' }), ErrNotQcow2, false},
		{"version 1", header(func(h []byte) { be.PutUint32(h[4:], 1) }), ErrUnsupported, false},
		{"version 4", header(func(h []byte) { be.PutUint32(h[4:], 4) }), ErrUnsupported, false},
		{"encrypted", header(func(h []byte) { be.PutUint32(h[offCryptMethod:], 1) }), ErrUnsupported, false},
		{"cluster bits 8", header(func(h []byte) { be.PutUint32(h[offClusterBits:], 8) }), ErrCorrupt, false},
		{"cluster bits 31", header(func(h []byte) { be.PutUint32(h[offClusterBits:], 31) }), ErrCorrupt, false},
		{"huge size", header(func(h []byte) { be.PutUint64(h[offSize:], 1<<62) }), ErrUnsupported, false},
		{"size not in sectors", header(func(h []byte) { be.PutUint64(h[offSize:], 1000) }), ErrUnsupported, false},
		{"L1 too small for the size", header(func(h []byte) { be.PutUint64(h[offSize:], 1<<30) }), ErrCorrupt, false},
		{"L1 table outside the file", header(func(h []byte) { be.PutUint64(h[offL1Offset:], 1<<40) }), ErrCorrupt, false},
		{"L1 table overflowing", header(func(h []byte) { be.PutUint64(h[offL1Offset:], ^uint64(0)-3) }), ErrCorrupt, false},
		{"L1 table too large", header(func(h []byte) { be.PutUint32(h[offL1Size:], 1<<30) }), ErrUnsupported, false},
		{"marked corrupt", header(func(h []byte) { be.PutUint64(h[offIncompatible:], incompatCorrupt) }), ErrCorrupt, false},
		{"external data file", header(func(h []byte) { be.PutUint64(h[offIncompatible:], incompatDataFile) }), ErrUnsupported, false},
		{"extended L2", header(func(h []byte) { be.PutUint64(h[offIncompatible:], incompatExtendedL2) }), ErrUnsupported, false},
		{"zstd", header(func(h []byte) {
			be.PutUint64(h[offIncompatible:], incompatCompression)
			h[offCompression] = 1
		}), ErrUnsupported, false},
		{"unknown incompatible bit", header(func(h []byte) { be.PutUint64(h[offIncompatible:], 1<<40) }), ErrUnsupported, false},
		{"header length too short", header(func(h []byte) { be.PutUint32(h[offHeaderLen:], 50) }), ErrCorrupt, false},
		{"header length past the cluster", header(func(h []byte) { be.PutUint32(h[offHeaderLen:], 1<<20) }), ErrCorrupt, false},
		{"refcount order 7", header(func(h []byte) { be.PutUint32(h[offRefcountOrd:], 7) }), ErrCorrupt, false},
		{"header extension overflowing", header(func(h []byte) {
			be.PutUint32(h[112:], 0x1234)
			be.PutUint32(h[116:], 0xffffffff)
		}), ErrCorrupt, false},
		{"backing name outside the header", header(func(h []byte) {
			be.PutUint64(h[offBackingOff:], 1<<20)
			be.PutUint32(h[offBackingLen:], 4)
		}), ErrCorrupt, false},
		{"backing name too long", header(func(h []byte) {
			be.PutUint64(h[offBackingOff:], 512)
			be.PutUint32(h[offBackingLen:], 4096)
		}), ErrCorrupt, false},
		{"backing file but no opener", header(func(h []byte) {
			be.PutUint64(h[offBackingOff:], 512)
			be.PutUint32(h[offBackingLen:], 4)
			copy(h[512:], "base")
		}), ErrUnsupported, false},
		{"L2 table outside the file", header(func(h []byte) { be.PutUint64(h[1<<16:], 1<<40) }), ErrCorrupt, true},
		{"L2 table misaligned", header(func(h []byte) { be.PutUint64(h[1<<16:], 2<<16+512) }), ErrCorrupt, true},
		{"data cluster outside the file", header(l2(1 << 40)), ErrCorrupt, true},
		{"compressed cluster outside the file", header(l2(l2Compressed | 1<<40)), ErrCorrupt, true},
		{"compressed cluster of garbage", header(l2(l2Compressed | 2<<16 + 8)), ErrCorrupt, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, err := openBytes(tt.img, nil)
			if !tt.onRead {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, im)
				return
			}
			require.NoError(t, err)
			err = im.ReadAt([][]byte{make([]byte, 4096)}, 0)
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestBackingLoop(t *testing.T) {
	be := binary.BigEndian
	img := header(func(h []byte) {
		be.PutUint64(h[offBackingOff:], 512)
		be.PutUint32(h[offBackingLen:], 9)
		copy(h[512:], "test.qcow")
	})
	opens := 0
	open := func(p string) (File, uint64, error) {
		opens++
		assert.Equal(t, "/images/test.qcow", p, "relative names resolve against the image's directory")
		return memFile{bytes.NewReader(img)}, uint64(len(img)), nil
	}
	_, err := openBytes(img, open)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "deeper than")
	assert.Equal(t, maxBackingDepth-1, opens)
}

// FuzzImage opens fuzzer-made headers and reads: errors are fine, panics
// and unbounded allocations are not.
func FuzzImage(f *testing.F) {
	f.Add(header(nil)[:4096], uint64(0))
	f.Add(header(func(h []byte) {
		binary.BigEndian.PutUint64(h[1<<16:], 2<<16)
		binary.BigEndian.PutUint64(h[2<<16:], l2Compressed|2<<16)
	})[:4096], uint64(4096))
	f.Add(header(func(h []byte) { binary.BigEndian.PutUint32(h[4:], 2) })[:200], uint64(512))
	f.Fuzz(func(t *testing.T, head []byte, off uint64) {
		img := header(nil)
		copy(img, head)
		im, err := openBytes(img, func(string) (File, uint64, error) {
			return memFile{bytes.NewReader(img)}, uint64(len(img)), nil
		})
		if err != nil {
			return
		}
		defer im.Close()
		if im.Size() > 0 {
			off %= im.Size()
			off &^= 511
			_ = im.ReadAt([][]byte{make([]byte, min(64<<10, im.Size()-off))}, off)
		}
	})
}
