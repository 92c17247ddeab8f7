package vhostuser

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// testMemfd makes a memfd of size bytes and returns two descriptors of it
// (a region table takes one per region).
func testMemfd(t *testing.T, size int64) (int, int) {
	t.Helper()
	fd, err := unix.MemfdCreate("vhost-user-memory-test", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, size))
	fd2, err := unix.Dup(fd)
	require.NoError(t, err)
	return fd, fd2
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestGuestMemory(t *testing.T) {
	a, b := testMemfd(t, 2*fakeRegionSize)
	m, err := mapMemory(fakeRegions(), []int{a, b})
	require.NoError(t, err)
	defer func() { require.NoError(t, m.unmap()) }()
	assert.False(t, fdOpen(a) || fdOpen(b), "mapMemory closes the descriptors")

	// Writes through one region land in the file where the table says.
	s, err := m.Slice(fakeHighGPA+16, 4)
	require.NoError(t, err)
	copy(s, "high")
	s, err = m.Slice(fakeRegionSize+16, 4) // past the low region: a hole
	assert.ErrorIs(t, err, ErrOutOfRange)
	assert.Nil(t, s)
	low, err := m.Slice(0, fakeRegionSize)
	require.NoError(t, err)
	assert.Len(t, low, fakeRegionSize)
	high, err := m.Slice(fakeHighGPA, fakeRegionSize)
	require.NoError(t, err)
	assert.Equal(t, []byte("high"), high[16:20])

	for _, tc := range []struct {
		name string
		gpa  uint64
		n    uint64
		ok   bool
	}{
		{"start", 0, 1, true},
		{"empty at start", 0, 0, true},
		{"last byte", fakeRegionSize - 1, 1, true},
		{"across the end", fakeRegionSize - 1, 2, false},
		{"just past the end", fakeRegionSize, 1, false},
		{"high region", fakeHighGPA + 100, 100, true},
		{"before the high region", fakeHighGPA - 1, 2, false},
		{"huge length", 8, ^uint64(0), false},
		{"wrapping length", fakeHighGPA + 8, ^uint64(0) - 4, false},
		{"top of the address space", ^uint64(0), 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := m.Slice(tc.gpa, tc.n)
			if !tc.ok {
				assert.ErrorIs(t, err, ErrOutOfRange)
				return
			}
			require.NoError(t, err)
			assert.Len(t, s, int(tc.n))
			assert.Equal(t, len(s), cap(s), "a slice must not reach beyond its range")
		})
	}

	for _, tc := range []struct {
		uva  uint64
		gpa  uint64
		fail bool
	}{
		{uva: fakeLowUVA, gpa: 0},
		{uva: fakeLowUVA + 0x1234, gpa: 0x1234},
		{uva: fakeHighUVA + fakeRegionSize - 1, gpa: fakeHighGPA + fakeRegionSize - 1},
		{uva: fakeHighUVA + fakeRegionSize, fail: true},
		{uva: fakeLowUVA - 1, fail: true},
		{uva: 0, fail: true},
	} {
		gpa, err := m.guestAddr(tc.uva)
		if tc.fail {
			assert.ErrorIs(t, err, ErrOutOfRange, "uva %#x", tc.uva)
			continue
		}
		require.NoError(t, err, "uva %#x", tc.uva)
		assert.Equal(t, tc.gpa, gpa, "uva %#x", tc.uva)
	}
}

func TestMapMemoryErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		regions []memRegion
		fds     int
	}{
		{"file too small", []memRegion{{Size: 2*fakeRegionSize + 4096}}, 1},
		{"offset past the file", []memRegion{{Size: 4096, MmapOffset: 2 * fakeRegionSize}}, 1},
		{"second region too small", []memRegion{{Size: 4096}, {GuestAddr: 1 << 20, Size: 4096, MmapOffset: 2*fakeRegionSize - 4095}}, 2},
		{"fd count", []memRegion{{Size: 4096}}, 2},
		{"empty region", []memRegion{{}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := testMemfd(t, 2*fakeRegionSize)
			fds := []int{a, b}[:tc.fds]
			if tc.fds == 1 {
				unix.Close(b)
			}
			m, err := mapMemory(tc.regions, fds)
			require.ErrorIs(t, err, ErrProtocol)
			assert.Nil(t, m)
			assert.False(t, fdOpen(a) || fdOpen(b), "descriptors closed on error")
		})
	}
}
