package console

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEscapeReader(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     string
		wantQuit bool
	}{
		{"plain", "ls -l\r", "ls -l\r", false},
		{"ctrl-c passes", "\x03", "\x03", false},
		{"quit", "abc\x01xdef", "abc", true},
		{"quit upper", "\x01X", "", true},
		{"double escape", "a\x01\x01b", "a\x01b", false},
		{"escape other", "\x01c", "\x01c", false},
		{"escape at end", "a\x01", "a", false},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			if oneByte {
				name += "/one byte reads"
			}
			t.Run(name, func(t *testing.T) {
				quit := make(chan struct{})
				var src io.Reader = bytes.NewBufferString(tt.in)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				got, err := io.ReadAll(NewEscapeReader(src, quit))
				require.NoError(t, err)
				assert.Equal(t, tt.want, string(got))
				select {
				case <-quit:
					assert.True(t, tt.wantQuit, "quit closed")
				default:
					assert.False(t, tt.wantQuit, "quit not closed")
				}
			})
		}
	}
}

func TestFileConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	c, err := File(path)
	require.NoError(t, err)
	_, err = c.Out.Write([]byte("Linux version\n"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "Linux version\n", string(got))
}

func TestFileConsoleBadPath(t *testing.T) {
	_, err := File(filepath.Join(t.TempDir(), "no", "such", "dir", "x.log"))
	require.Error(t, err)
}

func TestStdioNotTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	var out bytes.Buffer
	c, err := Stdio(r, &out)
	require.NoError(t, err)
	assert.Equal(t, r, c.In, "a pipe is passed through untouched")
	require.NoError(t, c.Close())
}
