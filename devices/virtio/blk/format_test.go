package blk

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecideFormat(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		declared string
		magic    bool
		want     string
		err      error
		errHas   string
	}{
		{"raw name, raw contents", "d.img", "", false, FormatRaw, nil, ""},
		{"qcow2 name, qcow2 contents", "d.qcow2", "", true, FormatQcow2, nil, ""},
		{"suffix in any case", "D.QCOW2", "", true, FormatQcow2, nil, ""},
		{"raw name, qcow2 header: refused", "d.img", "", true, "", ErrFormatMismatch, "starts with a qcow2 header but is used as raw"},
		{"qcow2 name, raw contents: refused", "d.qcow2", "", false, "", ErrFormatMismatch, "its name ends in .qcow2"},
		{"declared raw over a qcow2 header: raw", "d.img", FormatRaw, true, FormatRaw, nil, ""},
		{"declared raw on a .qcow2 name: raw", "d.qcow2", FormatRaw, true, FormatRaw, nil, ""},
		{"declared qcow2 with the magic", "d.img", FormatQcow2, true, FormatQcow2, nil, ""},
		{"declared qcow2 without the magic: refused", "d.img", FormatQcow2, false, "", ErrFormatMismatch, "format=qcow2 was given"},
		{"unknown format", "d.img", "vmdk", false, "", ErrFormat, `format "vmdk"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideFormat(tt.path, tt.declared, tt.magic)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				assert.Contains(t, err.Error(), tt.errHas)
				assert.Contains(t, err.Error(), tt.path, "the message names the file")
				assert.NotContains(t, err.Error(), "\n", "one line")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// hostileHeader is what a guest writes into its raw disk to make the host
// read backing: a valid qcow2 v3 header (64 KiB clusters, an empty L1
// table at 64 KiB, which the sparse disk reads as zeros) that names
// backing and declares it raw, so nothing but the format rule and the
// backing-file policy stands in the way.
func hostileHeader(backing string, size uint64) []byte {
	h := make([]byte, 4096)
	be := binary.BigEndian
	be.PutUint32(h[0:], 0x514649fb)
	be.PutUint32(h[4:], 3)
	be.PutUint64(h[8:], 1024) // backing_file_offset
	be.PutUint32(h[16:], uint32(len(backing)))
	be.PutUint32(h[20:], 16) // cluster_bits
	be.PutUint64(h[24:], size)
	be.PutUint32(h[36:], uint32((size+(512<<20)-1)/(512<<20))) // l1_size
	be.PutUint64(h[40:], 1<<16)                                // l1_table_offset
	be.PutUint64(h[48:], 2<<16)                                // refcount_table_offset
	be.PutUint32(h[56:], 1)
	be.PutUint32(h[96:], 4)    // refcount_order
	be.PutUint32(h[100:], 104) // header_length
	be.PutUint32(h[104:], 0xe2792aca)
	be.PutUint32(h[108:], 3)
	copy(h[112:], "raw")
	copy(h[1024:], backing)
	return h
}

// A guest wrote a qcow2 header into its raw disk: opened by name the disk
// is refused, declared raw it reads back the guest's own bytes, declared
// qcow2 the backing file is still not opened.
func TestGuestWrittenHeaderNeverReadsHostFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("host-secret ", 1000)), 0o600))
	disk := filepath.Join(dir, "d.img")
	hdr := hostileHeader(secret, 4<<20)
	require.NoError(t, os.WriteFile(disk, hdr, 0o644))
	require.NoError(t, os.Truncate(disk, 4<<20))

	_, err := Open(Options{Path: disk, OverlayDir: dir})
	require.ErrorIs(t, err, ErrFormatMismatch)

	d, err := Open(Options{Path: disk, Format: FormatRaw})
	require.NoError(t, err)
	assert.Equal(t, hdr[:SectorSize], readDisk(t, d, 0, SectorSize), "raw: the guest's own bytes")
	require.NoError(t, d.Close())

	_, err = Open(Options{Path: disk, Format: FormatQcow2, OverlayDir: dir})
	require.ErrorIs(t, err, ErrBackingOff)

	outside := filepath.Join(t.TempDir(), "d.img")
	require.NoError(t, os.WriteFile(outside, hdr, 0o644))
	require.NoError(t, os.Truncate(outside, 4<<20))
	_, err = Open(Options{Path: outside, Format: FormatQcow2, Backing: true, OverlayDir: dir})
	require.ErrorIs(t, err, ErrBackingOutside, "an absolute name outside the image's directory")
}

func TestResolveFormat(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.img")
	require.NoError(t, os.WriteFile(raw, make([]byte, 4096), 0o644))
	got, err := ResolveFormat(raw, "")
	require.NoError(t, err)
	assert.Equal(t, FormatRaw, got)

	fifo := filepath.Join(dir, "fifo.img")
	require.NoError(t, mkfifo(fifo))
	_, err = ResolveFormat(fifo, "")
	require.ErrorIs(t, err, ErrNotImage, "a FIFO is refused, not waited on")
}
