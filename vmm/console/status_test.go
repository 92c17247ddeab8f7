package console

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusFilter(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantOut   string
		wantCode  int
		wantFound bool
	}{
		{"plain output", "hello\nworld\n", "hello\nworld\n", 0, false},
		{"status at end", "hi\nwisp-exit-status: 3\n", "hi\n", 3, true},
		{"status with CRLF", "hi\r\nwisp-exit-status: 0\r\n", "hi\r\n", 0, true},
		{"status first", "wisp-exit-status: 127\n", "", 127, true},
		{"negative", "wisp-exit-status: -1\n", "", -1, true},
		{"not at line start", "say wisp-exit-status: 3\n", "say wisp-exit-status: 3\n", 0, false},
		{"near miss", "wisp-exit-stat\nwhy\n", "wisp-exit-stat\nwhy\n", 0, false},
		{"letters after", "wisp-exit-status: 3x\n", "wisp-exit-status: 3x\n", 0, false},
		{"w at line start", "w\nwow\n", "w\nwow\n", 0, false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 1000} {
			t.Run(tt.name, func(t *testing.T) {
				var buf bytes.Buffer
				f := NewStatusFilter(&buf)
				in := []byte(tt.in)
				for len(in) > 0 {
					n := min(chunk, len(in))
					w, err := f.Write(in[:n])
					require.NoError(t, err)
					require.Equal(t, n, w)
					in = in[n:]
				}
				require.NoError(t, f.Flush())
				assert.Equal(t, tt.wantOut, buf.String())
				code, found := f.Status()
				assert.Equal(t, tt.wantFound, found)
				assert.Equal(t, tt.wantCode, code)
			})
		}
	}
}

func TestStatusFilterFlushesPartial(t *testing.T) {
	var buf bytes.Buffer
	f := NewStatusFilter(&buf)
	_, err := f.Write([]byte("wisp-ex"))
	require.NoError(t, err)
	assert.Empty(t, buf.String(), "a possible status line is held back")
	require.NoError(t, f.Flush())
	assert.Equal(t, "wisp-ex", buf.String())
}
