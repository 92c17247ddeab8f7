package nested

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/wisp-vmm/wisp/guest"
)

// linuxTestFiles gathers what test/kvm's Linux tests use inside the nested
// VM, where nothing can be built: the minimal kernel's vmlinux, the
// default initramfs made for it, and the wisp binary (the agent's VMM
// processes run it). Under -short it uses them only if they are
// already cached. It returns "" (and says why) when they cannot be had; the
// Linux test then skips inside, printing its own reason.
func linuxTestFiles(ctx context.Context, t *testing.T, work, gotool, root string) string {
	kit := &guest.Kit{CacheDir: guest.DefaultCacheDir(), Progress: os.Stderr}
	var (
		k   *guest.Kernel
		err error
	)
	if testing.Short() {
		k, err = kit.MinimalKernelCached(ctx)
	} else {
		k, err = kit.MinimalKernel(ctx)
	}
	if err != nil {
		t.Logf("no minimal kernel for the Linux-on-KVM test: %v", err)
		return ""
	}
	initrd, err := kit.DefaultInitramfs(ctx, k)
	if err != nil {
		t.Logf("no initramfs for the Linux-on-KVM test: %v", err)
		return ""
	}
	dir := filepath.Join(work, "files")
	for src, dst := range map[string]string{k.ELF: "minimal/vmlinux", initrd: "minimal/initramfs.cpio.gz"} {
		if err := copyFile(src, filepath.Join(dir, dst)); err != nil {
			t.Fatalf("test files: %v", err)
		}
	}
	if err := BuildStatic(ctx, gotool, root, "./cmd/wisp", filepath.Join(dir, "bin", "wisp")); err != nil {
		t.Fatalf("test files: %v", err)
	}
	return dir
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
