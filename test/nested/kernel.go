package nested

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/wisp-vmm/wisp/guest"
)

// ErrNoKernel means no Debian kernel was found to boot the nested VM.
var ErrNoKernel = errors.New("no Debian cloud kernel for the nested VM")

// Kernel is what the nested VM boots: a bzImage and the KVM modules built
// for it, in load order.
type Kernel struct {
	Image   string
	Modules []string
}

// FindKernel returns the kernel the nested VM boots: the unpacked Debian
// kernel package at $WISP_NESTED_KERNEL_ROOT if set, else Debian's cloud
// kernel from the guest kit (fetched with apt-get download on first use,
// then cached). Errors that mean "no kernel to be had here" match
// ErrNoKernel.
func FindKernel(ctx context.Context, getenv func(string) string) (Kernel, error) {
	if root := getenv(EnvKernelRoot); root != "" {
		return kernelIn(root)
	}
	kit := guest.Kit{CacheDir: guest.DefaultCacheDir()}
	kern, err := kit.DebianKernel(ctx)
	if err != nil && ctx.Err() != nil {
		return Kernel{}, fmt.Errorf("guest kit: %w", err)
	}
	if err != nil {
		return Kernel{}, fmt.Errorf("%w: guest kit: %w (or set %s to an unpacked Debian cloud kernel package)", ErrNoKernel, err, EnvKernelRoot)
	}
	if kern.ModulesDir == "" {
		return Kernel{}, fmt.Errorf("%w: the guest kit's kernel %s has no modules directory", ErrNoKernel, kern.Version)
	}
	return withModules(kern.Image, kern.ModulesDir, kern.Version)
}

// kernelIn finds boot/vmlinuz-VERSION and lib/modules/VERSION's
// irqbypass.ko, kvm.ko and kvm-amd.ko under root. TCG emulates SVM, not
// VMX, so kvm-amd is the module that can work.
func kernelIn(root string) (Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) == 0 {
		return Kernel{}, fmt.Errorf("%w: no boot/vmlinuz-* under %s", ErrNoKernel, root)
	}
	sort.Strings(images)
	image := images[len(images)-1]
	version := filepath.Base(image)[len("vmlinuz-"):]
	return withModules(image, filepath.Join(root, "lib", "modules", version), version)
}

// withModules finds the kvm modules in modulesDir (lib/modules/VERSION).
func withModules(image, modulesDir, version string) (Kernel, error) {
	mods := filepath.Join(modulesDir, "kernel")
	k := Kernel{Image: image}
	for _, rel := range []string{"virt/lib/irqbypass.ko", "arch/x86/kvm/kvm.ko", "arch/x86/kvm/kvm-amd.ko"} {
		p := filepath.Join(mods, rel)
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("%w: module %s for %s: %w (only uncompressed .ko are supported)", ErrNoKernel, rel, version, err)
		}
		k.Modules = append(k.Modules, p)
	}
	return k, nil
}
