package vmdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

// machineDir makes a directory with a kernel, an initrd, a raw disk and a
// qcow2 disk (just its magic: Load only sniffs the header).
func machineDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{
		"vmlinuz":    "kernel",
		"initrd.img": "initrd",
		"disk.raw":   strings.Repeat("\x00", 4096),
		"data.qcow2": "QFI\xfb\x00\x00\x00\x03",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644))
	}
	return dir
}

const goodJSON = `{
  "cpus": 2,
  "memory": "1G",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "cmdline": "root=LABEL=wisp-root ro console=ttyS0",
  "disks": [{"path": "disk.raw", "format": "raw"}, {"path": "data.qcow2", "format": "qcow2", "readonly": true}],
  "nets": [{"mode": "user"}, {"mode": "tap", "tap": "wisp0", "mac": "52:54:00:12:34:56"}]
}`

func TestLoadGood(t *testing.T) {
	dir := machineDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(goodJSON), 0o644))
	m, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, dir, m.Dir)
	assert.Equal(t, filepath.Join(dir, "vmlinuz"), m.Kernel)
	assert.Equal(t, filepath.Join(dir, "initrd.img"), m.Initrd)
	assert.Equal(t, 2, m.CPUs)
	assert.Equal(t, uint64(1<<30), m.MemoryBytes)
	assert.Equal(t, "root=LABEL=wisp-root ro console=ttyS0", m.Cmdline)
	require.Len(t, m.Disks, 2)
	assert.Equal(t, Disk{Path: filepath.Join(dir, "disk.raw"), Format: FormatRaw}, m.Disks[0])
	assert.Equal(t, Disk{Path: filepath.Join(dir, "data.qcow2"), Format: FormatQCOW2, ReadOnly: true}, m.Disks[1])
	assert.Equal(t, []Net{{Mode: NetUser}, {Mode: NetTap, Tap: "wisp0", MAC: "52:54:00:12:34:56"}}, m.Nets)

	cfg := m.Config()
	assert.Equal(t, m.Kernel, cfg.Kernel)
	assert.Equal(t, uint64(1<<30), cfg.MemoryBytes)
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := machineDir(t)
	want := &Machine{
		Dir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: "initrd.img",
		Cmdline: "console=ttyS0", CPUs: 1, MemoryBytes: 512 << 20,
		Disks: []Disk{{Path: "disk.raw", Format: FormatRaw}},
		Nets:  []Net{{Mode: NetUser}},
	}
	require.NoError(t, Save(want))
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	require.NoError(t, err)
	assert.Contains(t, string(b), `"memory": "512M"`)
	assert.NotContains(t, string(b), dir, "paths are stored relative")

	got, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "initrd.img"), got.Initrd)
	assert.Equal(t, filepath.Join(dir, "disk.raw"), got.Disks[0].Path)
	assert.Equal(t, want.MemoryBytes, got.MemoryBytes)
}

func TestSaveRejectsOutsidePath(t *testing.T) {
	dir := machineDir(t)
	err := Save(&Machine{Dir: dir, Kernel: "/boot/vmlinuz", CPUs: 1, MemoryBytes: 1 << 30})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "outside the machine directory")
}

func TestLoadBad(t *testing.T) {
	// Each case edits the good description; the error must be one line
	// naming the field.
	tests := []struct {
		name string
		old  string
		new  string
		want string
	}{
		{"not json", `"cpus": 2`, `"cpus": 2,,`, "invalid character"},
		{"unknown field", `"cpus": 2`, `"cpu": 2`, `unknown field "cpu"`},
		{"zero cpus", `"cpus": 2`, `"cpus": 0`, "cpus 0: want 1 to"},
		{"too many cpus", `"cpus": 2`, `"cpus": 1000`, "cpus 1000"},
		{"no memory", `"memory": "1G",`, ``, "memory is missing"},
		{"bad memory", `"1G"`, `"lots"`, "memory:"},
		{"tiny memory", `"1G"`, `"1M"`, "want at least"},
		{"odd memory", `"1G"`, `"1025M"`, "multiple of 2M"},
		{"no kernel", `"kernel": "vmlinuz",`, ``, "kernel is missing"},
		{"missing kernel", `"kernel": "vmlinuz"`, `"kernel": "bzImage"`, "no such file"},
		{"absolute kernel", `"kernel": "vmlinuz"`, `"kernel": "/boot/vmlinuz"`, "is absolute"},
		{"escaping kernel", `"kernel": "vmlinuz"`, `"kernel": "../vmlinuz"`, "leaves the machine directory"},
		{"kernel is dir", `"kernel": "vmlinuz"`, `"kernel": "."`, "not a regular file"},
		{"missing initrd", `"initrd.img"`, `"initrd.gz"`, "initrd:"},
		{"no disks", `"disks": [{"path": "disk.raw", "format": "raw"}, {"path": "data.qcow2", "format": "qcow2", "readonly": true}]`, `"disks": []`, "disks is empty"},
		{"disk no path", `{"path": "disk.raw", "format": "raw"}`, `{"format": "raw"}`, "disks[0].path is missing"},
		{"disk no format", `{"path": "disk.raw", "format": "raw"}`, `{"path": "disk.raw"}`, "disks[0].format is missing"},
		{"disk bad format", `"format": "raw"`, `"format": "vmdk"`, `disks[0].format "vmdk"`},
		{"qcow2 is raw", `"path": "data.qcow2", "format": "qcow2"`, `"path": "disk.raw", "format": "qcow2"`, "has no qcow2 header"},
		{"net no mode", `{"mode": "user"}`, `{}`, "nets[0].mode is missing"},
		{"net bad mode", `{"mode": "user"}`, `{"mode": "bridge"}`, `nets[0].mode "bridge"`},
		{"user with tap", `{"mode": "user"}`, `{"mode": "user", "tap": "x"}`, "only for mode tap"},
		{"tap no name", `"tap": "wisp0", `, ``, "nets[1].tap: missing"},
		{"tap long name", `"wisp0"`, `"a-very-long-tap-name"`, "not a valid interface name"},
		{"bad mac", `52:54:00:12:34:56`, `52:54:00:12:34`, "nets[1].mac"},
		{"trailing data", `}]
}`, `}]
} {}`, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := machineDir(t)
			require.Contains(t, goodJSON, tt.old, "test case edits text that exists")
			text := strings.Replace(goodJSON, tt.old, tt.new, 1)
			require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(text), 0o644))
			_, err := Load(dir)
			require.Error(t, err)
			assert.ErrorIs(t, err, vmm.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
			assert.Contains(t, err.Error(), FileName)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

// A disk declared raw is raw whatever its first bytes are: a guest may
// have written a qcow2 header into it, and reading it as qcow2 would open
// the host files the header names.
func TestLoadDeclaredRawWithQcow2Header(t *testing.T) {
	dir := machineDir(t)
	text := strings.Replace(goodJSON, `"path": "disk.raw", "format": "raw"`, `"path": "data.qcow2", "format": "raw"`, 1)
	text = strings.Replace(text, `, {"path": "data.qcow2", "format": "qcow2", "readonly": true}`, ``, 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(text), 0o644))
	m, err := Load(dir)
	require.NoError(t, err)
	require.Len(t, m.Disks, 1)
	assert.Equal(t, FormatRaw, m.Disks[0].Format)
}

func TestLoadSymlinkOut(t *testing.T) {
	dir := machineDir(t)
	outside := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(outside, []byte("x"), 0o600))
	require.NoError(t, os.Remove(filepath.Join(dir, "vmlinuz")))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "vmlinuz")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(goodJSON), 0o644))
	_, err := Load(dir)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "symlink out of the machine directory")
}

func TestLoadNoDescription(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "no vm.json in it")

	_, err = Load(filepath.Join(dir, "nope"))
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "no such directory")
}

func TestLoadTooLarge(t *testing.T) {
	dir := machineDir(t)
	big := goodJSON + strings.Repeat(" ", maxFileSize)
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(big), 0o644))
	_, err := Load(dir)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "larger than")
}
