package memory

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		name string
		size uint64
		want []Region
	}{
		{"small", 256 << 20, []Region{{0, 256 << 20, 0}}},
		{"exactly hole", 3 << 30, []Region{{0, 3 << 30, 0}}},
		{"above hole", 5 << 30, []Region{{0, 3 << 30, 0}, {4 << 30, 2 << 30, 3 << 30}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Layout(tt.size))
		})
	}
}

func TestNewRejectsBadSizes(t *testing.T) {
	for _, size := range []uint64{0, 4096, MinSize + 1, MaxSize + 4096} {
		_, err := New(size)
		assert.ErrorIs(t, err, ErrBadSize, "size %d", size)
	}
}

func TestAccessorsBoundsChecked(t *testing.T) {
	m, err := New(4 << 20)
	require.NoError(t, err)
	defer m.Close()

	require.NoError(t, m.PutUint32(0x1000, 0xdeadbeef))
	v, err := m.Uint32(0x1000)
	require.NoError(t, err)
	assert.Equal(t, uint32(0xdeadbeef), v)

	require.NoError(t, m.PutUint64(m.Size()-8, 1))
	bad := []struct {
		name string
		gpa  uint64
		n    uint64
	}{
		{"past end", m.Size(), 1},
		{"straddles end", m.Size() - 4, 8},
		{"huge length", 0, ^uint64(0)},
		{"wrapping", ^uint64(0) - 2, 8},
		{"in the hole", HoleStart, 4},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := m.Slice(b.gpa, b.n)
			assert.ErrorIs(t, err, ErrOutOfRange)
		})
	}
	_, err = m.Uint64(m.Size() - 4)
	assert.ErrorIs(t, err, ErrOutOfRange)
	assert.ErrorIs(t, m.WriteAt(make([]byte, 16), m.Size()-8), ErrOutOfRange)
}

func TestHighMemoryAboveHole(t *testing.T) {
	// 3 GiB + 4 MiB: the last 4 MiB must appear at 4 GiB. The mapping is
	// sparse, so this costs only the pages touched.
	m, err := New(HoleStart + 4<<20)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.PutUint64(HighStart, 42))
	v, err := m.Uint64(HighStart)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), v)
	assert.Equal(t, uint64(42), uint64(m.Host()[HoleStart]), "high RAM follows low RAM in the mapping")
	_, err = m.Slice(HighStart+4<<20, 1)
	assert.ErrorIs(t, err, ErrOutOfRange)
}

func TestMemfdShareable(t *testing.T) {
	m, err := New(MinSize)
	require.NoError(t, err)
	require.NoError(t, m.PutUint32(0, 0x57495350))
	// A second mapping of the same fd, as another process would make,
	// sees the guest's bytes.
	other, err := unix.Mmap(m.Fd(), 0, int(m.Size()), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(other)
	assert.Equal(t, []byte{0x50, 0x53, 0x49, 0x57}, other[:4])
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close twice is harmless")
}

func TestMapFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/kernel"
	require.NoError(t, os.WriteFile(path, []byte("bzImage bytes"), 0o644))
	m, err := MapFile(path)
	require.NoError(t, err)
	assert.Equal(t, "bzImage bytes", string(m.Bytes()))
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())

	require.NoError(t, os.WriteFile(path, nil, 0o644))
	empty, err := MapFile(path)
	require.NoError(t, err)
	assert.Empty(t, empty.Bytes())

	_, err = MapFile(dir + "/missing")
	assert.ErrorIs(t, err, os.ErrNotExist)
}
