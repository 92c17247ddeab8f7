// Package tail keeps the end of a child process's output, so an error can
// quote what the child said last without the host holding all it wrote.
package tail

import (
	"strings"
	"sync"
)

// Buffer keeps the last max bytes written to it. It is safe for concurrent
// use: a child's stdout and stderr are copied by different goroutines.
type Buffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// New returns a Buffer that keeps the last max bytes (none if max <= 0).
func New(max int) *Buffer {
	return &Buffer{max: max}
}

// Write keeps the end of p together with what came before it. It never
// fails, so a chatty child is never stopped by its tail.
func (b *Buffer) Write(p []byte) (int, error) {
	n := len(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max <= 0 {
		return n, nil
	}
	if len(p) >= b.max {
		// Only the end of p survives: copy nothing else, however large p is.
		b.buf = append(b.buf[:0], p[len(p)-b.max:]...)
		return n, nil
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String is what the buffer holds, without leading and trailing space.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// LastLine is the last non-empty line written, without its line end.
func (b *Buffer) LastLine() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return lastLine(b.buf)
}

func lastLine(b []byte) string {
	end := len(b)
	for end > 0 && (b[end-1] == '\n' || b[end-1] == '\r' || b[end-1] == ' ') {
		end--
	}
	start := end
	for start > 0 && b[start-1] != '\n' {
		start--
	}
	return string(b[start:end])
}
