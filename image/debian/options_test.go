package debian

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFS8xxXhhxLTNyLZeHrlI2P4mXY8QdUOlGkGoirlda/1 wisp-test"

func TestValidate(t *testing.T) {
	require.NoError(t, Options{}.WithDefaults().Validate())
	require.NoError(t, Options{User: "alice", SSHKeys: []string{testKey}, RootPassword: "pw", Format: "qcow2", Release: "trixie"}.WithDefaults().Validate())

	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"unknown release", Options{Release: "buster"}, `--release "buster": unknown Debian release; use one of bullseye, bookworm, trixie`},
		{"tiny size", Options{Size: 4 << 20}, "--size 4M is too small"},
		{"odd size", Options{Size: 1<<30 + 5}, "whole number of megabytes"},
		{"bad package", Options{Packages: []string{"vim", "Bad_Name"}}, `"Bad_Name" is not a Debian package name`},
		{"option as package", Options{Packages: []string{"--allow-unauthenticated"}}, "not a Debian package name"},
		{"bad hostname", Options{Hostname: "my_host"}, "--hostname"},
		{"bad user", Options{User: "Alice", SSHKeys: []string{testKey}}, `--user "Alice"`},
		{"system user", Options{User: "daemon", SSHKeys: []string{testKey}}, "system account"},
		{"user without key", Options{User: "alice"}, "needs --ssh-key"},
		{"bad key", Options{SSHKeys: []string{"ssh-ed25519 AAAA"}}, "--ssh-key: key 1"},
		{"password newline", Options{RootPassword: "a\nb"}, "--root-password"},
		{"bad format", Options{Format: "vmdk"}, "--format"},
		{"bad mirror", Options{Mirror: "ftp://x"}, "--mirror"},
		{"mirror with space", Options{Mirror: "http://x y"}, "--mirror"},
		{"too many cpus", Options{CPUs: 1000}, "--cpus 1000"},
		{"odd memory", Options{MemoryBytes: 1<<30 + 1<<20}, "--memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.WithDefaults().Validate()
			require.ErrorIs(t, err, vmm.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestReleases(t *testing.T) {
	assert.Equal(t, []string{"bullseye", "bookworm", "trixie"}, Releases())
}

func TestCacheKey(t *testing.T) {
	base := Options{User: "alice", SSHKeys: []string{testKey}}.WithDefaults()
	key := base.CacheKey()
	assert.True(t, strings.HasPrefix(key, "debian-bookworm-"), key)
	assert.Equal(t, key, base.CacheKey(), "stable")

	same := base
	same.CPUs, same.MemoryBytes = 4, 4<<30
	assert.Equal(t, key, same.CacheKey(), "vm.json settings are not part of the image")
	same = base
	same.Packages = []string{"sudo", "less"} // already in the base set
	assert.Equal(t, key, same.CacheKey(), "package order and duplicates do not matter")

	changes := map[string]func(o *Options){
		"release":  func(o *Options) { o.Release = "trixie" },
		"packages": func(o *Options) { o.Packages = []string{"vim"} },
		"size":     func(o *Options) { o.Size = 8 << 30 },
		"hostname": func(o *Options) { o.Hostname = "other" },
		"user":     func(o *Options) { o.User = "bob" },
		"key":      func(o *Options) { o.SSHKeys = append(o.SSHKeys, testKey+"2") },
		"password": func(o *Options) { o.RootPassword = "secret" },
		"format":   func(o *Options) { o.Format = "qcow2" },
		"mirror":   func(o *Options) { o.Mirror = "http://mirror.example/debian" },
	}
	seen := map[string]string{key: "base"}
	for name, change := range changes {
		o := base
		o.SSHKeys = append([]string(nil), base.SSHKeys...)
		change(&o)
		k := o.CacheKey()
		assert.NotContains(t, seen, k, "%s changes the key (collides with %s)", name, seen[k])
		seen[k] = name
	}
	o := base
	o.RootPassword = "hunter2"
	assert.NotContains(t, o.CacheKey(), "hunter2")
}

func TestPackages(t *testing.T) {
	o := Options{Packages: []string{"vim", "sudo"}}.WithDefaults()
	pkgs := o.packages()
	assert.Contains(t, pkgs, "linux-image-cloud-amd64")
	assert.Contains(t, pkgs, "cloud-init")
	assert.Contains(t, pkgs, "systemd-resolved", "bookworm ships resolved separately")
	assert.Contains(t, pkgs, "vim")
	assert.IsIncreasing(t, pkgs)

	bullseye := Options{Release: "bullseye"}.WithDefaults().packages()
	assert.NotContains(t, bullseye, "systemd-resolved", "bullseye's systemd includes resolved")
}
