// Package progress shows the stages of an image build: on a terminal a
// spinner (or a bar, for stages that know their fraction done) with the
// stage's latest note and elapsed time, redrawn in place; elsewhere (CI
// logs, pipes) one line when a stage starts, its notes at most every few
// seconds, and one line when it ends. It uses schollz/progressbar, like
// the guest kit's build counters.
package progress

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// logNoteEvery throttles notes on a non-terminal.
const logNoteEvery = 10 * time.Second

// Stages numbers and shows the stages of one job.
type Stages struct {
	w     io.Writer
	tty   bool
	total int
	n     int
}

// New shows total stages on w (nil: nothing is shown).
func New(w io.Writer, total int) *Stages {
	if w == nil {
		w = io.Discard
	}
	f, ok := w.(*os.File)
	return &Stages{w: w, tty: ok && term.IsTerminal(int(f.Fd())), total: total}
}

// Stage is one running stage.
type Stage struct {
	s        *Stages
	name     string
	start    time.Time
	bar      *progressbar.ProgressBar
	lastNote time.Time
}

// Start begins the next stage.
func (s *Stages) Start(name string) *Stage {
	s.n++
	st := &Stage{s: s, name: fmt.Sprintf("[%d/%d] %s", s.n, s.total, name), start: time.Now()}
	if s.tty {
		st.bar = progressbar.NewOptions64(100,
			progressbar.OptionSetWriter(s.w),
			progressbar.OptionSetDescription(st.name),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(20),
			progressbar.OptionFullWidth(),
		)
		// Until a stage reports a fraction, it spins.
		st.bar.ChangeMax64(-1)
		st.bar.RenderBlank()
	} else {
		fmt.Fprintf(s.w, "wisp: %s\n", st.name)
	}
	return st
}

// Note shows what the stage is doing now.
func (st *Stage) Note(note string) {
	if st.bar != nil {
		st.bar.Describe(st.name + ": " + note)
		return
	}
	if time.Since(st.lastNote) < logNoteEvery {
		return
	}
	st.lastNote = time.Now()
	fmt.Fprintf(st.s.w, "wisp: %s: %s\n", st.name, note)
}

// Percent shows how far the stage is, 0 to 100.
func (st *Stage) Percent(p float64) {
	if st.bar == nil {
		return
	}
	if st.bar.GetMax64() != 100 {
		st.bar.ChangeMax64(100)
	}
	st.bar.Set64(int64(p))
}

// Done ends the stage, saying how it went.
func (st *Stage) Done(err error) {
	took := time.Since(st.start).Round(100 * time.Millisecond)
	if st.bar != nil {
		st.bar.Exit()
		fmt.Fprint(st.s.w, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintf(st.s.w, "wisp: %s: failed after %v\n", st.name, took)
		return
	}
	fmt.Fprintf(st.s.w, "wisp: %s: done in %v\n", st.name, took)
}

// Writer returns an io.Writer whose lines become notes, for tools whose
// output says what they do.
func (st *Stage) Writer(filter func(line string) (note string, ok bool)) io.Writer {
	return &lineWriter{fn: func(line string) {
		if note, ok := filter(line); ok {
			st.Note(note)
		}
	}}
}

// lineWriter calls fn for each complete line written to it; carriage
// returns end lines too (qemu-img -p redraws with them).
type lineWriter struct {
	fn  func(line string)
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' || c == '\r' {
			if len(l.buf) > 0 {
				l.fn(string(l.buf))
			}
			l.buf = l.buf[:0]
			continue
		}
		if len(l.buf) < 4096 {
			l.buf = append(l.buf, c)
		}
	}
	return len(p), nil
}
