package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/internal/cache"
)

const (
	// debianMetaPackage always depends on the newest cloud kernel package.
	debianMetaPackage = "linux-image-cloud-amd64"
	// debianImagePrefix starts the versioned package's name; the rest is
	// the kernel release.
	debianImagePrefix = "linux-image-"
	// resolveTTL is how long a resolved metapackage dependency is trusted.
	// Asking apt-cache costs about a second; the cache hit must be instant,
	// and a kernel a day old is new enough for tests.
	resolveTTL = 24 * time.Hour
	// resolvedFile remembers the last resolution under kernels/.
	resolvedFile = "debian-cloud.resolved.json"
)

// debianResolution is what linux-image-cloud-amd64 pointed at.
type debianResolution struct {
	Package    string    `json:"package"` // linux-image-6.1.0-56-cloud-amd64
	Version    string    `json:"version"` // 6.1.192-2
	ResolvedAt time.Time `json:"resolved_at"`
}

func (r debianResolution) release() string { return strings.TrimPrefix(r.Package, debianImagePrefix) }

func (r debianResolution) entryName() string {
	return "debian-" + r.release() + "_" + safeName(r.Version)
}

// safeName maps a Debian version (which may hold ':' for an epoch) to a
// file name component.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".+~-", r):
			return r
		}
		return '_'
	}, s)
}

// DebianKernel returns Debian's cloud kernel (the package that
// linux-image-cloud-amd64 depends on), fetched with apt-get download and
// unpacked with dpkg-deb into CacheDir/kernels/debian-<release>_<version>/:
// vmlinuz, vmlinux (the ELF extracted from vmlinuz), config and
// lib/modules/<release>. Repeated calls within a day use the cache without
// asking apt; when apt cannot be reached the newest cached kernel is used.
// On a host without apt it falls back to the host's /boot/vmlinuz-*.
func (k *Kit) DebianKernel(ctx context.Context) (*Kernel, error) {
	if !hasApt() {
		return k.hostKernel(ctx)
	}
	kernels := filepath.Join(k.cacheDir(), "kernels")
	lock, err := cache.Acquire(ctx, kernels, "debian")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	if r, err := readResolution(kernels); err == nil && time.Since(r.ResolvedAt) < resolveTTL {
		if kern, err := readKernelMeta(filepath.Join(kernels, r.entryName())); err == nil {
			return kern, nil
		}
	}

	a := &apt{out: k.progress()}
	r, err := resolveDebianKernel(ctx, a)
	if err != nil {
		if kern := newestCachedKernel(kernels, "debian-"); kern != nil {
			fmt.Fprintf(k.progress(), "wisp: cannot ask apt for the newest kernel (%v); using cached %s\n", err, kern.Version)
			return kern, nil
		}
		return nil, err
	}
	if err := writeResolution(kernels, r); err != nil {
		return nil, err
	}
	dir := filepath.Join(kernels, r.entryName())
	if kern, err := readKernelMeta(dir); err == nil {
		return kern, nil
	}
	return k.fetchDebianKernel(ctx, a, r, dir)
}

func resolveDebianKernel(ctx context.Context, a *apt) (debianResolution, error) {
	deps, err := a.depends(ctx, debianMetaPackage)
	if err != nil {
		return debianResolution{}, err
	}
	var pkg string
	for _, d := range deps {
		if strings.HasPrefix(d, debianImagePrefix) {
			pkg = d
			break
		}
	}
	if pkg == "" {
		return debianResolution{}, fmt.Errorf("%s depends on no %s* package (depends: %v)", debianMetaPackage, debianImagePrefix, deps)
	}
	version, err := a.candidate(ctx, pkg)
	if err != nil {
		return debianResolution{}, err
	}
	return debianResolution{Package: pkg, Version: version, ResolvedAt: time.Now()}, nil
}

func readResolution(kernels string) (debianResolution, error) {
	var r debianResolution
	b, err := os.ReadFile(filepath.Join(kernels, resolvedFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", resolvedFile, err)
	}
	if !strings.HasPrefix(r.Package, debianImagePrefix) || r.Version == "" {
		return r, fmt.Errorf("%s: bad contents", resolvedFile)
	}
	return r, nil
}

func writeResolution(kernels string, r debianResolution) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode %s: %w", resolvedFile, err)
	}
	tmp := filepath.Join(kernels, "."+resolvedFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", resolvedFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(kernels, resolvedFile)); err != nil {
		return fmt.Errorf("write %s: %w", resolvedFile, err)
	}
	return nil
}

// fetchDebianKernel downloads and unpacks the kernel package into a staging
// directory and publishes it as dir.
func (k *Kit) fetchDebianKernel(ctx context.Context, a *apt, r debianResolution, dir string) (kern *Kernel, err error) {
	tmp, err := cache.Staging(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	fmt.Fprintf(k.progress(), "wisp: fetching %s %s\n", r.Package, r.Version)
	deb, err := a.download(ctx, r.Package, r.Version, tmp)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(tmp, "root")
	if err := (command{stderr: k.progress()}).run(ctx, "dpkg-deb", "-x", deb, root); err != nil {
		return nil, err
	}
	release := r.release()
	kern = &Kernel{
		Version:    release,
		Image:      filepath.Join(tmp, "vmlinuz"),
		ModulesDir: filepath.Join(tmp, "lib", "modules", release),
	}
	moves := []struct{ from, to string }{
		{filepath.Join(root, "boot", "vmlinuz-"+release), kern.Image},
		{filepath.Join(root, "boot", "config-"+release), filepath.Join(tmp, "config")},
		{filepath.Join(root, "lib", "modules", release), kern.ModulesDir},
	}
	for _, m := range moves {
		if err := os.MkdirAll(filepath.Dir(m.to), 0o755); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", r.Package, err)
		}
		if err := os.Rename(m.from, m.to); err != nil {
			return nil, fmt.Errorf("unpack %s: package lacks an expected file: %w", r.Package, err)
		}
	}
	if err := os.RemoveAll(root); err != nil {
		return nil, fmt.Errorf("clean up %s: %w", root, err)
	}
	if err := os.Remove(deb); err != nil {
		return nil, fmt.Errorf("clean up %s: %w", deb, err)
	}
	if elfPath, err := writeVmlinux(kern.Image, filepath.Join(tmp, "vmlinux")); err != nil {
		fmt.Fprintf(k.progress(), "wisp: no ELF vmlinux for %s: %v\n", release, err)
	} else {
		kern.ELF = elfPath
	}
	if err := writeKernelMeta(tmp, kern); err != nil {
		return nil, err
	}
	if err := publish(tmp, dir); err != nil {
		return nil, err
	}
	return readKernelMeta(dir)
}

// writeVmlinux extracts the ELF from the bzImage at image into out.
func writeVmlinux(image, out string) (string, error) {
	b, err := os.ReadFile(image)
	if err != nil {
		return "", fmt.Errorf("read kernel image: %w", err)
	}
	elfImage, err := ExtractVmlinux(b)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(out, elfImage, 0o644); err != nil {
		return "", fmt.Errorf("write vmlinux: %w", err)
	}
	return out, nil
}

// newestCachedKernel returns the most recently published entry whose name
// starts with prefix, or nil.
func newestCachedKernel(kernels, prefix string) *Kernel {
	metas, _ := filepath.Glob(filepath.Join(kernels, prefix+"*", metaFile))
	var best *Kernel
	var bestTime time.Time
	for _, m := range metas {
		st, err := os.Stat(m)
		if err != nil {
			continue
		}
		kern, err := readKernelMeta(filepath.Dir(m))
		if err != nil {
			continue
		}
		if best == nil || st.ModTime().After(bestTime) {
			best, bestTime = kern, st.ModTime()
		}
	}
	return best
}

// hostKernel uses the host's installed kernel: the running one if
// /boot/vmlinuz-$(uname -r) exists, else the last /boot/vmlinuz-* by name.
// Its ELF vmlinux is extracted once into CacheDir/kernels/host-<release>/.
func (k *Kit) hostKernel(ctx context.Context) (*Kernel, error) {
	var uts unix.Utsname
	running := ""
	if unix.Uname(&uts) == nil {
		running = unix.ByteSliceToString(uts.Release[:])
	}
	return k.bootKernel(ctx, "/boot", "/lib/modules", running)
}

// bootKernel picks bootDir/vmlinuz-<running> if it exists, else the last
// bootDir/vmlinuz-* by name, with modulesRoot/<release> as its modules.
func (k *Kit) bootKernel(ctx context.Context, bootDir, modulesRoot, running string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if len(images) == 0 {
		return nil, ErrNoKernel
	}
	sort.Strings(images)
	image := images[len(images)-1]
	if running != "" {
		if p := filepath.Join(bootDir, "vmlinuz-"+running); slices.Contains(images, p) {
			image = p
		}
	}
	release := strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	kern := &Kernel{Version: release, Image: image}
	if st, err := os.Stat(filepath.Join(modulesRoot, release)); err == nil && st.IsDir() {
		kern.ModulesDir = filepath.Join(modulesRoot, release)
	}

	kernels := filepath.Join(k.cacheDir(), "kernels")
	lock, err := cache.Acquire(ctx, kernels, "host")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	dir := filepath.Join(kernels, "host-"+safeName(release))
	elfPath := filepath.Join(dir, "vmlinux")
	if _, err := os.Stat(elfPath); err == nil {
		kern.ELF = elfPath
		return kern, nil
	}
	tmp, err := cache.Staging(dir)
	if err != nil {
		return nil, err
	}
	if _, err := writeVmlinux(image, filepath.Join(tmp, "vmlinux")); err != nil {
		os.RemoveAll(tmp)
		fmt.Fprintf(k.progress(), "wisp: no ELF vmlinux for host kernel %s: %v\n", release, err)
		return kern, nil
	}
	if err := publish(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	kern.ELF = elfPath
	return kern, nil
}
