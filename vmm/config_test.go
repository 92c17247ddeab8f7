package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/fixtures"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"256M", 256 << 20, false},
		{"1G", 1 << 30, false},
		{"1536MiB", 1536 << 20, false},
		{"512k", 512 << 10, false},
		{"4096", 4096, false},
		{"2T", 2 << 40, false},
		{"", 0, true},
		{"M", 0, true},
		{"12Q", 0, true},
		{"-1G", 0, true},
		{"99999999999999999999G", 0, true},
		{"18446744073709551615G", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrInvalidConfig)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestFormatSize(t *testing.T) {
	assert.Equal(t, "256M", FormatSize(256<<20))
	assert.Equal(t, "1536M", FormatSize(1536<<20))
	assert.Equal(t, "1G", FormatSize(1<<30))
	assert.Equal(t, "1000", FormatSize(1000))
}

func TestParseConsole(t *testing.T) {
	k, p, err := ParseConsole("file:/tmp/x.log")
	require.NoError(t, err)
	assert.Equal(t, ConsoleFile, k)
	assert.Equal(t, "/tmp/x.log", p)
	for _, bad := range []string{"file:", "tty", "pty"} {
		_, _, err := ParseConsole(bad)
		assert.ErrorIs(t, err, ErrInvalidConfig, bad)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("k"), 0o644))
	good := Config{Kernel: kernel}.WithDefaults()
	require.NoError(t, good.Validate(1<<30))

	tests := []struct {
		name      string
		mutate    func(*Config)
		wantField string
		wantValue string
		wantMsg   string
	}{
		{"no kernel", func(c *Config) { c.Kernel = "" }, "Kernel", "", "required"},
		{"missing kernel", func(c *Config) { c.Kernel = filepath.Join(dir, "nope") }, "Kernel", filepath.Join(dir, "nope"), "no such file"},
		{"kernel is dir", func(c *Config) { c.Kernel = dir }, "Kernel", dir, "not a regular file"},
		{"missing initrd", func(c *Config) { c.Initrd = filepath.Join(dir, "nope") }, "Initrd", filepath.Join(dir, "nope"), "no such file"},
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, "CPUs", "0", "want 1 to 64"},
		{"too many cpus", func(c *Config) { c.CPUs = MaxCPUs + 1 }, "CPUs", "65", "want 1 to 64"},
		{"zero memory", func(c *Config) { c.MemoryBytes = 0 }, "MemoryBytes", "0", "want at least 16M"},
		{"more than host", func(c *Config) { c.MemoryBytes = 2 << 30 }, "MemoryBytes", "2147483648", "more than the host's 1.0G"},
		{"odd memory", func(c *Config) { c.MemoryBytes = 17 << 20 }, "MemoryBytes", "17825792", "multiple of 2M"},
		{"NUL in cmdline", func(c *Config) { c.Cmdline = "a\x00b" }, "Cmdline", "", "NUL"},
		{"bad console", func(c *Config) { c.Console = "tty" }, "Console", "tty", "use stdio, file:PATH or none"},
		{"console file without path", func(c *Config) { c.Console = ConsoleFile }, "ConsolePath", "", "needs the path"},
		{"bad accel", func(c *Config) { c.Accel = "hvf" }, "Accel", "hvf", "use auto, kvm or tcg"},
		{"bad reboot", func(c *Config) { c.OnReboot = "halt" }, "OnReboot", "halt", "use exit or restart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate(1 << 30)
			require.ErrorIs(t, err, ErrInvalidConfig)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.wantField, fe.Field)
			assert.Equal(t, tt.wantValue, fe.Value)
			assert.Contains(t, fe.Msg, tt.wantMsg)
			assert.NotContains(t, err.Error(), "--", "a library error names fields, not flags")
		})
	}
}

func TestFieldErrorText(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct {
		name string
		err  *FieldError
		want string
	}{
		{"with a value", &FieldError{Field: "CPUs", Value: "65", Msg: "want 1 to 64"}, "Config.CPUs 65: want 1 to 64"},
		{"without a value", &FieldError{Field: "Cmdline", Msg: "contains a NUL byte: remove it"}, "Config.Cmdline: contains a NUL byte: remove it"},
		{"list element", &FieldError{Field: "Disks[1]", Value: "/a.img", Msg: "no such file", Err: cause}, "Config.Disks[1] /a.img: no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.err.Error())
			wrapped := fmt.Errorf("machine: %w", tt.err)
			assert.ErrorIs(t, wrapped, ErrInvalidConfig)
			assert.Equal(t, tt.err.Err != nil, errors.Is(wrapped, cause), "the cause stays reachable")
		})
	}
}

func TestCheckBoot(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notKernel, []byte("this is not a kernel\n"), 0o644))
	missing := filepath.Join(dir, "nope")
	tests := []struct {
		name      string
		cfg       Config
		wantField string
		wantValue string
		wantMsg   string
	}{
		{"missing kernel", Config{Kernel: missing}, "Kernel", missing, "no such file"},
		{"not a kernel", Config{Kernel: notKernel}, "Kernel", notKernel, "not a Linux kernel"},
		{"missing initrd", Config{Kernel: notKernel, Initrd: missing}, "Initrd", missing, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().CheckBoot()
			require.ErrorIs(t, err, ErrInvalidConfig)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.wantField, fe.Field)
			assert.Equal(t, tt.wantValue, fe.Value)
			assert.Contains(t, fe.Msg, tt.wantMsg)
		})
	}
	require.NoError(t, Config{Boot: BootFirmware}.CheckBoot(), "firmware boots have no kernel to check")
}

// The loader's refusals, which need a real kernel to reach.
func TestCheckBootLoader(t *testing.T) {
	kernel := fixtures.DebianKernel(t).Image
	hugeInitrd := filepath.Join(t.TempDir(), "huge.img")
	f, err := os.Create(hugeInitrd)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<20)) // sparse: costs no disk
	require.NoError(t, f.Close())
	tests := []struct {
		name      string
		cfg       Config
		wantField string
		wantValue string
		wantMsg   string
	}{
		{"initrd does not fit", Config{Kernel: kernel, Initrd: hugeInitrd, MemoryBytes: 96 << 20}, "Initrd", hugeInitrd, "its 64M does not fit in 96M of memory"},
		{"kernel does not fit", Config{Kernel: kernel, MemoryBytes: 2 << 20}, "Kernel", kernel, "does not fit in 2M of memory"},
		{"command line too long", Config{Kernel: kernel, Cmdline: strings.Repeat("x", 1<<20)}, "Cmdline", "", "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().CheckBoot()
			require.ErrorIs(t, err, ErrInvalidConfig)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.wantField, fe.Field)
			assert.Equal(t, tt.wantValue, fe.Value)
			assert.Contains(t, fe.Msg, tt.wantMsg)
		})
	}
	require.NoError(t, Config{Kernel: kernel}.WithDefaults().CheckBoot())
}
