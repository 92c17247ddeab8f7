package nested

import (
	"strings"

	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

// Outcome is how an inner test ended.
type Outcome string

// Outcomes, as go test prints them.
const (
	Pass Outcome = "PASS"
	Fail Outcome = "FAIL"
	Skip Outcome = "SKIP"
)

// TestResult is one top-level test of an inner binary.
type TestResult struct {
	Name    string
	Outcome Outcome
	Output  []string // its lines between "=== RUN" and "--- <outcome>"
}

// BinaryResult is one inner test binary's run.
type BinaryResult struct {
	Name   string
	Ended  bool // its END marker was seen
	Exit   int
	Tests  []TestResult
	Output []string // every line it printed
}

// Failed lists the tests that failed.
func (b *BinaryResult) Failed() []TestResult {
	var failed []TestResult
	for _, tr := range b.Tests {
		if tr.Outcome == Fail {
			failed = append(failed, tr)
		}
	}
	return failed
}

// Results collects a nested run from its console lines.
type Results struct {
	KVM      string   // the KVM marker's text; "" if /dev/kvm was never confirmed
	Errors   []string // ERROR markers and malformed marker lines
	Binaries []*BinaryResult
	Done     bool     // init's DONE marker was seen
	Tail     []string // the last lines, for messages
	// KernelCrash is the nested kernel's first oops line: the emulated
	// CPU under the tests failed, not the tests.
	KernelCrash string

	current *BinaryResult
	test    string              // current top-level test of current
	pending map[string][]string // output of running top-level tests
}

const tailLines = 30

// Line takes the next console line.
func (r *Results) Line(line string) {
	line = strings.TrimRight(line, "\r")
	if r.KernelCrash == "" && kernelCrashed(line) {
		r.KernelCrash = line
	}
	r.Tail = append(r.Tail, line)
	if len(r.Tail) > tailLines {
		r.Tail = r.Tail[len(r.Tail)-tailLines:]
	}
	m, ok, err := protocol.ParseLine(line)
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return
	}
	if !ok {
		if r.current != nil {
			r.testLine(line)
		}
		return
	}
	switch m.Kind {
	case protocol.KindKVM:
		r.KVM = m.Text
	case protocol.KindError:
		r.Errors = append(r.Errors, m.Text)
	case protocol.KindBegin:
		r.current = &BinaryResult{Name: m.Text}
		r.Binaries = append(r.Binaries, r.current)
		r.test, r.pending = "", map[string][]string{}
	case protocol.KindEnd:
		if r.current != nil && r.current.Name == m.Text {
			r.current.Ended, r.current.Exit = true, m.Code
		}
		r.current = nil
	case protocol.KindDone:
		r.Done = true
	}
}

// testLine follows go test -v output: "=== RUN/CONT/NAME X" says whose
// output follows, "--- PASS: X (0.00s)" at the start of a line ends a
// top-level test (subtests' results are indented).
func (r *Results) testLine(line string) {
	b := r.current
	b.Output = append(b.Output, line)
	for _, prefix := range []string{"=== RUN ", "=== CONT ", "=== NAME "} {
		if name, ok := strings.CutPrefix(line, prefix); ok {
			name = strings.TrimSpace(name)
			top, _, _ := strings.Cut(name, "/")
			r.test = top
			if prefix == "=== RUN " && top == name {
				r.pending[top] = nil
			}
			return
		}
	}
	if strings.HasPrefix(line, "=== PAUSE ") {
		return
	}
	for _, o := range []Outcome{Pass, Fail, Skip} {
		if rest, ok := strings.CutPrefix(line, "--- "+string(o)+": "); ok {
			name, _, _ := strings.Cut(rest, " ")
			b.Tests = append(b.Tests, TestResult{Name: name, Outcome: o, Output: r.pending[name]})
			delete(r.pending, name)
			if r.test == name {
				r.test = ""
			}
			return
		}
	}
	if r.test != "" {
		r.pending[r.test] = append(r.pending[r.test], line)
	}
}

// Running names the binary and test that were running when the console
// stopped, for messages.
// kernelCrashed tells a line of the nested kernel's own oops or panic.
func kernelCrashed(line string) bool {
	for _, mark := range []string{"] BUG: ", "] Oops: ", "] Kernel panic - not syncing"} {
		if strings.Contains(line, mark) {
			return true
		}
	}
	return false
}

func (r *Results) Running() string {
	if r.current == nil {
		return "no test binary"
	}
	if r.test != "" {
		return r.current.Name + " " + r.test
	}
	return r.current.Name
}

// Merge takes a retry's results: each binary the retry ran replaces the
// first run's unfinished one, and the retry's verdicts on the VM as a
// whole (KVM, DONE, errors, tail) replace the first run's.
func (r *Results) Merge(retry *Results) {
	for _, b := range retry.Binaries {
		replaced := false
		for i, old := range r.Binaries {
			if old.Name == b.Name {
				r.Binaries[i], replaced = b, true
			}
		}
		if !replaced {
			r.Binaries = append(r.Binaries, b)
		}
	}
	r.KVM, r.Done, r.Errors, r.Tail, r.KernelCrash = retry.KVM, retry.Done, retry.Errors, retry.Tail, retry.KernelCrash
	r.current, r.test = retry.current, retry.test
}
