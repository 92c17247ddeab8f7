package qemu

import (
	"net"
	"sync"
	"time"
)

// relayOut copies the guest's console to Console.Out. If Out fails, the
// relay keeps reading and drops the bytes: a stalled socket would stall the
// guest's serial port.
func (b *Backend) relayOut(conn net.Conn) {
	buf := make([]byte, 32<<10)
	out := b.console.Out
	for {
		n, err := conn.Read(buf)
		if n > 0 && out != nil {
			if _, werr := out.Write(buf[:n]); werr != nil {
				out = nil
			}
		}
		if err != nil {
			return
		}
	}
}

// readMarkers reports each byte from the debug port.
func (b *Backend) readMarkers(conn net.Conn, start time.Time) {
	buf := make([]byte, 256)
	for {
		n, err := conn.Read(buf)
		if b.opts.OnBootMarker != nil {
			since := time.Since(start)
			for _, c := range buf[:n] {
				b.opts.OnBootMarker(c, since)
			}
		}
		if err != nil {
			return
		}
	}
}

// tailBuffer keeps the last bytes written to it, for QEMU's error message.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// LastLine is the last non-empty line written, without its line end.
func (t *tailBuffer) LastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastLine(t.buf)
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
