package vmm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no kernel", func(c *Config) { c.Kernel = "" }, "--kernel is required"},
		{"missing kernel", func(c *Config) { c.Kernel = filepath.Join(dir, "nope") }, "no such file"},
		{"kernel is dir", func(c *Config) { c.Kernel = dir }, "not a regular file"},
		{"missing initrd", func(c *Config) { c.Initrd = filepath.Join(dir, "nope") }, "--initrd"},
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, "--cpus 0"},
		{"too many cpus", func(c *Config) { c.CPUs = MaxCPUs + 1 }, "--cpus"},
		{"zero memory", func(c *Config) { c.MemoryBytes = 0 }, "--memory 0"},
		{"more than host", func(c *Config) { c.MemoryBytes = 2 << 30 }, "more than the host"},
		{"odd memory", func(c *Config) { c.MemoryBytes = 17 << 20 }, "multiple of 2M"},
		{"bad console", func(c *Config) { c.Console = "tty" }, "--console"},
		{"console file without path", func(c *Config) { c.Console = ConsoleFile }, "needs a path"},
		{"bad accel", func(c *Config) { c.Accel = "hvf" }, "--accel"},
		{"bad reboot", func(c *Config) { c.OnReboot = "halt" }, "--on-reboot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate(1 << 30)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}
