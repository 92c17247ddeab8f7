// Package kconfig holds wisp's microVM kernel config fragment and reads
// and checks Linux .config files.
package kconfig

import (
	"bufio"
	_ "embed" // for the fragment
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrMismatch: a .config does not hold what the fragment asked for.
var ErrMismatch = errors.New("kernel .config does not match the fragment")

//go:embed microvm.config
var microVM string

// MicroVM returns the fragment for wisp's minimal kernel (microvm.config),
// to be merged on top of `make tinyconfig`.
func MicroVM() string { return microVM }

// Config maps option names (with the CONFIG_ prefix) to values as they
// appear in a .config: "y", "m", "\"string\"", "123". An option written as
// "# CONFIG_X is not set" has the value "n".
type Config map[string]string

// Parse reads .config or fragment text. Lines other than assignments and
// "is not set" markers are comments.
func Parse(text string) (Config, error) {
	c := Config{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		switch {
		case s == "":
		case strings.HasPrefix(s, "#"):
			rest := strings.TrimSpace(strings.TrimPrefix(s, "#"))
			if name, ok := strings.CutSuffix(rest, " is not set"); ok && strings.HasPrefix(name, "CONFIG_") && validName(name) {
				c[name] = "n"
			}
		default:
			name, value, ok := strings.Cut(s, "=")
			if !ok || !strings.HasPrefix(name, "CONFIG_") || !validName(name) {
				return nil, fmt.Errorf("kconfig: line %d: not an option assignment: %q", line, s)
			}
			c[name] = value
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kconfig: %w", err)
	}
	return c, nil
}

func validName(name string) bool {
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// Verify checks that every option of want has the same value in got. An
// option absent from got counts as "n" (Kconfig omits options whose
// dependencies are unmet). The error wraps ErrMismatch and names every
// option that differs, in name order.
func Verify(want, got Config) error {
	var bad []string
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			g = "n"
		}
		if g != w {
			shown := g
			if !ok {
				shown = "absent"
			}
			bad = append(bad, fmt.Sprintf("%s: want %s, got %s", name, w, shown))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("%w (Kconfig dropped or changed them; check their dependencies): %s", ErrMismatch, strings.Join(bad, "; "))
}
