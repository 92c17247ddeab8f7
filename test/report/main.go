// Command report turns `go test -json` into what a person reading CI output
// needs: each package's closing line, the whole output of every failed
// test, the reason of every skipped test (tests here skip only with a
// printed reason, and that reason should be seen), and a closing count.
//
//	go test -json ./... | go run ./test/report
//
// It exits non-zero when any test or package failed, so a pipeline can use
// its status.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type key struct{ pkg, test string }

type counts struct{ passed, failed, skipped int }

func main() {
	c, err := report(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(2)
	}
	if c.failed > 0 {
		os.Exit(1)
	}
}

func report(in io.Reader, out io.Writer) (counts, error) {
	var c counts
	outputs := map[key][]string{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	pkgFailed := false
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			// Build errors and the like come through as plain text.
			fmt.Fprintln(out, string(line))
			continue
		}
		k := key{ev.Package, ev.Test}
		switch ev.Action {
		case "output":
			if ev.Test == "" {
				// Package-level lines: keep the closing ones.
				if isClosing(ev.Output) {
					fmt.Fprint(out, ev.Output)
				} else {
					outputs[k] = append(outputs[k], ev.Output)
				}
				continue
			}
			outputs[k] = append(outputs[k], ev.Output)
		case "pass":
			if ev.Test != "" {
				c.passed++
			}
			delete(outputs, k)
		case "skip":
			if ev.Test != "" {
				c.skipped++
				fmt.Fprintf(out, "SKIP %s %s: %s\n", ev.Package, ev.Test, skipReason(outputs[k]))
			}
			delete(outputs, k)
		case "fail":
			if ev.Test != "" {
				c.failed++
			} else {
				pkgFailed = true
			}
			fmt.Fprintf(out, "=== FAIL %s %s\n", ev.Package, ev.Test)
			for _, o := range outputs[k] {
				fmt.Fprint(out, o)
			}
			delete(outputs, k)
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if pkgFailed && c.failed == 0 {
		c.failed++ // a package that failed to build or crashed
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", c.passed, c.failed, c.skipped)
	return c, nil
}

func isClosing(s string) bool {
	return strings.HasPrefix(s, "ok  \t") || strings.HasPrefix(s, "FAIL\t") || strings.HasPrefix(s, "?   \t")
}

// skipReason is what the test printed, without go test's own RUN/SKIP
// framing lines.
func skipReason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason printed)"
	}
	return strings.Join(parts, " | ")
}
