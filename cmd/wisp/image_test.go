package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

// TestImageBadInput checks `wisp image` rejects mistakes before building:
// one line naming the flag and the fix, exit code 2, nothing written (the
// cache is pointed at an empty directory that must stay empty).
func TestImageBadInput(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	full := filepath.Join(dir, "full")
	require.NoError(t, os.Mkdir(full, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o644))
	notKey := filepath.Join(dir, "id_ed25519")
	require.NoError(t, os.WriteFile(notKey, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"), 0o600))
	out := filepath.Join(dir, "vm")
	env := map[string]string{"WISP_CACHE": cacheDir}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no distribution", []string{"image", "build", "-o", out}, "name the distribution"},
		{"other distribution", []string{"image", "build", "fedora", "-o", out}, `unknown distribution "fedora"`},
		{"no output", []string{"image", "build", "debian"}, "-o is required"},
		{"unknown release", []string{"image", "build", "debian", "-o", out, "--release", "buster"}, `--release "buster": unknown Debian release; use one of bullseye, bookworm, trixie`},
		{"size unit", []string{"image", "build", "debian", "-o", out, "--size", "4Q"}, "--size: size \"4Q\": unknown unit"},
		{"size zero", []string{"image", "build", "debian", "-o", out, "--size", "0"}, "--size 0"},
		{"size tiny", []string{"image", "build", "debian", "-o", out, "--size", "4M"}, "--size 4M is too small"},
		{"output not empty", []string{"image", "build", "debian", "-o", full}, "is not empty (it holds x)"},
		{"output parent missing", []string{"image", "build", "debian", "-o", filepath.Join(dir, "a", "b")}, "create it first"},
		{"user without key", []string{"image", "build", "debian", "-o", out, "--user", "alice"}, "--user alice needs --ssh-key FILE"},
		{"private key", []string{"image", "build", "debian", "-o", out, "--ssh-key", notKey}, "give the .pub file"},
		{"missing key file", []string{"image", "build", "debian", "-o", out, "--ssh-key", filepath.Join(dir, "nope.pub")}, "no such file"},
		{"bad package", []string{"image", "build", "debian", "-o", out, "--packages", "vim,-y"}, `"-y" is not a Debian package name`},
		{"bad format", []string{"image", "build", "debian", "-o", out, "--format", "vdi"}, "--format: format \"vdi\": use raw or qcow2"},
		{"convert args", []string{"image", "convert", "in.raw"}, "give IN and OUT"},
		{"convert missing input", []string{"image", "convert", filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.qcow2")}, "IN " + filepath.Join(dir, "in.raw")},
		{"convert bad format", []string{"image", "convert", notKey, filepath.Join(dir, "out"), "--format", "vmdk"}, "use raw or qcow2"},
		{"convert existing output", []string{"image", "convert", notKey, notKey}, "already exists: remove it or pick another name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, env, tt.args...)
			assert.Equal(t, vmm.CodeUsage, code, stderr)
			assert.Contains(t, stderr, tt.want)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			assert.NoDirExists(t, out)
			assert.NoDirExists(t, cacheDir)
		})
	}
}

func TestImageConvert(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img (qemu-utils) not installed")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	require.NoError(t, os.WriteFile(raw, []byte(strings.Repeat("wisp", 1<<16)), 0o644))
	qcow := filepath.Join(dir, "disk.qcow2")
	code, stdout, stderr := runCLI(t, nil, "image", "convert", raw, qcow)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, qcow+": qcow2\n", stdout)
	head := make([]byte, 4)
	f, err := os.Open(qcow)
	require.NoError(t, err)
	_, err = f.Read(head)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, "QFI\xfb", string(head), "OUT's extension picked qcow2")

	back := filepath.Join(dir, "back.img")
	code, _, stderr = runCLI(t, nil, "image", "convert", qcow, back)
	require.Equal(t, 0, code, stderr)
	got, err := os.ReadFile(back)
	require.NoError(t, err)
	want, err := os.ReadFile(raw)
	require.NoError(t, err)
	assert.Equal(t, want, got, "round trip")
}
