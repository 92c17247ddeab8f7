package guest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrUnknownModule: a module is neither in the tree nor built in.
var ErrUnknownModule = errors.New("kernel module not found")

// maxModuleSize bounds one decompressed module.
const maxModuleSize = 64 << 20

// DefaultModules are the modules the default initramfs loads when the
// kernel has them as modules (Debian's cloud kernel does): virtio over PCI
// with the block, network, console, entropy, balloon and vsock drivers,
// ext4 for a disk root, pvpanic, and the ACPI power button with evdev.
// Their dependencies are added automatically.
func DefaultModules() []string {
	return []string{
		"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"virtio_blk", "failover", "net_failover", "virtio_net", "virtio_rng", "virtio_console",
		"virtio_balloon", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
		"ext4",
		// pvpanic tells the VMM about a guest panic before panic=-1 reboots.
		"pvpanic", "pvpanic_mmio",
		// A graceful stop presses the ACPI power button: button reports
		// it as an input event and evdev lets init read it from
		// /dev/input/eventN (both modules in Debian's cloud kernel).
		"evdev", "button",
	}
}

// moduleName is the kernel's name for a module file: the base name
// without .ko and compression suffix, with '-' read as '_'.
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// isModuleFile reports whether a file name is a (possibly compressed)
// kernel module.
func isModuleFile(name string) bool {
	for _, suffix := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// moduleTree answers where a module's file is and what it depends on,
// from a lib/modules/<version> directory.
type moduleTree struct {
	dir     string
	paths   map[string]string   // name -> path relative to dir
	deps    map[string][]string // name -> dependency names, when known
	builtin map[string]bool
}

// loadModuleTree indexes dir. With a modules.dep (written by depmod on an
// installed kernel) dependencies come from it; without one (a kernel
// unpacked from its .deb has none) they are read from each needed
// module's .modinfo section on demand.
func loadModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, paths: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			t.builtin[moduleName(line)] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.dep")); err == nil {
		paths, deps, err := parseModulesDep(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s/modules.dep: %w", dir, err)
		}
		t.paths, t.deps = paths, deps
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && isModuleFile(d.Name()) {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			t.paths[moduleName(rel)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", dir, err)
	}
	return t, nil
}

// parseModulesDep reads depmod's modules.dep: "path: dep-path dep-path..."
// per line, paths relative to the modules directory.
func parseModulesDep(text string) (paths map[string]string, deps map[string][]string, err error) {
	paths, deps = map[string]string{}, map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok || !isModuleFile(mod) {
			return nil, nil, fmt.Errorf("line %d: not \"module: deps\": %q", n, line)
		}
		name := moduleName(mod)
		paths[name] = mod
		ds := []string{}
		for _, d := range strings.Fields(rest) {
			ds = append(ds, moduleName(d))
		}
		deps[name] = ds
	}
	return paths, deps, sc.Err()
}

// dependencies returns name's direct (or, from modules.dep, transitive)
// dependencies.
func (t *moduleTree) dependencies(name string) ([]string, error) {
	if ds, ok := t.deps[name]; ok {
		return ds, nil
	}
	ko, err := t.read(name)
	if err != nil {
		return nil, err
	}
	ds, err := modinfoDepends(ko)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	t.deps[name] = ds
	return ds, nil
}

// read returns a module's decompressed contents.
func (t *moduleTree) read(name string) ([]byte, error) {
	rel, ok := t.paths[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s", ErrUnknownModule, name, t.dir)
	}
	return readModuleFile(filepath.Join(t.dir, rel))
}

// readModuleFile reads a .ko, undoing .xz, .zst or .gz compression, so the
// guest's init only has to call finit_module.
func readModuleFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = gr
	}
	b, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxModuleSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxModuleSize)
	}
	return b, nil
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo section
// (NUL-separated key=value strings).
func modinfoDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var ds []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					ds = append(ds, moduleName(d))
				}
			}
			return ds, nil
		}
	}
	return nil, nil
}

// resolveModules returns the modules to load for want, dependencies before
// the modules that need them, each once, leaving out built-in ones. A
// wanted module that is neither built in nor in the tree is an error.
func resolveModules(want []string, deps func(name string) ([]string, error), builtin func(name string) bool) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		if builtin(name) {
			state[name] = done
			return nil
		}
		state[name] = visiting
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, name := range want {
		if err := visit(strings.ReplaceAll(name, "-", "_"), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
