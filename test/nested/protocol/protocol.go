// Package protocol is what the nested-VM test harness (test/nested) and
// the init program it boots (test/nested/nestinit) agree on: the plan the
// harness writes into the initramfs, and the marker lines init prints on
// the console around each test binary's output.
package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PlanPath is where the plan lies inside the initramfs.
const PlanPath = "/nested.json"

// Plan tells init what to do.
type Plan struct {
	// Modules are kernel modules (paths in the initramfs) that init loads
	// in order before it looks for /dev/kvm. A module that is already
	// there (built in, EEXIST) is fine.
	Modules []string `json:"modules"`
	// Env is added to every test binary's environment ("KEY=value").
	Env []string `json:"env"`
	// Binaries run one after another.
	Binaries []Binary `json:"binaries"`
}

// Binary is one test binary (go test -c) to run.
type Binary struct {
	Name string   `json:"name"` // the package, as the harness reports it
	Path string   `json:"path"` // the binary in the initramfs
	Dir  string   `json:"dir"`  // working directory (holds the package's testdata)
	Args []string `json:"args"` // -test.v and what the harness forwards
	// Timeout is when init gives up on the binary: it sends SIGQUIT (a Go
	// program prints every goroutine's stack), then SIGKILL. It backs up
	// the binary's own -test.timeout. 0: no limit.
	Timeout time.Duration `json:"timeout"`
}

// Marker lines start with Prefix at the beginning of a console line.
const Prefix = "WISP-NESTED "

// Marker kinds.
const (
	KindInfo  = "INFO"  // progress: modules loaded, /dev/kvm found
	KindKVM   = "KVM"   // /dev/kvm works; the rest is a detail
	KindBegin = "BEGIN" // a test binary starts; the rest is its name
	KindEnd   = "END"   // a test binary ended: "<name> exit=<code>"
	KindError = "ERROR" // init could not go on; the rest says why
	KindDone  = "DONE"  // init ran everything and powers off next
)

// Begin is the line init prints before running a binary.
func Begin(name string) string { return Prefix + KindBegin + " " + name }

// End is the line init prints after a binary exited with code (-1: it
// could not be run, or was killed by a signal).
func End(name string, code int) string {
	return fmt.Sprintf("%s%s %s exit=%d", Prefix, KindEnd, name, code)
}

// Line formats a marker of another kind.
func Line(kind, text string) string { return Prefix + kind + " " + text }

// Done is the last line init prints.
func Done() string { return Prefix + KindDone }

// Marker is a parsed marker line.
type Marker struct {
	Kind string
	Text string // for END: the binary's name
	Code int    // for END: its exit code
}

// ParseLine reports whether line is a marker and parses it. Trailing
// carriage returns (the serial console's \r\n) are ignored.
func ParseLine(line string) (Marker, bool, error) {
	line = strings.TrimRight(line, "\r")
	rest, ok := strings.CutPrefix(line, Prefix)
	if !ok {
		return Marker{}, false, nil
	}
	kind, text, _ := strings.Cut(rest, " ")
	m := Marker{Kind: kind, Text: text}
	switch kind {
	case KindInfo, KindKVM, KindBegin, KindError, KindDone:
	case KindEnd:
		i := strings.LastIndex(text, " exit=")
		if i < 0 {
			return Marker{}, true, fmt.Errorf("marker %q: no exit code", line)
		}
		code, err := strconv.Atoi(text[i+len(" exit="):])
		if err != nil {
			return Marker{}, true, fmt.Errorf("marker %q: exit code: %w", line, err)
		}
		m.Text, m.Code = text[:i], code
	default:
		return Marker{}, true, fmt.Errorf("marker %q: unknown kind %q", line, kind)
	}
	return m, true, nil
}
