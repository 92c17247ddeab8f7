package nested

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
)

// TestPackage is one entry of Packages() as go list sees it.
type TestPackage struct {
	Pattern    string // as in Packages(), e.g. "./vmm/kvmvm"
	ImportPath string
	Dir        string // source directory; "" if the package does not exist
	Name       string // module-relative path, e.g. "vmm/kvmvm"
	HasTests   bool
	Problem    string // why it cannot be built, from go list ("" if none)
}

// SubtestName is the package's name as a subtest of the outer test: "/"
// would start a new level there, so it becomes ".".
func (p TestPackage) SubtestName() string { return strings.ReplaceAll(p.Name, "/", ".") }

// BinaryName is the file name of the package's test binary.
func (p TestPackage) BinaryName() string { return p.SubtestName() + ".test" }

// goTool finds the go command: the one in PATH, else the one of the Go
// installation that built this test.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("go command not found in PATH or %s: %w", p, err)
	}
	return p, nil
}

// moduleRoot is the directory of go.mod, asked of the go command.
func moduleRoot(ctx context.Context, gotool string) (string, error) {
	out, err := exec.CommandContext(ctx, gotool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// ListPackages asks go list about patterns (relative to root), keeping
// those whose SubtestName matches filter ("" matches all).
func ListPackages(ctx context.Context, gotool, root string, patterns []string, filter string) ([]TestPackage, error) {
	var re *regexp.Regexp
	if filter != "" {
		var err error
		if re, err = regexp.Compile(filter); err != nil {
			return nil, fmt.Errorf("package filter %q: %w", filter, err)
		}
	}
	const format = "{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}\t{{with .Error}}{{.Err}}{{end}}"
	cmd := exec.CommandContext(ctx, gotool, append([]string{"list", "-e", "-f", format}, patterns...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w\n%s", strings.Join(patterns, " "), err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(patterns) {
		return nil, fmt.Errorf("go list: %d lines for %d patterns:\n%s", len(lines), len(patterns), out)
	}
	var pkgs []TestPackage
	for i, line := range lines {
		p, err := parseListLine(patterns[i], line)
		if err != nil {
			return nil, err
		}
		if re == nil || re.MatchString(p.SubtestName()) {
			pkgs = append(pkgs, p)
		}
	}
	return pkgs, nil
}

func parseListLine(pattern, line string) (TestPackage, error) {
	f := strings.Split(line, "\t")
	if len(f) != 5 {
		return TestPackage{}, fmt.Errorf("go list: unexpected line %q", line)
	}
	tests, err1 := strconv.Atoi(f[2])
	xtests, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return TestPackage{}, fmt.Errorf("go list: unexpected line %q", line)
	}
	return TestPackage{
		Pattern:    pattern,
		ImportPath: f[0],
		Dir:        f[1],
		Name:       strings.TrimPrefix(filepath.ToSlash(filepath.Clean(pattern)), "./"),
		HasTests:   tests+xtests > 0,
		Problem:    f[4],
	}, nil
}

// BuildTestBinary runs `go test -c` for p with CGO_ENABLED=0, so the
// binary is static and runs in an initramfs without a libc.
func BuildTestBinary(ctx context.Context, gotool, root string, p TestPackage, out string) error {
	cmd := exec.CommandContext(ctx, gotool, "test", "-c", "-o", out, p.Pattern)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c %s: %w\n%s", p.Pattern, err, output)
	}
	if _, err := os.Stat(out); err != nil {
		return fmt.Errorf("go test -c %s made no binary: %w", p.Pattern, err)
	}
	return nil
}

// BuildStatic runs `go build` for a main package with CGO_ENABLED=0.
func BuildStatic(ctx context.Context, gotool, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, gotool, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, output)
	}
	return nil
}

// SourceFiles lists the module's own files that the test binaries of
// patterns (and their dependencies in this module) are built from: Go,
// assembly and embedded files, plus go.mod and go.sum.
//
// The outer test stats each of them for one reason: go test caches a
// test's result keyed by the files the test process itself opened or
// stat'ed, and the inner binaries are built by a child go command that
// go test cannot see. Without this a changed inner test would be "(cached)".
func SourceFiles(ctx context.Context, gotool, root string, patterns []string) ([]string, error) {
	const format = "{{if and .Module .Module.Main}}{{.Dir}}" +
		"{{range .GoFiles}}|{{.}}{{end}}{{range .TestGoFiles}}|{{.}}{{end}}" +
		"{{range .XTestGoFiles}}|{{.}}{{end}}{{range .SFiles}}|{{.}}{{end}}" +
		"{{range .EmbedFiles}}|{{.}}{{end}}{{end}}"
	cmd := exec.CommandContext(ctx, gotool, append([]string{"list", "-deps", "-test", "-e", "-f", format}, patterns...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w\n%s", strings.Join(patterns, " "), err, stderr.String())
	}
	seen := map[string]bool{}
	files := []string{filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum")}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Split(line, "|")
		if len(fields) < 2 {
			continue
		}
		for _, f := range fields[1:] {
			// Generated test mains live in the build cache (absolute
			// paths): they follow from the sources.
			if filepath.IsAbs(f) {
				continue
			}
			p := filepath.Join(fields[0], f)
			if !seen[p] {
				seen[p] = true
				files = append(files, p)
			}
		}
	}
	return files, nil
}
