package console

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readN reads exactly n bytes from r.
func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	_, err := io.ReadFull(r, buf)
	require.NoError(t, err)
	return string(buf)
}

func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	n, err := w.Write([]byte(s))
	require.NoError(t, err)
	require.Equal(t, len(s), n)
}

func TestHubHistoryForLateViewer(t *testing.T) {
	tests := []struct {
		name    string
		keep    int
		written []string
		want    string
	}{
		{"everything fits", 64, []string{"boot\n", "login: "}, "boot\nlogin: "},
		{"only the last keep bytes", 4, []string{"abcdef", "gh"}, "efgh"},
		{"no history", 0, []string{"abc"}, ""},
		{"one write larger than the ring", 8, []string{strings.Repeat("x", 2*minLive) + "12345678"}, "12345678"},
		{"history wraps around the ring", minLive - 16, []string{strings.Repeat("a", minLive-2), "bcde"}, strings.Repeat("a", minLive-20) + "bcde"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHub(tt.keep)
			for _, s := range tt.written {
				write(t, h, s)
			}
			v, err := h.Attach(false)
			require.NoError(t, err)
			write(t, h, "|live")
			assert.Equal(t, tt.want+"|live", readN(t, v, len(tt.want)+len("|live")))
			assert.Zero(t, v.Dropped())
		})
	}
}

func TestHubViewersSeeTheSameOutput(t *testing.T) {
	h := NewHub(1 << 10)
	write(t, h, "history ")
	viewers := make([]*Viewer, 3)
	for i := range viewers {
		v, err := h.Attach(i == 0)
		require.NoError(t, err)
		viewers[i] = v
	}
	write(t, h, "live")
	for _, v := range viewers {
		assert.Equal(t, "history live", readN(t, v, len("history live")))
	}
}

func TestHubOneWriterOnly(t *testing.T) {
	h := NewHub(0)
	w, err := h.Attach(true)
	require.NoError(t, err)
	assert.True(t, w.Writer())

	_, err = h.Attach(true)
	require.ErrorIs(t, err, ErrConsoleBusy, "a second writer")

	watcher, err := h.Attach(false)
	require.NoError(t, err, "watchers may join while someone writes")
	assert.False(t, watcher.Writer())
	_, err = watcher.Write([]byte("x"))
	require.ErrorIs(t, err, ErrReadOnly)

	require.NoError(t, w.Close())
	_, err = w.Write([]byte("x"))
	require.ErrorIs(t, err, ErrClosed, "a detached writer cannot type")
	w2, err := h.Attach(true)
	require.NoError(t, err, "the console is free once the writer detached")
	write(t, w2, "ok")
	assert.Equal(t, "ok", readN(t, h.Input(), 2))
}

func TestHubInputReachesGuest(t *testing.T) {
	h := NewHub(0)
	// More than inputLimit: the writer blocks until the guest reads, and
	// every byte arrives in order.
	typed := strings.Repeat("0123456789", inputLimit/5)
	typing := make(chan error)
	go func() {
		w, err := h.Attach(true)
		if err == nil {
			_, err = w.Write([]byte(typed))
		}
		if err == nil {
			// A closed viewer's unread input is still delivered.
			err = w.Close()
		}
		if err == nil {
			w, err = h.Attach(true)
		}
		if err == nil {
			_, err = w.Write([]byte("end"))
		}
		typing <- err
	}()
	assert.Equal(t, typed+"end", readN(t, h.Input(), len(typed)+len("end")))
	require.NoError(t, <-typing)

	require.NoError(t, h.Close())
	_, err := h.Input().Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
}

func TestHubSlowViewerDoesNotBlockWrite(t *testing.T) {
	h := NewHub(16)
	slow, err := h.Attach(false)
	require.NoError(t, err)

	// The slow viewer never reads while the guest writes four rings' worth:
	// if Write waited for it, this would hang.
	chunk := bytes.Repeat([]byte("."), 1000)
	total := 0
	for total < 4*len(h.ring) {
		write(t, h, string(chunk))
		total += len(chunk)
	}
	write(t, h, "tail")
	total += len("tail")

	got, err := io.ReadAll(io.LimitReader(slow, int64(len(h.ring))))
	require.NoError(t, err)
	assert.Len(t, got, len(h.ring), "the viewer carries on from the oldest byte kept")
	assert.True(t, bytes.HasSuffix(got, []byte("tail")))
	assert.Equal(t, uint64(total-len(h.ring)), slow.Dropped())
}

func TestHubWriteDoesNotAllocate(t *testing.T) {
	h := NewHub(1 << 20)
	for range 3 {
		_, err := h.Attach(false)
		require.NoError(t, err)
	}
	p := []byte("a line of console output\r\n")
	allocs := testing.AllocsPerRun(1000, func() { _, _ = h.Write(p) })
	assert.Zero(t, allocs)
}

func TestHubCloseEndsEverything(t *testing.T) {
	h := NewHub(1 << 10)
	write(t, h, "before")
	caughtUp, err := h.Attach(true)
	require.NoError(t, err)
	assert.Equal(t, "before", readN(t, caughtUp, len("before")))
	behind, err := h.Attach(false)
	require.NoError(t, err)

	var wg sync.WaitGroup
	results := make([]string, 2)
	errs := make([]error, 3)
	for i, v := range []*Viewer{caughtUp, behind} {
		wg.Go(func() {
			b, err := io.ReadAll(v)
			results[i], errs[i] = string(b), err
		})
	}
	wg.Go(func() { _, errs[2] = io.ReadAll(h.Input()) })
	require.NoError(t, h.Close())
	wg.Wait()

	assert.Empty(t, results[0], "a blocked reader ends")
	assert.Equal(t, "before", results[1], "a viewer behind reads what is left, then io.EOF")
	for _, err := range errs {
		assert.NoError(t, err, "io.ReadAll hides io.EOF: every reader ended cleanly")
	}

	_, err = h.Attach(false)
	require.ErrorIs(t, err, ErrClosed)
	_, err = caughtUp.Write([]byte("x"))
	require.ErrorIs(t, err, ErrClosed)
	n, err := h.Write([]byte("after"))
	require.NoError(t, err, "the guest is never stopped by its console")
	assert.Equal(t, 5, n)
}

func TestViewerCloseEndsItsRead(t *testing.T) {
	h := NewHub(0)
	v, err := h.Attach(false)
	require.NoError(t, err)
	done := make(chan error)
	go func() {
		_, err := v.Read(make([]byte, 1))
		done <- err
	}()
	require.NoError(t, v.Close())
	assert.ErrorIs(t, <-done, io.EOF)
}
