package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeCommands returns the two commands README.md opens with.
func readmeCommands(t *testing.T, root string) (run, test string) {
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	var cmds []string
	inBlock := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			if inBlock {
				break
			}
			inBlock = true
			continue
		}
		if inBlock {
			if cmd, _, _ := strings.Cut(line, "#"); strings.TrimSpace(cmd) != "" {
				cmds = append(cmds, strings.TrimSpace(cmd))
			}
		}
	}
	require.Len(t, cmds, 2, "README.md opens with a block of two commands")
	return cmds[0], cmds[1]
}

// TestReadmeFirstCommand runs the README's first command from a clean
// clone with an empty cache, under a terminal (tmux), and uses the shell it
// opens: the path a new user takes.
func TestReadmeFirstCommand(t *testing.T) {
	requireQEMU(t)
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	require.NoError(t, err)
	clone := filepath.Join(t.TempDir(), "wisp")
	out, err := exec.Command("git", "clone", "-q", strings.TrimSpace(string(root)), clone).CombinedOutput()
	require.NoError(t, err, string(out))
	first, _ := readmeCommands(t, clone)

	cache := t.TempDir()
	exitFile := filepath.Join(cache, "exit")
	script := "cd " + clone + " && WISP_CACHE=" + cache + " " + first + "; echo $? > " + exitFile
	term := newTmux(t, "wisp-readme-"+filepath.Base(cache), script)

	// The first run fetches Debian's kernel and builds the initramfs.
	// busybox's prompt is "wisp:/# " (the guest's hostname); tmux trims
	// the trailing space.
	prompt := regexp.MustCompile(`(?m)^wisp:\S*# ?$`)
	term.waitFor("the guest's shell prompt", 10*time.Minute, prompt.MatchString)
	term.send("uname -a")
	term.waitFor("uname's output", time.Minute, func(s string) bool { return strings.Contains(s, "Linux wisp ") })
	term.send("poweroff -f")
	term.waitFor("wisp to exit", 2*time.Minute, func(string) bool {
		_, err := os.Stat(exitFile)
		return err == nil
	})
	code, err := os.ReadFile(exitFile)
	require.NoError(t, err)
	assert.Equal(t, "0", strings.TrimSpace(string(code)), "make run exits 0 after poweroff; screen:\n%s", term.screen())
}
