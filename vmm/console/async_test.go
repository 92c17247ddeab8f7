package console

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func TestAsyncWriterKeepsOrderAndBatches(t *testing.T) {
	dst := &countingWriter{}
	a := NewAsyncWriter(dst)
	var want bytes.Buffer
	for i := 0; i < 10000; i++ {
		b := []byte{byte('a' + i%26)}
		want.Write(b)
		_, err := a.Write(b)
		require.NoError(t, err)
	}
	require.NoError(t, a.Close())
	assert.Equal(t, want.String(), dst.buf.String())
	assert.LessOrEqual(t, dst.writes, 10000)
	_, err := a.Write([]byte("x"))
	assert.ErrorIs(t, err, io.ErrClosedPipe)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("terminal gone") }

func TestAsyncWriterReportsError(t *testing.T) {
	a := NewAsyncWriter(failingWriter{})
	_, err := a.Write([]byte("hello"))
	require.NoError(t, err, "the writer never blocks the guest on a failing destination")
	assert.ErrorContains(t, a.Close(), "terminal gone")
}
