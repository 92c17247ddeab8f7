package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildWisp builds the wisp binary into a fresh directory, for a package's
// TestMain; the returned function removes it.
func BuildWisp() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "wisp-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "wisp")
	build := exec.Command("go", "build", "-o", bin, "github.com/wisp-vmm/wisp/cmd/wisp")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build wisp: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// RequireQEMU skips, saying why, a test that boots Linux under QEMU TCG
// where it cannot (-short, or no QEMU).
func RequireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP (-short): boots Linux under QEMU TCG")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("SKIP: qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
	}
}
