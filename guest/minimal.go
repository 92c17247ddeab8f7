package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/guest/kconfig"
	"github.com/wisp-vmm/wisp/internal/cache"
)

const (
	// minimalSourcePackage is Debian's kernel source; it installs
	// /usr/src/<package>.tar.xz.
	minimalSourcePackage = "linux-source-6.1"
	// minimalRecipe names this build procedure. Bump it when the steps in
	// buildMinimal change so old cache entries are not reused.
	minimalRecipe = "wisp-minimal-1"
	// objCountFile in the build tree remembers how many objects the last
	// full build compiled, as the next progress bar's total.
	objCountFile = ".wisp-objects"
)

// MinimalBuildPackages lists the Debian packages MinimalKernel installs
// when missing: the kernel source and what building it needs.
func MinimalBuildPackages() []string {
	return []string{minimalSourcePackage, "build-essential", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "xz-utils"}
}

// minimalKey names a minimal kernel build: it changes with the fragment,
// the kernel source version and the build recipe.
func minimalKey(fragment, sourceVersion string) string {
	h := sha256.New()
	for _, part := range []string{minimalRecipe, fragment, sourceVersion} {
		io.WriteString(h, part)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// MinimalKernel returns wisp's minimal microVM kernel, built from Debian's
// linux-source-6.1 with `make tinyconfig` plus the fragment
// kconfig.MicroVM() (no modules: virtio, ext4, vsock and the rest are built
// in). It installs MinimalBuildPackages() with apt-get when missing. The
// result (bzImage and vmlinux) is cached in
// CacheDir/kernels/minimal-<key>/, where key hashes the fragment and the
// source version; the build tree is kept in CacheDir/kernels/build/ so a
// rebuild is incremental. A failed or cancelled build leaves no result;
// cancelling ctx kills make and the compilers it started.
func (k *Kit) MinimalKernel(ctx context.Context) (*Kernel, error) {
	if !hasApt() {
		return nil, fmt.Errorf("minimal kernel: apt-get is needed to install %s: %w", minimalSourcePackage, ErrNoKernel)
	}
	kernels := filepath.Join(k.cacheDir(), "kernels")
	lock, err := cache.Acquire(ctx, kernels, "minimal")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	if srcVersion := installedVersion(ctx, minimalSourcePackage); srcVersion != "" {
		dir := filepath.Join(kernels, "minimal-"+minimalKey(kconfig.MicroVM(), srcVersion))
		if kern, err := readKernelMeta(dir); err == nil {
			return kern, nil
		}
	}
	a := &apt{out: k.progress()}
	if _, err := a.ensureInstalled(ctx, MinimalBuildPackages()...); err != nil {
		return nil, fmt.Errorf("minimal kernel: install build packages: %w", err)
	}
	srcVersion := installedVersion(ctx, minimalSourcePackage)
	if srcVersion == "" {
		return nil, fmt.Errorf("minimal kernel: %s still not installed after apt-get install", minimalSourcePackage)
	}
	key := minimalKey(kconfig.MicroVM(), srcVersion)
	src, err := k.kernelSource(ctx, kernels, srcVersion)
	if err != nil {
		return nil, err
	}
	// The build tree is per source version, not per fragment: Kbuild
	// rebuilds only what a changed option touches.
	build := filepath.Join(kernels, "build", "minimal-"+safeName(srcVersion))
	return k.buildMinimal(ctx, src, build, filepath.Join(kernels, "minimal-"+key))
}

// MinimalKernelCached returns the minimal kernel only if it is already
// built for the installed source; otherwise an error wrapping ErrNotCached.
// It never installs or builds anything.
func (k *Kit) MinimalKernelCached(ctx context.Context) (*Kernel, error) {
	if !hasApt() {
		return nil, fmt.Errorf("minimal kernel: no apt: %w", ErrNotCached)
	}
	srcVersion := installedVersion(ctx, minimalSourcePackage)
	if srcVersion == "" {
		return nil, fmt.Errorf("minimal kernel: %s not installed: %w", minimalSourcePackage, ErrNotCached)
	}
	return readKernelMeta(filepath.Join(k.cacheDir(), "kernels", "minimal-"+minimalKey(kconfig.MicroVM(), srcVersion)))
}

// kernelSource unpacks /usr/src/linux-source-6.1.tar.xz once per source
// version into CacheDir/kernels/src/. Builds use O= output directories, so
// the unpacked tree stays clean and is shared by every build.
func (k *Kit) kernelSource(ctx context.Context, kernels, srcVersion string) (string, error) {
	dir := filepath.Join(kernels, "src", minimalSourcePackage+"_"+safeName(srcVersion))
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
		return dir, nil
	}
	tarball := filepath.Join("/usr/src", minimalSourcePackage+".tar.xz")
	tmp, err := cache.Staging(dir)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(k.progress(), "wisp: unpacking %s\n", tarball)
	if err := (command{stderr: k.progress()}).run(ctx, "tar", "-xf", tarball, "-C", tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack kernel source: %w", err)
	}
	top := filepath.Join(tmp, minimalSourcePackage)
	if _, err := os.Stat(filepath.Join(top, "Makefile")); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack kernel source: %s has no %s/Makefile: %w", tarball, minimalSourcePackage, err)
	}
	// Publish only the tree inside the staging dir, then drop the rest.
	if err := os.Rename(top, dir); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("publish kernel source: %w", err)
	}
	os.RemoveAll(tmp)
	return dir, nil
}

// buildMinimal configures and builds the kernel in the build tree and
// publishes bzImage and vmlinux as result.
func (k *Kit) buildMinimal(ctx context.Context, src, build, result string) (kern *Kernel, err error) {
	if err := os.MkdirAll(build, 0o755); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	fragmentPath := filepath.Join(build, "wisp-microvm.config")
	if err := os.WriteFile(fragmentPath, []byte(kconfig.MicroVM()), 0o644); err != nil {
		return nil, fmt.Errorf("minimal kernel: write fragment: %w", err)
	}
	// Fixed build identity, so the same inputs give the same kernel.
	mk := command{dir: src, env: []string{
		"KBUILD_BUILD_USER=wisp", "KBUILD_BUILD_HOST=wisp",
		"KBUILD_BUILD_TIMESTAMP=1970-01-01", "LC_ALL=C",
	}}
	o := "O=" + build
	configure := [][]string{
		{"make", o, "tinyconfig"},
		{filepath.Join(src, "scripts/kconfig/merge_config.sh"), "-m", "-O", build, filepath.Join(build, ".config"), fragmentPath},
		{"make", o, "olddefconfig"},
	}
	fmt.Fprintf(k.progress(), "wisp: configuring minimal kernel in %s\n", build)
	for _, c := range configure {
		if err := mk.run(ctx, c[0], c[1:]...); err != nil {
			return nil, fmt.Errorf("minimal kernel: configure: %w", err)
		}
	}
	if err := verifyConfig(filepath.Join(build, ".config")); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}

	expected := 0
	if b, err := os.ReadFile(filepath.Join(build, objCountFile)); err == nil {
		expected, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	var counter *objectCounter
	if k.Progress != nil {
		counter = newObjectCounter(k.Progress, "building minimal kernel", expected)
	}
	objects := 0
	mkBuild := mk
	mkBuild.stdout = &lineWriter{fn: func(line string) {
		if !isObjectLine(line) {
			return
		}
		objects++
		if counter != nil {
			counter.add()
		}
	}}
	err = mkBuild.run(ctx, "make", o, "-j"+strconv.Itoa(runtime.NumCPU()), "bzImage")
	if counter != nil {
		counter.finish()
	}
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: build: %w", err)
	}
	if objects > expected {
		os.WriteFile(filepath.Join(build, objCountFile), []byte(strconv.Itoa(objects)), 0o644)
	}
	release, err := mk.output(ctx, "make", "-s", o, "kernelrelease")
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}

	tmp, err := cache.Staging(result)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	kern = &Kernel{
		Version: strings.TrimSpace(string(release)),
		Image:   filepath.Join(tmp, "bzImage"),
		ELF:     filepath.Join(tmp, "vmlinux"),
	}
	for _, c := range []struct{ from, to string }{
		{filepath.Join(build, "arch/x86/boot/bzImage"), kern.Image},
		{filepath.Join(build, "vmlinux"), kern.ELF},
		{filepath.Join(build, ".config"), filepath.Join(tmp, "config")},
	} {
		if err := copyFile(c.from, c.to); err != nil {
			return nil, fmt.Errorf("minimal kernel: %w", err)
		}
	}
	if err := writeKernelMeta(tmp, kern); err != nil {
		return nil, err
	}
	if err := publish(tmp, result); err != nil {
		return nil, err
	}
	return readKernelMeta(result)
}

// verifyConfig checks that the built .config holds every option of the
// fragment: Kconfig silently drops options whose dependencies are unmet.
func verifyConfig(path string) error {
	want, err := kconfig.Parse(kconfig.MicroVM())
	if err != nil {
		return fmt.Errorf("parse fragment: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read .config: %w", err)
	}
	got, err := kconfig.Parse(string(b))
	if err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return kconfig.Verify(want, got)
}

func copyFile(from, to string) (err error) {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return nil
}
