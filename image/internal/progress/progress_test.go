package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestStagesOnALog(t *testing.T) {
	var buf bytes.Buffer
	s := New(&buf, 2)
	st := s.Start("first")
	st.Note("one")
	st.Note("two (throttled)")
	st.Percent(50)
	st.Done(nil)
	s.Start("second").Done(errors.New("x"))
	out := buf.String()
	assert.Contains(t, out, "wisp: [1/2] first\n")
	assert.Contains(t, out, "wisp: [1/2] first: one\n")
	assert.NotContains(t, out, "throttled")
	assert.Contains(t, out, "wisp: [1/2] first: done in ")
	assert.Contains(t, out, "wisp: [2/2] second: failed after ")
}

func TestWriterSplitsLines(t *testing.T) {
	var notes []string
	lw := &lineWriter{fn: func(l string) { notes = append(notes, l) }}
	lw.Write([]byte("I: a\nI: b"))
	lw.Write([]byte("c\r  (50.00/100%)\r\n"))
	assert.Equal(t, []string{"I: a", "I: bc", "  (50.00/100%)"}, notes)
	lw.Write([]byte(strings.Repeat("x", 10000) + "\n"))
	assert.Len(t, notes[3], 4096, "long lines are cut")
}

func TestNilWriter(t *testing.T) {
	New(nil, 1).Start("quiet").Done(nil)
}
