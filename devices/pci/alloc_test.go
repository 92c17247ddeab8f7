package pci

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAllocator(t *testing.T) {
	type alloc struct {
		size, align uint64
		want        uint64 // 0 with wantErr
		wantErr     bool
	}
	for _, tc := range []struct {
		name     string
		start    uint64
		end      uint64
		reserved []Range
		allocs   []alloc
	}{
		{
			name: "bump, naturally aligned", start: 0xc000_0000, end: 0xfec0_0000,
			allocs: []alloc{
				{size: 0x1000, align: 0x1000, want: 0xc000_0000},
				{size: 0x8000, align: 0x8000, want: 0xc000_8000},
				{size: 0x1000, align: 0x1000, want: 0xc000_1000}, // fills the gap
				{size: 0x10_0000, align: 0x10_0000, want: 0xc010_0000},
			},
		},
		{
			name: "skips ECAM and a test device", start: 0xc000_0000, end: 0xfec0_0000,
			reserved: []Range{{0xe800_0000, 1 << 20}, {0xc000_0000, 8}},
			allocs: []alloc{
				{size: 0x1000, align: 0x1000, want: 0xc000_1000},
				{size: 0x27ff_e000, align: 0x1000, want: 0xc000_2000},  // up to ECAM
				{size: 0x10_0000, align: 0x10_0000, want: 0xe810_0000}, // past ECAM
			},
		},
		{
			name: "full", start: 0x1000, end: 0x3000,
			allocs: []alloc{
				{size: 0x1000, align: 0x1000, want: 0x1000},
				{size: 0x2000, align: 0x2000, wantErr: true},
				{size: 0x1000, align: 0x1000, want: 0x2000},
				{size: 0x10, align: 0x10, wantErr: true},
			},
		},
		{
			name: "bad requests", start: 0x1000, end: 0x3000,
			allocs: []alloc{
				{size: 0, align: 0x1000, wantErr: true},
				{size: 0x10, align: 3, wantErr: true},
				{size: 0x10, align: 0, wantErr: true},
				{size: ^uint64(0), align: 1, wantErr: true},
			},
		},
		{
			name: "near the top of the address space", start: 0xffff_ffff_ffff_0000, end: ^uint64(0),
			allocs: []alloc{
				{size: 0x1000, align: 1 << 63, wantErr: true},
				{size: 0x1000, align: 0x1000, want: 0xffff_ffff_ffff_0000},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAllocator(tc.start, tc.end)
			require.NoError(t, err)
			for _, r := range tc.reserved {
				require.NoError(t, a.Reserve(r.Base, r.Size))
			}
			for i, al := range tc.allocs {
				got, err := a.Alloc(al.size, al.align)
				if al.wantErr {
					assert.Error(t, err, "alloc %d", i)
					continue
				}
				require.NoError(t, err, "alloc %d", i)
				assert.Equal(t, al.want, got, "alloc %d: %#x", i, got)
			}
		})
	}
}

func TestAllocatorReserve(t *testing.T) {
	_, err := NewAllocator(0x2000, 0x1000)
	assert.ErrorIs(t, err, ErrLayout)
	a, err := NewAllocator(0x1000, 0x5000)
	require.NoError(t, err)
	assert.ErrorIs(t, a.Reserve(0x1000, 0), ErrLayout)
	assert.ErrorIs(t, a.Reserve(^uint64(0), 2), ErrLayout)
	require.NoError(t, a.Reserve(0, 0x1800), "partly outside the window")
	require.NoError(t, a.Reserve(0x1000, 0x100), "twice")
	require.NoError(t, a.Reserve(0x9000, 0x1000), "entirely outside")
	require.NoError(t, a.Reserve(0x3000, 0x1000))
	require.NoError(t, a.Reserve(0x2800, 0x1000), "merges with its neighbour")
	assert.Equal(t, []Range{{0x1000, 0x800}, {0x2800, 0x1800}}, a.used)
	got, err := a.Alloc(0x800, 0x800)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x1800), got)
	got, err = a.Alloc(0x1000, 0x1000)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x4000), got)
}
