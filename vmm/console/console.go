// Package console connects a guest's serial console to the user: the
// terminal in raw mode (with an escape key to quit), a log file, or nothing.
package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/term"
)

// EscapeByte is Ctrl-A. Ctrl-A x quits; Ctrl-A Ctrl-A sends one Ctrl-A.
const EscapeByte = 0x01

// Console is an attached console. In and Out are what a backend uses; Quit
// is closed when the user types the escape sequence to quit.
type Console struct {
	In   io.Reader
	Out  io.Writer
	Quit <-chan struct{}

	isTerm  bool // stdin is a terminal that Raw switches
	rawFD   int
	raw     atomic.Bool
	restore func() error
	closers []io.Closer
	once    sync.Once
}

// Close restores the terminal and closes any log file. Safe to call twice.
func (c *Console) Close() error {
	var errs []error
	c.once.Do(func() {
		if c.restore != nil {
			errs = append(errs, c.restore())
			c.raw.Store(false)
		}
		for _, cl := range c.closers {
			errs = append(errs, cl.Close())
		}
	})
	return errors.Join(errs...)
}

// Stdio attaches the console to stdin/stdout. When stdin is a terminal,
// Raw later puts it in raw mode so the guest sees every key (Ctrl-C
// included) and the escape sequence Ctrl-A x quits; until then the
// terminal stays as it is, so what wisp prints while it sets the VM up
// reads normally. A stdin that is no terminal is passed through as is.
func Stdio(stdin *os.File, stdout io.Writer) (*Console, error) {
	quit := make(chan struct{})
	c := &Console{Out: stdout, Quit: quit}
	fd := int(stdin.Fd())
	if !term.IsTerminal(fd) {
		c.In = stdin
		return c, nil
	}
	c.isTerm, c.rawFD = true, fd
	c.In = NewEscapeReader(stdin, quit)
	return c, nil
}

// Raw puts a terminal console in raw mode (Close restores it); for other
// consoles it does nothing. In raw mode the terminal no longer turns \n
// into \r\n: the guest's serial driver does that itself, and wisp's own
// lines go through a writer that does (see IsRaw).
func (c *Console) Raw() error {
	if !c.isTerm || c.restore != nil {
		return nil
	}
	old, err := term.MakeRaw(c.rawFD)
	if err != nil {
		return fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	c.restore = func() error { return term.Restore(c.rawFD, old) }
	c.raw.Store(true)
	return nil
}

// IsRaw reports whether the terminal is in raw mode now.
func (c *Console) IsRaw() bool { return c.raw.Load() }

// File sends console output to path (created or truncated) and takes no input.
func File(path string) (*Console, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("console file: %w", err)
	}
	return &Console{Out: f, Quit: make(chan struct{}), closers: []io.Closer{f}}, nil
}

// None discards console output and takes no input.
func None() *Console {
	return &Console{Out: io.Discard, Quit: make(chan struct{})}
}

// EscapeReader passes bytes through, except that it interprets Ctrl-A
// sequences: Ctrl-A x closes quit and ends the stream, Ctrl-A Ctrl-A yields
// one Ctrl-A, and Ctrl-A followed by anything else passes both bytes on.
type EscapeReader struct {
	r       io.Reader
	quit    chan struct{}
	pending bool // the previous read ended with Ctrl-A
	done    bool
	once    sync.Once
}

// NewEscapeReader wraps r; quit is closed when Ctrl-A x is read.
func NewEscapeReader(r io.Reader, quit chan struct{}) *EscapeReader {
	return &EscapeReader{r: r, quit: quit}
}

func (e *EscapeReader) Read(p []byte) (int, error) {
	if e.done {
		return 0, io.EOF
	}
	if len(p) < 2 {
		// Room for "Ctrl-A + byte" keeps the logic simple.
		buf := make([]byte, 2)
		n, err := e.Read(buf)
		if n > len(p) {
			n = len(p) // unreachable in practice: a 1-byte reader gets 1 byte at a time
		}
		copy(p, buf[:n])
		return n, err
	}
	in := make([]byte, len(p)/2)
	n, err := e.r.Read(in)
	out := 0
	for _, b := range in[:n] {
		if e.pending {
			e.pending = false
			switch b {
			case 'x', 'X':
				e.done = true
				e.once.Do(func() { close(e.quit) })
				return out, io.EOF
			case EscapeByte:
				p[out] = EscapeByte
				out++
			default:
				p[out], p[out+1] = EscapeByte, b
				out += 2
			}
			continue
		}
		if b == EscapeByte {
			e.pending = true
			continue
		}
		p[out] = b
		out++
	}
	return out, err
}
