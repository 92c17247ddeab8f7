package console

import (
	"bytes"
	"io"
	"strconv"
	"sync"
)

// StatusPrefix starts the line the default guest's init prints after a
// command given with `wisp run -- CMD` ends: "wisp-exit-status: N".
const StatusPrefix = "wisp-exit-status: "

// StatusFilter passes console output through to w, except the exit-status
// line, which it removes and remembers. Output is held back only while it
// could still be the start of that line, so interactive output is not
// delayed.
type StatusFilter struct {
	w io.Writer

	mu      sync.Mutex
	pending []byte // a line start that may become the status line
	atStart bool   // the next byte starts a line
	status  int
	found   bool
}

// NewStatusFilter wraps w.
func NewStatusFilter(w io.Writer) *StatusFilter { return &StatusFilter{w: w, atStart: true} }

// Status returns the command's exit status once the line was seen.
func (f *StatusFilter) Status() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.found
}

func (f *StatusFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []byte
	for _, b := range p {
		if f.pending != nil {
			f.pending = append(f.pending, b)
			f.decidePending(&out)
			continue
		}
		if f.atStart && b == StatusPrefix[0] {
			f.pending = []byte{b}
			f.atStart = false
			continue
		}
		out = append(out, b)
		f.atStart = b == '\n'
	}
	if len(out) == 0 {
		return len(p), nil
	}
	if _, err := f.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// decidePending looks at the held-back bytes after one more arrived: it
// keeps holding them while they can still become the status line, passes
// them on once they cannot, and swallows a complete status line.
func (f *StatusFilter) decidePending(out *[]byte) {
	pl := len(StatusPrefix)
	if len(f.pending) <= pl {
		if !bytes.HasPrefix([]byte(StatusPrefix), f.pending) {
			f.flushPending(out)
		}
		return
	}
	last := f.pending[len(f.pending)-1]
	if last != '\n' {
		numeric := (last >= '0' && last <= '9') || last == '\r' || (last == '-' && len(f.pending) == pl+1)
		if !numeric || len(f.pending) >= pl+16 {
			f.flushPending(out)
		}
		return
	}
	n, err := strconv.Atoi(string(bytes.TrimRight(f.pending[pl:], "\r\n")))
	if err != nil {
		f.flushPending(out)
		return
	}
	f.status, f.found = n, true
	f.pending = nil
	f.atStart = true
}

func (f *StatusFilter) flushPending(out *[]byte) {
	*out = append(*out, f.pending...)
	f.atStart = f.pending[len(f.pending)-1] == '\n'
	f.pending = nil
}

// Flush writes out anything still held back (at the end of the output).
func (f *StatusFilter) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		return nil
	}
	_, err := f.w.Write(f.pending)
	f.pending = nil
	return err
}
