package tail

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBufferKeepsTheEnd(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"nothing written", 8, nil, ""},
		{"fits", 8, []string{"abc"}, "abc"},
		{"exactly full", 8, []string{"01234567"}, "01234567"},
		{"old bytes drop", 8, []string{"0123456789", "ab"}, "456789ab"},
		{"one large write", 4, []string{strings.Repeat("x", 1000) + "wxyz"}, "wxyz"},
		{"many small writes", 3, []string{"a", "b", "c", "d", "e"}, "cde"},
		{"space trimmed", 16, []string{"\n  error: bad\n\n"}, "error: bad"},
		{"zero size keeps nothing", 0, []string{"abc"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.max)
			for _, w := range tt.writes {
				n, err := b.Write([]byte(w))
				assert.NoError(t, err)
				assert.Equal(t, len(w), n)
			}
			assert.Equal(t, tt.want, b.String())
		})
	}
}

func TestBufferNeverGrowsPastMax(t *testing.T) {
	b := New(16)
	for range 1000 {
		_, _ = b.Write([]byte("0123456789"))
		assert.LessOrEqual(t, len(b.buf), 16)
	}
	_, _ = b.Write([]byte(strings.Repeat("y", 1<<20)))
	assert.LessOrEqual(t, cap(b.buf), 1<<10, "a large write must not be kept whole")
}

func TestLastLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"one", "one"},
		{"one\n", "one"},
		{"one\ntwo\r\n\n", "two"},
		{"qemu-system-x86_64: -kernel /x: could not open\n", "qemu-system-x86_64: -kernel /x: could not open"},
	}
	for _, tt := range tests {
		b := New(64)
		_, _ = b.Write([]byte(tt.in))
		assert.Equal(t, tt.want, b.LastLine(), "%q", tt.in)
	}
}

func TestLastLineOfTheKeptEnd(t *testing.T) {
	b := New(16)
	_, _ = b.Write([]byte(strings.Repeat("x", 40) + "\nlast line\n"))
	assert.Equal(t, "last line", b.LastLine())
	_, _ = b.Write([]byte("0123456789abcdefXYZ"))
	assert.Equal(t, "3456789abcdefXYZ", b.LastLine())
}

// TestBufferConcurrentWrites is for the race detector: stdout and stderr
// copiers write at once.
func TestBufferConcurrentWrites(t *testing.T) {
	b := New(32)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
				_ = b.LastLine()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, "line", b.LastLine())
}
