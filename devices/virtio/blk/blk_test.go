package blk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/virtiotest"
)

const testDiskSize = 4 << 20

// newImage makes a sparse image file of size bytes.
func newImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return path
}

func openDisk(t *testing.T, o Options) *Device {
	t.Helper()
	d, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// request builds a chain the way Linux does: header, data, and the status
// byte in descriptors of their own; readable data for OUT-like requests,
// dataIn writable bytes for IN-like ones.
func request(typ uint32, sector uint64, data []byte, dataIn int) *virtio.Chain {
	hdr := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(hdr, typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	c := &virtio.Chain{Readable: [][]byte{hdr}}
	if len(data) > 0 {
		c.Readable = append(c.Readable, data)
	}
	if dataIn > 0 {
		c.Writable = append(c.Writable, make([]byte, dataIn))
	}
	c.Writable = append(c.Writable, []byte{0xff})
	return c
}

func status(c *virtio.Chain) byte {
	last := c.Writable[len(c.Writable)-1]
	return last[len(last)-1]
}

func zeroSegs(segs ...zeroSeg) []byte {
	var out []byte
	for _, s := range segs {
		var b [zeroSegSize]byte
		binary.LittleEndian.PutUint64(b[0:], s.off) // sector, in these tests
		binary.LittleEndian.PutUint32(b[8:], uint32(s.n))
		if s.unmap {
			binary.LittleEndian.PutUint32(b[12:], flagUnmap)
		}
		out = append(out, b[:]...)
	}
	return out
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func fileBytes(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	return b
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.img")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	tiny := filepath.Join(dir, "tiny.img")
	require.NoError(t, os.WriteFile(tiny, make([]byte, 511), 0o644))
	tests := []struct {
		name    string
		opts    Options
		wantIs  error
		wantMsg string
	}{
		{"missing file", Options{Path: filepath.Join(dir, "nope.img")}, fs.ErrNotExist, "nope.img"},
		{"missing file read-only", Options{Path: filepath.Join(dir, "nope.img"), ReadOnly: true}, fs.ErrNotExist, "nope.img"},
		{"directory", Options{Path: dir}, ErrNotImage, "is a directory"},
		{"directory read-only", Options{Path: dir, ReadOnly: true}, ErrNotImage, "is a directory"},
		{"character device", Options{Path: "/dev/null", ReadOnly: true}, ErrNotImage, "not a regular file"},
		{"empty file", Options{Path: empty}, ErrNotImage, "smaller than one"},
		{"less than a sector", Options{Path: tiny}, ErrNotImage, "511 bytes"},
		{"empty path", Options{}, ErrNotImage, "empty path"},
		{"serial too long", Options{Path: tiny, Serial: "123456789012345678901"}, nil, "longer than 20"},
		{"too many queues", Options{Path: tiny, Queues: MaxQueues + 1}, nil, "queues"},
		{"negative queues", Options{Path: tiny, Queues: -1}, nil, "queues"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(tt.opts)
			require.Error(t, err)
			assert.Nil(t, d)
			if tt.wantIs != nil {
				assert.ErrorIs(t, err, tt.wantIs)
			}
			assert.ErrorContains(t, err, tt.wantMsg)
		})
	}
}

func TestConfigSpace(t *testing.T) {
	path := newImage(t, testDiskSize+100) // the partial sector is not exposed
	d := openDisk(t, Options{Path: path, Queues: 2, Serial: "wisp-1"})
	assert.Equal(t, uint64(testDiskSize/SectorSize), d.Capacity())
	assert.Equal(t, virtio.TypeBlock, d.Type())
	assert.Equal(t, []uint16{QueueSize, QueueSize}, d.QueueSizes())

	cfg := make([]byte, configSize)
	require.NoError(t, d.ReadConfig(0, cfg))
	assert.Equal(t, uint64(testDiskSize/SectorSize), binary.LittleEndian.Uint64(cfg[cfgCapacity:]))
	assert.Equal(t, uint32(SectorSize), binary.LittleEndian.Uint32(cfg[cfgBlkSize:]))
	assert.Equal(t, uint32(segMax), binary.LittleEndian.Uint32(cfg[cfgSegMax:]))
	assert.Equal(t, uint32(sizeMax), binary.LittleEndian.Uint32(cfg[cfgSizeMax:]))
	assert.Equal(t, uint16(2), binary.LittleEndian.Uint16(cfg[cfgNumQueues:]))
	assert.Equal(t, uint32(maxZeroSectors), binary.LittleEndian.Uint32(cfg[cfgMaxDiscardSectors:]))
	assert.Equal(t, uint32(maxZeroSegs), binary.LittleEndian.Uint32(cfg[cfgMaxZeroesSeg:]))
	assert.Equal(t, byte(1), cfg[cfgZeroesMayUnmap])

	// Partial reads, as a transport does them field by field.
	capLow := make([]byte, 4)
	require.NoError(t, d.ReadConfig(cfgCapacity, capLow))
	assert.Equal(t, uint32(testDiskSize/SectorSize), binary.LittleEndian.Uint32(capLow))
	require.NoError(t, d.ReadConfig(configSize, nil))

	for _, tc := range []struct {
		off uint64
		n   int
	}{{configSize, 1}, {configSize - 1, 2}, {^uint64(0), 1}, {0, configSize + 1}} {
		require.ErrorIs(t, d.ReadConfig(tc.off, make([]byte, tc.n)), virtio.ErrBadConfig, "read [%#x, +%d)", tc.off, tc.n)
	}
	require.ErrorIs(t, d.WriteConfig(32, []byte{1}), virtio.ErrBadConfig)

	f := d.Features()
	for _, bit := range []uint64{virtio.FeatureVersion1, virtio.FeatureRingIndirectDesc, virtio.FeatureRingEventIdx,
		FeatureBlkSize, FeatureFlush, FeatureDiscard, FeatureWriteZeroes, FeatureSegMax, FeatureSizeMax, FeatureMQ} {
		assert.NotZero(t, f&bit, "feature %#x", bit)
	}
	assert.Zero(t, f&FeatureRO)
}

func TestReadWrite(t *testing.T) {
	path := newImage(t, testDiskSize)
	d := openDisk(t, Options{Path: path})

	// OUT with data split over three descriptors of odd sizes.
	data := pattern(3*SectorSize, 1)
	c := request(typeOut, 5, nil, 0)
	c.Readable = append(c.Readable, data[:100], data[100:1000], data[1000:])
	n, err := d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, byte(statusOK), status(c))
	assert.Equal(t, uint32(1), n)
	assert.Equal(t, data, fileBytes(t, path, 5*SectorSize, int64(len(data))))

	// IN into three descriptors, the last one sharing its final byte with
	// the status (the spec does not require a separate descriptor).
	a, b, last := make([]byte, 7), make([]byte, 1000), make([]byte, 3*SectorSize-1007+1)
	c = request(typeIn, 5, nil, 0)
	c.Writable = [][]byte{a, b, last}
	n, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, uint32(3*SectorSize+1), n)
	assert.Equal(t, byte(statusOK), last[len(last)-1])
	got := append(append(append([]byte(nil), a...), b...), last[:len(last)-1]...)
	assert.Equal(t, data, got)

	// The last sector of the disk.
	end := uint64(testDiskSize/SectorSize - 1)
	c = request(typeOut, end, pattern(SectorSize, 9), 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, byte(statusOK), status(c))
	c = request(typeIn, end, nil, SectorSize)
	_, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, pattern(SectorSize, 9), c.Writable[0])

	// FLUSH.
	c = request(typeFlush, 0, nil, 0)
	n, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, uint32(1), n)
	assert.Equal(t, byte(statusOK), status(c))
}

// More segments than one preadv/pwritev takes (UIO_MAXIOV = 1024).
func TestManySegments(t *testing.T) {
	path := newImage(t, testDiskSize)
	d := openDisk(t, Options{Path: path})
	const segs = 2*iovMax + 3
	data := pattern(segs*SectorSize, 3)
	c := request(typeOut, 1, nil, 0)
	for i := range segs {
		c.Readable = append(c.Readable, data[i*SectorSize:(i+1)*SectorSize])
	}
	_, err := d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	assert.Equal(t, data, fileBytes(t, path, SectorSize, int64(len(data))))

	c = request(typeIn, 1, nil, 0)
	c.Writable = nil
	for range segs {
		c.Writable = append(c.Writable, make([]byte, SectorSize))
	}
	c.Writable = append(c.Writable, []byte{0xff})
	_, err = d.handle(c)
	require.NoError(t, err)
	require.Equal(t, byte(statusOK), status(c))
	assert.Equal(t, data, bytes.Join(c.Writable[:segs], nil))
}

// allocatedBytes is the space the file really uses (st_blocks).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Blocks * 512
}

// holeAt reports whether off lies in a hole, by SEEK_HOLE.
func holeAt(t *testing.T, path string, off int64) bool {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h, err := unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE)
	require.NoError(t, err)
	return h == off
}

func TestDiscardAndWriteZeroes(t *testing.T) {
	const mib = 1 << 20
	const sectorsPerMiB = mib / SectorSize
	tests := []struct {
		name     string
		typ      uint32
		unmap    bool
		wantHole bool
	}{
		{"discard punches a hole", typeDiscard, false, true},
		{"write zeroes with unmap punches a hole", typeWriteZeroes, true, true},
		{"write zeroes without unmap", typeWriteZeroes, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := newImage(t, testDiskSize)
			d := openDisk(t, Options{Path: path})
			c := request(typeOut, sectorsPerMiB, pattern(2*mib, 5), 0)
			_, err := d.handle(c)
			require.NoError(t, err)
			require.NoError(t, d.backend.Flush())
			before := allocatedBytes(t, path)
			require.False(t, holeAt(t, path, mib))

			// Two segments: [1 MiB, +512 KiB) and [2 MiB, +256 KiB).
			segs := zeroSegs(
				zeroSeg{off: sectorsPerMiB, n: sectorsPerMiB / 2, unmap: tt.unmap},
				zeroSeg{off: 2 * sectorsPerMiB, n: sectorsPerMiB / 4, unmap: tt.unmap})
			c = request(tt.typ, 0, segs, 0)
			n, err := d.handle(c)
			require.NoError(t, err)
			assert.Equal(t, uint32(1), n)
			require.Equal(t, byte(statusOK), status(c))

			got := fileBytes(t, path, mib, 2*mib)
			want := pattern(2*mib, 5)
			clear(want[:mib/2])
			clear(want[mib : mib+mib/4])
			if tt.typ == typeWriteZeroes || tt.wantHole {
				assert.True(t, bytes.Equal(want, got), "zeroed ranges read as zeros, the rest is intact")
			}
			if tt.wantHole {
				assert.True(t, holeAt(t, path, mib), "hole at 1 MiB")
				assert.True(t, holeAt(t, path, 2*mib), "hole at 2 MiB")
				assert.Less(t, allocatedBytes(t, path), before)
			}
		})
	}
}

func TestGetID(t *testing.T) {
	path := newImage(t, testDiskSize)
	d := openDisk(t, Options{Path: path, Serial: "wisp-disk-0"})

	c := request(typeGetID, 0, nil, serialLen)
	n, err := d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, uint32(serialLen+1), n)
	assert.Equal(t, byte(statusOK), status(c))
	want := make([]byte, serialLen)
	copy(want, "wisp-disk-0")
	assert.Equal(t, want, c.Writable[0])

	// A shorter buffer gets what fits.
	c = request(typeGetID, 0, nil, 4)
	n, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, uint32(5), n)
	assert.Equal(t, []byte("wisp"), c.Writable[0])
}

// Every guest mistake becomes a status, never a panic or a disk change.
func TestBadRequests(t *testing.T) {
	const capacity = testDiskSize / SectorSize
	tests := []struct {
		name       string
		chain      func() *virtio.Chain
		readOnly   bool
		wantStatus byte
		wantErr    bool // handle reports an error (besides the status)
	}{
		{"IN past the end", func() *virtio.Chain { return request(typeIn, capacity, nil, SectorSize) }, false, statusIOErr, true},
		{"IN across the end", func() *virtio.Chain { return request(typeIn, capacity-1, nil, 2*SectorSize) }, false, statusIOErr, true},
		{"IN at a huge sector", func() *virtio.Chain { return request(typeIn, 1<<63, nil, SectorSize) }, false, statusIOErr, true},
		{"IN at the last possible sector", func() *virtio.Chain { return request(typeIn, ^uint64(0), nil, SectorSize) }, false, statusIOErr, true},
		{"IN of a partial sector", func() *virtio.Chain { return request(typeIn, 0, nil, 100) }, false, statusIOErr, true},
		{"IN of nothing at the end", func() *virtio.Chain { return request(typeIn, capacity, nil, 0) }, false, statusOK, false},
		{"OUT past the end", func() *virtio.Chain { return request(typeOut, capacity, pattern(SectorSize, 1), 0) }, false, statusIOErr, true},
		{"OUT with overflowing sector", func() *virtio.Chain { return request(typeOut, ^uint64(0)>>9+1, pattern(SectorSize, 1), 0) }, false, statusIOErr, true},
		{"OUT of a partial sector", func() *virtio.Chain { return request(typeOut, 0, pattern(511, 1), 0) }, false, statusIOErr, true},
		{"OUT on a read-only disk", func() *virtio.Chain { return request(typeOut, 0, pattern(SectorSize, 1), 0) }, true, statusIOErr, true},
		{"discard on a read-only disk", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: 0, n: 8}), 0)
		}, true, statusIOErr, true},
		{"write zeroes on a read-only disk", func() *virtio.Chain {
			return request(typeWriteZeroes, 0, zeroSegs(zeroSeg{off: 0, n: 8}), 0)
		}, true, statusIOErr, true},
		{"discard past the end", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: capacity - 1, n: 2}), 0)
		}, false, statusIOErr, true},
		{"discard at a huge sector", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: ^uint64(0), n: 1}), 0)
		}, false, statusIOErr, true},
		{"discard too many sectors", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: 0, n: maxZeroSectors + 1}), 0)
		}, false, statusIOErr, true},
		{"discard with unmap", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: 0, n: 8, unmap: true}), 0)
		}, false, statusUnsupp, true},
		{"write zeroes with unknown flags", func() *virtio.Chain {
			segs := zeroSegs(zeroSeg{off: 0, n: 8})
			segs[12] = 2
			return request(typeWriteZeroes, 0, segs, 0)
		}, false, statusUnsupp, true},
		{"discard without segments", func() *virtio.Chain { return request(typeDiscard, 0, nil, 0) }, false, statusIOErr, true},
		{"discard with a partial segment", func() *virtio.Chain {
			return request(typeDiscard, 0, zeroSegs(zeroSeg{off: 0, n: 8})[:15], 0)
		}, false, statusIOErr, true},
		{"discard with too many segments", func() *virtio.Chain {
			var segs []zeroSeg
			for range maxZeroSegs + 1 {
				segs = append(segs, zeroSeg{off: 0, n: 8})
			}
			return request(typeDiscard, 0, zeroSegs(segs...), 0)
		}, false, statusIOErr, true},
		{"bad second segment changes nothing", func() *virtio.Chain {
			return request(typeWriteZeroes, 0, zeroSegs(zeroSeg{off: 0, n: 8}, zeroSeg{off: capacity, n: 1}), 0)
		}, false, statusIOErr, true},
		{"SCSI command", func() *virtio.Chain { return request(2, 0, nil, 0) }, false, statusUnsupp, false},
		{"GET_LIFETIME", func() *virtio.Chain { return request(10, 0, nil, 8) }, false, statusUnsupp, false},
		{"SECURE_ERASE", func() *virtio.Chain { return request(14, 0, nil, 0) }, false, statusUnsupp, false},
		{"legacy barrier bit", func() *virtio.Chain { return request(0x80000001, 0, nil, 0) }, false, statusUnsupp, false},
		{"short header", func() *virtio.Chain {
			c := request(typeIn, 0, nil, SectorSize)
			c.Readable[0] = c.Readable[0][:15]
			return c
		}, false, statusIOErr, true},
		{"no header at all", func() *virtio.Chain {
			c := request(typeIn, 0, nil, SectorSize)
			c.Readable = nil
			return c
		}, false, statusIOErr, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := newImage(t, testDiskSize)
			// Mark the disk so any stray change shows.
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(pattern(SectorSize, 7), 0)
			require.NoError(t, err)
			_, err = f.WriteAt(pattern(SectorSize, 8), testDiskSize-SectorSize)
			require.NoError(t, err)
			require.NoError(t, f.Close())

			d := openDisk(t, Options{Path: path, ReadOnly: tt.readOnly})
			c := tt.chain()
			_, err = d.handle(c)
			if tt.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, tt.wantStatus, status(c))
			assert.Equal(t, pattern(SectorSize, 7), fileBytes(t, path, 0, SectorSize))
			assert.Equal(t, pattern(SectorSize, 8), fileBytes(t, path, testDiskSize-SectorSize, SectorSize))
		})
	}
}

func TestRequestWithoutStatusByte(t *testing.T) {
	d := openDisk(t, Options{Path: newImage(t, testDiskSize)})
	c := request(typeIn, 0, nil, 0)
	c.Writable = nil
	n, err := d.handle(c)
	require.ErrorIs(t, err, virtio.ErrBadRequest)
	assert.Zero(t, n)
}

func TestReadOnlyDisk(t *testing.T) {
	path := newImage(t, testDiskSize)
	require.NoError(t, os.WriteFile(path, pattern(SectorSize, 4), 0o644))
	require.NoError(t, os.Truncate(path, testDiskSize))
	d := openDisk(t, Options{Path: path, ReadOnly: true})
	f := d.Features()
	assert.NotZero(t, f&FeatureRO)
	assert.Zero(t, f&(FeatureDiscard|FeatureWriteZeroes))

	c := request(typeIn, 0, nil, SectorSize)
	_, err := d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, byte(statusOK), status(c))
	assert.Equal(t, pattern(SectorSize, 4), c.Writable[0])

	c = request(typeFlush, 0, nil, 0)
	_, err = d.handle(c)
	require.NoError(t, err)
	assert.Equal(t, byte(statusOK), status(c))
}

func TestLocking(t *testing.T) {
	path := newImage(t, testDiskSize)
	self := os.Getpid()

	rw, err := Open(Options{Path: path})
	require.NoError(t, err)

	// A second writer and a reader are both refused while one writes.
	for _, ro := range []bool{false, true} {
		_, err = Open(Options{Path: path, ReadOnly: ro})
		require.ErrorIs(t, err, ErrLocked, "read-only %v", ro)
		var le *LockedError
		require.ErrorAs(t, err, &le)
		assert.Equal(t, self, le.PID, "holder found in /proc/locks")
		assert.True(t, le.HolderWrites)
		assert.Contains(t, err.Error(), path)
		assert.Contains(t, err.Error(), "pid ")
		assert.NotContains(t, err.Error(), "\n")
		t.Log(err)
	}
	require.NoError(t, rw.Close())
	require.NoError(t, rw.Close(), "Close twice is a no-op")

	// Readers share; a writer is refused with a hint to share read-only.
	ro1, err := Open(Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	ro2, err := Open(Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	_, err = Open(Options{Path: path})
	require.ErrorIs(t, err, ErrLocked)
	assert.Contains(t, err.Error(), ",ro")
	assert.Contains(t, err.Error(), "read-only by pid ")
	t.Log(err)
	require.NoError(t, ro1.Close())
	require.NoError(t, ro2.Close())

	// Released on Close.
	rw, err = Open(Options{Path: path})
	require.NoError(t, err)
	require.NoError(t, rw.Close())
}

func TestLockedErrorMessages(t *testing.T) {
	tests := []struct {
		err  LockedError
		want string
	}{
		{LockedError{Path: "/x.img", PID: 123, Command: "wisp", HolderWrites: true, WantWrite: true},
			"disk /x.img is in use by pid 123 (wisp), which writes to it; stop that VM first"},
		{LockedError{Path: "/x.img", PID: 123, Command: "wisp", WantWrite: true},
			"disk /x.img is in use read-only by pid 123 (wisp); stop that VM or pass ,ro to share it read-only"},
		{LockedError{Path: "/x.img", WantWrite: true},
			"disk /x.img is in use by another process; stop that VM or pass ,ro to share it read-only"},
		{LockedError{Path: "/x.img", PID: 9, HolderWrites: true},
			"disk /x.img is in use by pid 9, which writes to it; stop that VM first"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.err.Error())
		assert.True(t, errors.Is(&tt.err, ErrLocked))
	}
}

func TestFindLockHolder(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 4242 08:01:77 0 EOF
2: FLOCK  ADVISORY  WRITE 100 08:02:77 0 EOF
3: FLOCK  ADVISORY  READ 200 08:01:78 0 EOF
3: -> FLOCK  ADVISORY  WRITE 300 08:01:77 0 EOF
garbage line
4: FLOCK  ADVISORY  WRITE notapid 08:01:77 0 EOF
5: FLOCK  ADVISORY  READ 555 08:01:77 0 EOF
6: FLOCK  ADVISORY  READ 556 08:01:77 0 EOF
`
	tests := []struct {
		name     string
		dev, ino uint64
		wantPID  int
		wantExcl bool
	}{
		{"first shared holder", unix.Mkdev(8, 1), 77, 555, false},
		{"exclusive holder", unix.Mkdev(8, 2), 77, 100, true},
		{"other inode", unix.Mkdev(8, 1), 78, 200, false},
		{"hex device numbers", unix.Mkdev(0xfd, 0x10), 5, 0, false},
		{"no holder", unix.Mkdev(9, 9), 77, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, excl := findLockHolder(bufio.NewScanner(strings.NewReader(locks)), tt.dev, tt.ino)
			assert.Equal(t, tt.wantPID, pid)
			assert.Equal(t, tt.wantExcl, excl)
		})
	}
	pid, excl := findLockHolder(bufio.NewScanner(strings.NewReader("1: FLOCK ADVISORY WRITE 7 fd:10:5 0 EOF\n")), unix.Mkdev(0xfd, 0x10), 5)
	assert.Equal(t, 7, pid)
	assert.True(t, excl)
}

// The device through a real queue: Activate serves kicks, requests land on
// the disk, the call eventfd fires; Reset and Close stop it.
func TestActivateEndToEnd(t *testing.T) {
	skipUnderRace(t)
	path := newImage(t, testDiskSize)
	errs := make(chan error, 8)
	d, err := Open(Options{Path: path, Serial: "e2e", Queues: 2, OnError: func(_ int, err error) { errs <- err }})
	require.NoError(t, err)

	mem := virtiotest.NewMemory(0x100000, 1<<20)
	drv := virtiotest.NewDriver(mem, 16, 0x100000)
	features := d.Features() &^ FeatureRO
	q, err := drv.Queue(features)
	require.NoError(t, err)
	kick, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer kick.Close()
	call, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer call.Close()
	never, err := virtio.NewEventFD()
	require.NoError(t, err)
	defer never.Close()

	act := virtio.Activation{
		Memory:   mem,
		Features: features,
		// Queue 1 not enabled by the driver.
		Queues: []virtio.ActiveQueue{{Queue: q, Kick: kick, Interrupt: call}, {}},
	}
	require.NoError(t, d.Activate(act))
	require.ErrorIs(t, d.Activate(act), ErrActive)

	hdr := func(typ uint32, sector uint64) []byte {
		h := make([]byte, headerSize)
		binary.LittleEndian.PutUint32(h, typ)
		binary.LittleEndian.PutUint64(h[8:], sector)
		return h
	}
	wait := func() {
		stopped, err := virtio.Wait(call, never)
		require.NoError(t, err)
		require.False(t, stopped)
	}

	data := pattern(2*SectorSize, 11)
	w := drv.Add(virtiotest.In(hdr(typeOut, 8)), virtiotest.In(data), virtiotest.Out(1))
	require.NoError(t, kick.Signal())
	wait()
	id, n, ok := drv.Used()
	require.True(t, ok)
	assert.Equal(t, uint32(w.Head), id)
	assert.Equal(t, uint32(1), n)
	assert.Equal(t, byte(statusOK), w.Buffer(2)[0])
	assert.Equal(t, data, fileBytes(t, path, 8*SectorSize, int64(len(data))))

	r := drv.AddIndirect(virtiotest.In(hdr(typeIn, 8)), virtiotest.Out(2*SectorSize), virtiotest.Out(1))
	g := drv.Add(virtiotest.In(hdr(typeGetID, 0)), virtiotest.Out(serialLen), virtiotest.Out(1))
	require.NoError(t, kick.Signal())
	wait()
	for _, want := range []*virtiotest.Chain{r, g} {
		id, _, ok = drv.Used()
		if !ok { // the second completion may need its own interrupt
			wait()
			id, _, ok = drv.Used()
		}
		require.True(t, ok)
		assert.Equal(t, uint32(want.Head), id)
	}
	assert.Equal(t, data, r.Buffer(1))
	assert.Equal(t, byte(statusOK), r.Buffer(2)[0])
	assert.Equal(t, "e2e", string(bytes.TrimRight(g.Buffer(1), "\x00")))

	// A bad request is answered and reported.
	b := drv.Add(virtiotest.In(hdr(typeIn, 1<<40)), virtiotest.Out(SectorSize), virtiotest.Out(1))
	require.NoError(t, kick.Signal())
	wait()
	_, _, ok = drv.Used()
	require.True(t, ok)
	assert.Equal(t, byte(statusIOErr), b.Buffer(2)[0])
	assert.ErrorIs(t, <-errs, virtio.ErrBadRequest)

	require.NoError(t, d.Reset())
	require.NoError(t, d.Reset(), "Reset when not active is a no-op")
	q2, err := virtio.NewQueue(mem, drv.Config(), features, q.NextAvail())
	require.NoError(t, err)
	act.Queues[0].Queue = q2
	require.NoError(t, d.Activate(act), "active again after Reset")
	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Activate(act), ErrClosed)
}

func writeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// The zero-writing fallback (for file systems without ZERO_RANGE), across
// more than one chunk.
func TestWriteZeroesFallback(t *testing.T) {
	path := newImage(t, 0)
	require.NoError(t, os.WriteFile(path, pattern(3*zeroChunk, 3), 0o644))
	d := openDisk(t, Options{Path: path})
	raw := d.backend.(*rawFile)
	require.NoError(t, raw.writeZeroes(SectorSize, zeroChunk+SectorSize))
	got := fileBytes(t, path, 0, 3*zeroChunk)
	want := pattern(3*zeroChunk, 3)
	clear(want[SectorSize : 2*SectorSize+zeroChunk])
	assert.True(t, bytes.Equal(want, got))
}

// skipUnderRace skips a test in which a goroutine playing the guest driver
// and the device's worker share ring memory: they synchronize the way a
// guest and a device do, through eventfds and the ring's own indices,
// which the race detector cannot see, so it reports races that are the
// protocol working as designed.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("race detector: driver and device share guest memory outside Go's memory model (eventfd handoff)")
	}
}
