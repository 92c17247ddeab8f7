package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/guest/initramfs"
)

const (
	// modulePath is this Go module; the init is its guest/init package.
	modulePath = "github.com/wisp-vmm/wisp"
	initPkg    = modulePath + "/guest/init"
	// busyboxPath is where Debian's busybox-static installs the binary.
	busyboxPath    = "/bin/busybox"
	busyboxPackage = "busybox-static"
	// EnvInit names a prebuilt static init binary to use instead of
	// building guest/init (for hosts without a Go toolchain or source).
	EnvInit = "WISP_INIT"
)

// ErrNoInitSource: the init cannot be built (no source, no Go toolchain).
var ErrNoInitSource = errors.New("cannot build wisp's guest init")

// DefaultInitramfs builds the default guest's initramfs for kern and
// returns its path, CacheDir/initramfs/<hash>.cpio.gz, where hash is the
// SHA-256 of the uncompressed archive (so an unchanged archive is not
// rewritten, and a changed one gets a new name). It contains:
//
//   - /init: wisp's Go init (guest/init), built static with `go build`
//     from the source this binary was built from (see buildInit);
//   - /bin/busybox from Debian's busybox-static, with a symlink for every
//     applet. Busybox rather than u-root's commands: one 2 MB static
//     binary gives a full POSIX shell (ash, with job control and line
//     editing) and the coreutils/util-linux tools scripts expect, where
//     u-root's Go commands are larger and only partly POSIX;
//   - the modules of DefaultModules() that kern has as modules (none for
//     the minimal kernel), decompressed, with their dependencies, listed
//     in load order in /etc/wisp/modules;
//   - /dev/console, the usual empty directories, /etc/passwd and /etc/group.
//
// It installs busybox-static with apt-get if /bin/busybox is missing or
// not static.
func (k *Kit) DefaultInitramfs(ctx context.Context, kern *Kernel) (string, error) {
	if kern == nil {
		return "", errors.New("default initramfs: nil kernel")
	}
	work, err := os.MkdirTemp("", "wisp-initramfs-")
	if err != nil {
		return "", fmt.Errorf("default initramfs: %w", err)
	}
	defer os.RemoveAll(work)

	b := initramfs.New()
	initBin, err := k.initBinary(ctx, work)
	if err != nil {
		return "", err
	}
	if err := b.AddHostFile("init", initBin, 0o755); err != nil {
		return "", err
	}
	if err := k.addBusybox(ctx, b); err != nil {
		return "", err
	}
	if err := addBaseFiles(b); err != nil {
		return "", err
	}
	if kern.ModulesDir != "" {
		if err := addModules(b, kern, DefaultModules()); err != nil {
			return "", fmt.Errorf("default initramfs: %w", err)
		}
	}
	return writeInitramfs(filepath.Join(k.cacheDir(), "initramfs"), b)
}

// writeInitramfs stores the archive gzip-compressed under its content hash
// and returns the path. The file appears atomically (temp file + rename).
func writeInitramfs(dir string, b *initramfs.Builder) (string, error) {
	var raw bytes.Buffer
	if _, err := b.WriteTo(&raw); err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	final := filepath.Join(dir, hex.EncodeToString(sum[:])[:16]+".cpio.gz")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*.cpio.gz")
	if err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	werr := b.WriteGzip(tmp)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("write initramfs: %w", werr)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("publish initramfs: %w", err)
	}
	return final, nil
}

// addBaseFiles adds the device node and files every guest needs.
func addBaseFiles(b *initramfs.Builder) error {
	dirs := []struct {
		name string
		mode os.FileMode
	}{
		{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755},
		{"tmp", 0o777 | os.ModeSticky}, {"root", 0o700}, {"mnt", 0o755},
		{"etc/wisp", 0o755}, {"var", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755}, {"sbin", 0o755},
	}
	for _, d := range dirs {
		if err := b.AddDir(d.name, d.mode); err != nil {
			return err
		}
	}
	files := []struct {
		name, contents string
		mode           os.FileMode
	}{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644},
		{"etc/group", "root:x:0:\n", 0o644},
		{"etc/hostname", "wisp\n", 0o644},
		{"etc/profile", "export PS1='\\h:\\w\\$ '\n", 0o644},
	}
	for _, f := range files {
		if err := b.AddFile(f.name, []byte(f.contents), f.mode); err != nil {
			return err
		}
	}
	if err := b.AddSymlink("var/run", "/run"); err != nil {
		return err
	}
	// The kernel opens /dev/console for init's stdio before init runs.
	return b.AddCharDev("dev/console", 0o600, 5, 1)
}

// addModules adds the wanted modules kern has (plus dependencies),
// decompressed, and the load list /etc/wisp/modules.
func addModules(b *initramfs.Builder, kern *Kernel, want []string) error {
	tree, err := loadModuleTree(kern.ModulesDir)
	if err != nil {
		return err
	}
	order, err := resolveModules(want, tree.dependencies, func(name string) bool { return tree.builtin[name] })
	if err != nil {
		return err
	}
	var list strings.Builder
	list.WriteString("# Loaded in order by wisp's init; dependencies come first.\n")
	for _, name := range order {
		ko, err := tree.read(name)
		if err != nil {
			return err
		}
		rel := tree.paths[name]
		if i := strings.Index(rel, ".ko"); i >= 0 {
			rel = rel[:i] + ".ko"
		}
		dst := path.Join("lib/modules", kern.Version, filepath.ToSlash(rel))
		if err := b.AddFile(dst, ko, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&list, "/%s\n", dst)
	}
	return b.AddFile(strings.TrimPrefix(initproto.ModulesFile, "/"), []byte(list.String()), 0o644)
}

// addBusybox adds a static busybox and a symlink per applet.
func (k *Kit) addBusybox(ctx context.Context, b *initramfs.Builder) error {
	if !isStaticELF(busyboxPath) {
		if !hasApt() {
			return fmt.Errorf("default initramfs: %s is missing or not static, and there is no apt-get to install %s", busyboxPath, busyboxPackage)
		}
		a := &apt{out: k.progress()}
		if _, err := a.ensureInstalled(ctx, busyboxPackage); err != nil {
			return fmt.Errorf("default initramfs: install %s: %w", busyboxPackage, err)
		}
		if !isStaticELF(busyboxPath) {
			return fmt.Errorf("default initramfs: %s is still not a static binary after installing %s", busyboxPath, busyboxPackage)
		}
	}
	if err := b.AddHostFile("bin/busybox", busyboxPath, 0o755); err != nil {
		return err
	}
	out, err := command{}.output(ctx, busyboxPath, "--list-full")
	if err != nil {
		return fmt.Errorf("default initramfs: list busybox applets: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		applet := strings.TrimSpace(sc.Text())
		// linuxrc is the old initrd entry point; bin/busybox is the binary.
		if applet == "" || applet == "linuxrc" || applet == "bin/busybox" {
			continue
		}
		if err := b.AddSymlink(applet, "/bin/busybox"); err != nil {
			return fmt.Errorf("default initramfs: busybox applet %s: %w", applet, err)
		}
	}
	return sc.Err()
}

// isStaticELF reports whether path is an ELF executable with no program
// interpreter (statically linked).
func isStaticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// initBinary returns the path of a static init binary: $WISP_INIT if set,
// else one built into dir by buildInit.
func (k *Kit) initBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(EnvInit); p != "" {
		if !isStaticELF(p) {
			return "", fmt.Errorf("%s=%s: not a static ELF executable", EnvInit, p)
		}
		return p, nil
	}
	return buildInit(ctx, dir)
}

// buildInit builds guest/init as a static binary into dir and returns its
// path. It needs the Go toolchain and finds the source like this:
//
//  1. the module directory this file was compiled from (runtime.Caller):
//     that is the clone for `go test`, `go run` and `go build` in a clone,
//     and the module cache directory for a binary made by `go install`;
//  2. a directory at or above the working directory whose go.mod declares
//     the module;
//  3. if this binary is a released module version, `go install
//     github.com/wisp-vmm/wisp/guest/init@<version>` (module mode, fetched
//     through the Go module proxy).
//
// The build is -trimpath with no VCS stamp, so the same source and
// toolchain give the same binary (and the same initramfs hash).
func buildInit(ctx context.Context, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("%w: no go toolchain in PATH (set %s to a prebuilt static init)", ErrNoInitSource, EnvInit)
	}
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-buildvcs=false -trimpath"}
	out := filepath.Join(dir, "init")
	if root := moduleRoot(); root != "" {
		err := command{dir: root, env: env}.run(ctx, goTool, "build", "-ldflags=-s -w", "-o", out, "./guest/init")
		if err != nil {
			return "", fmt.Errorf("build guest init: %w", err)
		}
		return out, nil
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		env = append(env, "GOBIN="+dir)
		err := command{dir: dir, env: env}.run(ctx, goTool, "install", "-ldflags=-s -w", initPkg+"@"+bi.Main.Version)
		if err != nil {
			return "", fmt.Errorf("build guest init: %w", err)
		}
		return out, nil
	}
	return "", fmt.Errorf("%w: no source of %s found (set %s to a prebuilt static init)", ErrNoInitSource, modulePath, EnvInit)
}

// moduleRoot finds the source directory of this module, or "".
func moduleRoot() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root := filepath.Dir(filepath.Dir(file)); isModuleRoot(root) {
			return root
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if isModuleRoot(d) {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// isModuleRoot reports whether dir holds this module's go.mod and the init
// source.
func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "module "+modulePath {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "guest", "init", "main.go"))
	return err == nil
}
