package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"
)

func TestModuleName(t *testing.T) {
	tests := map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko":       "virtio_rng",
		"kernel/drivers/net/virtio_net.ko.xz":               "virtio_net",
		"kernel/net/vmw_vsock/vsock.ko.zst":                 "vsock",
		"kernel/fs/ext4/ext4.ko.gz":                         "ext4",
		"virtio_pci":                                        "virtio_pci",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz": "virtio_pci_modern_dev",
	}
	for in, want := range tests {
		assert.Equal(t, want, moduleName(in), in)
	}
}

const sampleModulesDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko.xz:
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko.zst: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
`

func TestParseModulesDep(t *testing.T) {
	paths, deps, err := parseModulesDep(sampleModulesDep)
	require.NoError(t, err)
	assert.Equal(t, "kernel/drivers/char/hw_random/virtio-rng.ko.zst", paths["virtio_rng"])
	assert.Equal(t, []string{"net_failover", "failover", "virtio_ring", "virtio"}, deps["virtio_net"])
	assert.Equal(t, []string{}, deps["virtio"])

	_, _, err = parseModulesDep("garbage line\n")
	require.Error(t, err)
}

// indexOf returns the position of each name in order.
func indexOf(order []string) map[string]int {
	m := map[string]int{}
	for i, n := range order {
		m[n] = i
	}
	return m
}

func TestResolveModules(t *testing.T) {
	_, deps, err := parseModulesDep(sampleModulesDep)
	require.NoError(t, err)
	lookup := func(name string) ([]string, error) {
		d, ok := deps[name]
		if !ok {
			return nil, ErrUnknownModule
		}
		return d, nil
	}
	none := func(string) bool { return false }

	tests := []struct {
		name    string
		want    []string
		builtin func(string) bool
		order   []string
	}{
		{"dependencies first", []string{"virtio_net"}, none,
			[]string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net"}},
		{"each once", []string{"virtio_net", "virtio-rng", "virtio_net"}, none,
			[]string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net", "virtio_rng"}},
		{"built-in left out", []string{"virtio_pci"}, func(n string) bool { return n == "virtio" || n == "virtio_ring" },
			[]string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci"}},
		{"all built in", []string{"virtio_net"}, func(string) bool { return true }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			order, err := resolveModules(tc.want, lookup, tc.builtin)
			require.NoError(t, err)
			// modules.dep lists transitive deps, so for each module every
			// listed dependency must precede it.
			pos := indexOf(order)
			for _, m := range order {
				for _, d := range deps[m] {
					if _, ok := pos[d]; ok {
						assert.Less(t, pos[d], pos[m], "%s before %s", d, m)
					}
				}
			}
			assert.Equal(t, tc.order, order)
		})
	}

	_, err = resolveModules([]string{"nonexistent"}, lookup, none)
	require.ErrorIs(t, err, ErrUnknownModule)

	cyclic := func(name string) ([]string, error) {
		return map[string][]string{"a": {"b"}, "b": {"a"}}[name], nil
	}
	_, err = resolveModules([]string{"a"}, cyclic, none)
	require.ErrorContains(t, err, "cycle: a -> b -> a")
}

// TestModuleTree lays out a modules directory with compressed modules and
// a modules.dep and checks modules are found, decompressed and ordered.
func TestModuleTree(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o644))
	}
	compress := map[string]func([]byte) []byte{
		".xz": func(b []byte) []byte {
			var buf bytes.Buffer
			w, err := xz.NewWriter(&buf)
			require.NoError(t, err)
			_, err = w.Write(b)
			require.NoError(t, err)
			require.NoError(t, w.Close())
			return buf.Bytes()
		},
		".zst": func(b []byte) []byte {
			enc, err := zstd.NewWriter(nil)
			require.NoError(t, err)
			return enc.EncodeAll(b, nil)
		},
		".gz": func(b []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			_, err := w.Write(b)
			require.NoError(t, err)
			require.NoError(t, w.Close())
			return buf.Bytes()
		},
		"": func(b []byte) []byte { return b },
	}
	files := map[string]string{
		"kernel/drivers/virtio/virtio.ko":                 "",
		"kernel/drivers/virtio/virtio_ring.ko":            "",
		"kernel/net/core/failover.ko.xz":                  ".xz",
		"kernel/drivers/net/net_failover.ko.xz":           ".xz",
		"kernel/drivers/net/virtio_net.ko.xz":             ".xz",
		"kernel/drivers/char/hw_random/virtio-rng.ko.zst": ".zst",
	}
	for rel, suffix := range files {
		write(rel, compress[suffix]([]byte("module "+moduleName(rel))))
	}
	write("modules.dep", []byte(sampleModulesDep))
	write("modules.builtin", []byte("kernel/drivers/virtio/virtio.ko\n"))

	tree, err := loadModuleTree(dir)
	require.NoError(t, err)
	order, err := resolveModules([]string{"virtio_net", "virtio_rng"}, tree.dependencies, func(n string) bool { return tree.builtin[n] })
	require.NoError(t, err)
	assert.Equal(t, []string{"failover", "net_failover", "virtio_ring", "virtio_net", "virtio_rng"}, order)
	for _, name := range order {
		ko, err := tree.read(name)
		require.NoError(t, err)
		assert.Equal(t, "module "+name, string(ko))
	}

	gz := filepath.Join(dir, "kernel/fs/ext4/ext4.ko.gz")
	write("kernel/fs/ext4/ext4.ko.gz", compress[".gz"]([]byte("module ext4")))
	ko, err := readModuleFile(gz)
	require.NoError(t, err)
	assert.Equal(t, "module ext4", string(ko))

	_, err = tree.read("nonexistent")
	require.True(t, errors.Is(err, ErrUnknownModule))
}

// TestDefaultModulesPowerButton checks, on Debian's cloud kernel, that the
// default initramfs loads what init needs to hear the ACPI power button:
// the button driver and evdev, each either built in or loaded (they are
// modules there, CONFIG_ACPI_BUTTON=m and CONFIG_INPUT_EVDEV=m).
func TestDefaultModulesPowerButton(t *testing.T) {
	if !hasApt() {
		t.Skip("SKIP: no apt: Debian's kernel cannot be fetched here")
	}
	kern, err := (&Kit{CacheDir: DefaultCacheDir(), Progress: testWriter{t}}).DebianKernel(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, kern.ModulesDir)
	tree, err := loadModuleTree(kern.ModulesDir)
	require.NoError(t, err)
	order, err := resolveModules(DefaultModules(), tree.dependencies, func(n string) bool { return tree.builtin[n] })
	require.NoError(t, err)
	pos := indexOf(order)
	for _, m := range []string{"button", "evdev"} {
		_, loaded := pos[m]
		assert.True(t, loaded || tree.builtin[m], "%s is neither built into %s nor loaded by the default initramfs", m, kern.Version)
	}
}
