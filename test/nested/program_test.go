package nested

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunProgram boots the nested VM with the host's static busybox as
// the program: it must see its arguments, a file and a host tool put in
// for it, and its output and exit code must come back.
func TestRunProgram(t *testing.T) {
	if os.Getenv(EnvMode) == "off" || os.Getenv(EnvMode) == "0" {
		t.Skipf("SKIP: %s=off", EnvMode)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: no busybox here to run in the nested VM (apt-get install busybox-static)")
	}
	if out, _ := exec.Command("ldd", busybox).CombinedOutput(); !strings.Contains(string(out), "not a dynamic executable") {
		t.Skipf("SKIP: %s is not static (apt-get install busybox-static)", busybox)
	}
	file := filepath.Join(t.TempDir(), "greeting")
	require.NoError(t, os.WriteFile(file, []byte("hello from the host\n"), 0o644))

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var lines []string
	code, err := RunProgram(ctx, Program{
		Binary:    busybox,
		Args:      []string{"sh", "-c", "cat /files/greeting; as --version; echo inside=$" + EnvInside + "; exit 3"},
		Files:     map[string]string{"/files/greeting": file},
		HostTools: []string{"as"},
		Timeout:   5 * time.Minute,
	}, func(line string) { lines = append(lines, line) })
	if errors.Is(err, ErrNoQEMU) || errors.Is(err, ErrNoKernel) {
		t.Skipf("SKIP: no nested VM here: %v", err)
	}
	require.NoError(t, err)
	out := strings.Join(lines, "\n")
	assert.Equal(t, 3, code, out)
	assert.Contains(t, out, "hello from the host")
	assert.Contains(t, out, "GNU assembler", "the host tool runs with its libraries")
	assert.Contains(t, out, "inside=1")
	assert.NotContains(t, out, "WISP-NESTED", "markers are not the program's output")
}
