package initproto

import (
	"bytes"
	"io"
	"strconv"
)

// The exit record init writes to the console when the command ends:
//
//	ESC ] wisp-exit-status ; <decimal 0-255> BEL
//
// It is shaped like a terminal OSC sequence so that, if something shows the
// console without stripping it, a terminal ignores it instead of printing a
// stray line. It needs no leading newline (init cannot know where the
// command left the cursor) and contains no '\n', so the tty's "\n" ->
// "\r\n" translation cannot alter it. The command's output reaches the host
// byte for byte: the filter only ever holds back bytes that could still
// begin a record.
const (
	exitRecordPrefix = "\x1b]wisp-exit-status;"
	exitRecordEnd    = '\a'
	maxStatusDigits  = 3
)

// ExitRecord formats the record for an exit status. Statuses outside 0-255
// are reported as 255.
func ExitRecord(status int) string {
	if status < 0 || status > 255 {
		status = 255
	}
	return exitRecordPrefix + strconv.Itoa(status) + string(exitRecordEnd)
}

type matchState int

const (
	matchNo matchState = iota
	matchPartial
	matchDone
)

// matchRecord tells whether h (which starts with ESC) is a whole record,
// the start of one, or neither.
func matchRecord(h []byte) (matchState, int) {
	if len(h) <= len(exitRecordPrefix) {
		if string(h) == exitRecordPrefix[:len(h)] {
			return matchPartial, 0
		}
		return matchNo, 0
	}
	if string(h[:len(exitRecordPrefix)]) != exitRecordPrefix {
		return matchNo, 0
	}
	digits := h[len(exitRecordPrefix):]
	for i, c := range digits {
		switch {
		case c >= '0' && c <= '9' && i < maxStatusDigits:
		case c == exitRecordEnd && i > 0 && i == len(digits)-1:
			n, err := strconv.Atoi(string(digits[:i]))
			if err != nil || n > 255 {
				return matchNo, 0
			}
			return matchDone, n
		default:
			return matchNo, 0
		}
	}
	return matchPartial, 0
}

// ExitFilter passes console output to an io.Writer and removes init's exit
// record from it, remembering the status. Everything after the record (the
// kernel's "reboot: Power down" line) is dropped: the command is over.
//
// Bytes that might begin a record (an ESC and what follows it, at most the
// record's length) are held back until they are known not to be one. The
// host should call Flush when the console goes idle for a moment (an
// interactive program may end its output with an ESC sequence) and when
// the guest has stopped.
type ExitFilter struct {
	dst    io.Writer
	held   []byte
	status int
	done   bool
}

// NewExitFilter returns a filter writing to dst.
func NewExitFilter(dst io.Writer) *ExitFilter {
	return &ExitFilter{dst: dst}
}

// Write filters p. It reports len(p) consumed unless dst fails.
func (f *ExitFilter) Write(p []byte) (int, error) {
	var out []byte
	for i := 0; i < len(p) && !f.done; i++ {
		out = f.feed(out, p[i])
	}
	if len(out) > 0 {
		if _, err := f.dst.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// feed processes one byte, appending what may be shown to out.
func (f *ExitFilter) feed(out []byte, b byte) []byte {
	if len(f.held) == 0 && b != exitRecordPrefix[0] {
		return append(out, b)
	}
	f.held = append(f.held, b)
	for len(f.held) > 0 {
		state, status := matchRecord(f.held)
		switch state {
		case matchPartial:
			return out
		case matchDone:
			f.done, f.status, f.held = true, status, nil
			return out
		}
		// The first held byte cannot start a record: show it, and look
		// for a record starting later in what was held.
		out = append(out, f.held[0])
		rest := f.held[1:]
		j := bytes.IndexByte(rest, exitRecordPrefix[0])
		if j < 0 {
			out = append(out, rest...)
			f.held = f.held[:0]
			return out
		}
		out = append(out, rest[:j]...)
		f.held = append(f.held[:0], rest[j:]...)
	}
	return out
}

// Flush writes out any held-back bytes; call it when output pauses and
// when the guest has stopped.
func (f *ExitFilter) Flush() error {
	if len(f.held) == 0 || f.done {
		return nil
	}
	held := f.held
	f.held = nil
	_, err := f.dst.Write(held)
	return err
}

// Status returns the command's exit status and whether the record was seen.
func (f *ExitFilter) Status() (int, bool) {
	return f.status, f.done
}
