package guest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// lineWriter calls fn for each complete line written to it.
type lineWriter struct {
	fn  func(line string)
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.fn(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}

// isObjectLine reports whether a line of kbuild's quiet output announces
// one compiled or assembled object, e.g. "  CC      kernel/fork.o".
func isObjectLine(line string) bool {
	f := strings.Fields(line)
	if len(f) != 2 {
		return false
	}
	switch f[0] {
	case "CC", "AS":
		return strings.HasSuffix(f[1], ".o")
	}
	return false
}

// objectCounter shows a bar (or, without an expected total, a spinning
// counter) of the objects make has compiled.
type objectCounter struct {
	bar   *progressbar.ProgressBar
	known bool // the bar has a total (else it spins and counts)
	count int
}

func newObjectCounter(w io.Writer, description string, expected int) *objectCounter {
	max := int64(expected)
	if expected <= 0 {
		max = -1
	}
	// A log file or CI output is not redrawn in place: update it rarely
	// there, so a long build leaves a few lines, not thousands.
	throttle := 200 * time.Millisecond
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		throttle = 15 * time.Second
	}
	return &objectCounter{known: expected > 0, bar: progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("objects"),
		progressbar.OptionShowIts(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)}
}

func (c *objectCounter) add() {
	c.count++
	if c.known && int64(c.count) >= c.bar.GetMax64() {
		// More objects than last time: keep counting rather than
		// finishing early.
		c.bar.ChangeMax64(int64(c.count) + 1)
	}
	c.bar.Add(1)
}

func (c *objectCounter) finish() {
	c.bar.Finish()
	c.bar.Exit()
}
