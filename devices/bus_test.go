package devices

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a device that remembers the last access it served.
type recorder struct {
	name   string
	offset uint64
	width  int
	wrote  []byte
	err    error
}

func (r *recorder) Read(offset uint64, data []byte) error {
	r.offset, r.width = offset, len(data)
	for i := range data {
		data[i] = byte(offset) + byte(i)
	}
	return r.err
}

func (r *recorder) Write(offset uint64, data []byte) error {
	r.offset, r.width = offset, len(data)
	r.wrote = append([]byte(nil), data...)
	return r.err
}

func TestBusInsert(t *testing.T) {
	type rng struct{ base, length uint64 }
	tests := []struct {
		name     string
		existing []rng
		insert   rng
		wantErr  error
	}{
		{"empty bus", nil, rng{0x3f8, 8}, nil},
		{"adjacent below", []rng{{0x60, 1}}, rng{0x5f, 1}, nil},
		{"adjacent above", []rng{{0x60, 1}}, rng{0x61, 1}, nil},
		{"between two", []rng{{0x60, 1}, {0x64, 1}}, rng{0x61, 3}, nil},
		{"same base", []rng{{0x70, 2}}, rng{0x70, 1}, ErrOverlap},
		{"overlaps the tail of the previous", []rng{{0x70, 2}}, rng{0x71, 2}, ErrOverlap},
		{"overlaps the head of the next", []rng{{0x70, 2}}, rng{0x6f, 2}, ErrOverlap},
		{"swallows one", []rng{{0x70, 2}}, rng{0x60, 0x20}, ErrOverlap},
		{"inside one", []rng{{0x600, 6}}, rng{0x602, 2}, ErrOverlap},
		{"zero length", nil, rng{0x80, 0}, ErrBadRange},
		{"wraps past 2^64", nil, rng{^uint64(0), 2}, ErrBadRange},
		{"ending at 2^64 is refused: the end is exclusive", nil, rng{^uint64(0), 1}, ErrBadRange},
		{"ending just below 2^64", nil, rng{^uint64(0) - 1, 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBus()
			for _, e := range tt.existing {
				require.NoError(t, b.Insert(&recorder{}, e.base, e.length))
			}
			err := b.Insert(&recorder{}, tt.insert.base, tt.insert.length)
			if tt.wantErr == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

func TestBusInsertNilDevice(t *testing.T) {
	assert.ErrorIs(t, NewBus().Insert(nil, 0x80, 1), ErrBadRange)
}

func TestBusDispatch(t *testing.T) {
	low, high, tail := &recorder{name: "low"}, &recorder{name: "high"}, &recorder{name: "tail"}
	b := NewBus()
	// Inserted out of order: the bus keeps them sorted.
	require.NoError(t, b.Insert(high, 0x3f8, 8))
	require.NoError(t, b.Insert(low, 0x60, 1))
	require.NoError(t, b.Insert(tail, ^uint64(0)-4, 4))

	tests := []struct {
		name       string
		addr       uint64
		width      int
		wantDev    *recorder
		wantOffset uint64
		wantErr    error
	}{
		{"first byte", 0x3f8, 1, high, 0, nil},
		{"last byte", 0x3ff, 1, high, 7, nil},
		{"word inside", 0x3fc, 2, high, 4, nil},
		{"whole range", 0x3f8, 8, high, 0, nil},
		{"single-port device", 0x60, 1, low, 0, nil},
		{"top of the address space", ^uint64(0) - 4, 4, tail, 0, nil},
		{"last mappable address", ^uint64(0) - 1, 1, tail, 3, nil},
		{"the very last address", ^uint64(0), 1, nil, 0, ErrNoDevice},
		{"below everything", 0x10, 1, nil, 0, ErrNoDevice},
		{"gap", 0x61, 1, nil, 0, ErrNoDevice},
		{"just past the end", 0x400, 1, nil, 0, ErrNoDevice},
		{"crosses the end", 0x3ff, 2, nil, 0, ErrCrossEdge},
		{"crosses the end of a 1-port device", 0x60, 2, nil, 0, ErrCrossEdge},
		{"wraps past 2^64", ^uint64(0) - 1, 2, nil, 0, ErrCrossEdge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range []*recorder{low, high, tail} {
				*d = recorder{name: d.name}
			}
			data := make([]byte, tt.width)
			rerr := b.Read(tt.addr, data)
			werr := b.Write(tt.addr, []byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22}[:tt.width])
			if tt.wantErr != nil {
				assert.ErrorIs(t, rerr, tt.wantErr)
				assert.ErrorIs(t, werr, tt.wantErr)
				for _, d := range []*recorder{low, high, tail} {
					assert.Zero(t, d.width, "%s was not called", d.name)
				}
				return
			}
			require.NoError(t, rerr)
			require.NoError(t, werr)
			assert.Equal(t, tt.wantOffset, tt.wantDev.offset)
			assert.Equal(t, tt.width, tt.wantDev.width)
			assert.Equal(t, byte(tt.wantOffset), data[0], "read data comes from the device")
			assert.Len(t, tt.wantDev.wrote, tt.width)
		})
	}
}

var errDevice = errors.New("device failed")

func TestBusPassesDeviceErrorsThrough(t *testing.T) {
	b := NewBus()
	require.NoError(t, b.Insert(&recorder{err: errDevice}, 0x70, 2))
	assert.ErrorIs(t, b.Read(0x71, make([]byte, 1)), errDevice)
	assert.ErrorIs(t, b.Write(0x70, []byte{1}), errDevice)
}

func TestBusRemove(t *testing.T) {
	b := NewBus()
	dev := &recorder{}
	require.NoError(t, b.Insert(dev, 0x70, 2))
	require.NoError(t, b.Insert(&recorder{}, 0x80, 1))

	assert.ErrorIs(t, b.Remove(0x71), ErrNoDevice, "only an exact base removes")
	require.NoError(t, b.Remove(0x70))
	assert.ErrorIs(t, b.Read(0x70, make([]byte, 1)), ErrNoDevice)
	assert.ErrorIs(t, b.Remove(0x70), ErrNoDevice)
	require.NoError(t, b.Read(0x80, make([]byte, 1)), "the other device stays")
	require.NoError(t, b.Insert(dev, 0x70, 2), "the freed range can be reused")
}
