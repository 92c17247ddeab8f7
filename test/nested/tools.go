package nested

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostTools are host programs copied into the nested VM, with the shared
// libraries they need, because inner tests run them: some KVM tests
// assemble their own small guests with GNU as and objcopy.
func HostTools() []string { return []string{"as", "ld", "objcopy"} }

// addHostTools puts each tool found on the host at /usr/bin/<name> and
// its libraries (as ldd lists them, the dynamic loader included) at the
// same paths inside. It returns a note for each tool it could not find.
func addHostTools(ctx context.Context, ird *Initramfs, tools []string) (notes []string, err error) {
	added := map[string]bool{}
	for _, tool := range tools {
		path, err := exec.LookPath(tool)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s not found on the host: inner tests that run it will skip", tool))
			continue
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, fmt.Errorf("host tool %s: %w", tool, err)
		}
		if err := ird.AddFile("/usr/bin/"+tool, real); err != nil {
			return nil, err
		}
		libs, err := sharedLibraries(ctx, real)
		if err != nil {
			return nil, fmt.Errorf("host tool %s: %w", tool, err)
		}
		for _, lib := range libs {
			if added[lib] {
				continue
			}
			added[lib] = true
			if err := ird.AddFile(lib, lib); err != nil {
				return nil, err
			}
		}
	}
	return notes, nil
}

// sharedLibraries asks ldd which libraries binary loads.
func sharedLibraries(ctx context.Context, binary string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", binary).CombinedOutput()
	if err != nil {
		// ldd fails on a static binary, which needs nothing.
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w\n%s", binary, err, out)
	}
	return parseLDD(string(out))
}

// parseLDD takes the paths from ldd's output: "name => /path (0x...)"
// lines and the loader's own "/path (0x...)" line; the vDSO has no file.
func parseLDD(out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd: %s", line)
		}
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		path, _, _ := strings.Cut(line, " (")
		if strings.HasPrefix(path, "/") {
			libs = append(libs, path)
		}
	}
	return libs, nil
}
