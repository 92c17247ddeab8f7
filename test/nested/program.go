package nested

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

// ErrNoQEMU means the emulator that runs the nested VM is not installed.
var ErrNoQEMU = errors.New(QEMUBinary + " not found (" + QEMUInstallHint + ")")

// HostHasKVM reports whether /dev/kvm opens here for reading and writing:
// then whatever needs KVM runs directly, not in the nested VM.
func HostHasKVM() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Program is one static executable (CGO_ENABLED=0: the nested VM has no
// libc unless a host tool brings one) that RunProgram runs alone in the
// nested VM, with what it needs there.
type Program struct {
	Binary string   // host path; inside it is /program/<base name>
	Args   []string // its arguments
	Env    []string // "KEY=value", on top of HOME, TMPDIR, PATH and WISP_NESTED_INSIDE=1
	// Files are host files put into the VM: absolute path inside -> host
	// path (symlinks followed).
	Files map[string]string
	// HostTools are host programs put at /usr/bin/<name> with the shared
	// libraries they load (as addHostTools does for the KVM tests).
	HostTools []string
	// Timeout is when init stops the program (SIGQUIT, then SIGKILL);
	// 0: no limit but ctx's.
	Timeout time.Duration
}

// RunProgram boots the VM the KVM tests run in (Debian's cloud kernel
// under qemu-system-x86_64 -accel tcg -cpu max, KVM modules loaded,
// /dev/kvm checked by init) and runs p in it. It calls out with each line
// p prints, in order as they come (stdout and stderr are one stream;
// init's "kernel: " lines, the kernel's warnings, come in between). It
// returns p's exit code (-1: killed or not started). An error matching
// ErrNoQEMU or ErrNoKernel means the nested VM cannot run on this host.
func RunProgram(ctx context.Context, p Program, out func(line string)) (int, error) {
	h, err := findHost(ctx, os.Getenv)
	if err != nil {
		return -1, err
	}
	work, err := os.MkdirTemp("", "wisp-nested-")
	if err != nil {
		return -1, fmt.Errorf("nested VM: %w", err)
	}
	defer os.RemoveAll(work)

	name := filepath.Base(p.Binary)
	inside := "/program/" + name
	ird := NewInitramfs()
	if err := ird.AddFile(inside, p.Binary); err != nil {
		return -1, err
	}
	notes, err := addHostTools(ctx, ird, p.HostTools)
	if err != nil {
		return -1, err
	}
	if len(notes) > 0 {
		return -1, fmt.Errorf("nested VM: %s", strings.Join(notes, "; "))
	}
	dests := make([]string, 0, len(p.Files))
	for dst := range p.Files {
		dests = append(dests, dst)
	}
	sort.Strings(dests)
	for _, dst := range dests {
		if err := ird.AddFile(dst, p.Files[dst]); err != nil {
			return -1, err
		}
	}
	plan := protocol.Plan{
		Env:      append(baseEnv(), p.Env...),
		Binaries: []protocol.Binary{{Name: name, Path: inside, Dir: "/", Args: p.Args, Timeout: p.Timeout}},
	}
	vm, err := h.image(ctx, work, ird, plan)
	if err != nil {
		return -1, err
	}

	var res Results
	running := false
	runErr := Run(ctx, vm, 0, func(line string) {
		res.Line(line)
		m, marker, _ := protocol.ParseLine(line)
		switch {
		case marker && m.Kind == protocol.KindBegin:
			running = true
		case marker && m.Kind == protocol.KindEnd:
			running = false
		case !marker && running:
			out(strings.TrimRight(line, "\r"))
		}
	})
	tail := "last console lines:\n" + strings.Join(res.Tail, "\n")
	switch {
	case runErr != nil:
		return -1, fmt.Errorf("%w; %s", runErr, tail)
	case len(res.Errors) > 0:
		return -1, fmt.Errorf("nested VM: %s; %s", strings.Join(res.Errors, "; "), tail)
	case res.KVM == "":
		return -1, fmt.Errorf("nested VM never confirmed /dev/kvm; %s", tail)
	case len(res.Binaries) == 0 || !res.Binaries[0].Ended:
		return -1, fmt.Errorf("nested VM: %s did not finish; %s", name, tail)
	}
	return res.Binaries[0].Exit, nil
}

// BuildMain builds the main package pkg (a pattern relative to the module
// root, e.g. "./cmd/wisp") static into out, fit for Program.Binary or
// Program.Files.
func BuildMain(ctx context.Context, pkg, out string) error {
	gotool, err := goTool()
	if err != nil {
		return err
	}
	root, err := moduleRoot(ctx, gotool)
	if err != nil {
		return err
	}
	return BuildStatic(ctx, gotool, root, pkg, out)
}

// host is what every boot of the nested VM needs from the host: the
// emulator, the kernel with its KVM modules, and the go command and module
// root to build init with.
type host struct {
	qemu         string
	kernel       Kernel
	gotool, root string
}

// findHost looks those up. Errors matching ErrNoQEMU or ErrNoKernel mean
// the nested VM cannot run here.
func findHost(ctx context.Context, getenv func(string) string) (host, error) {
	var h host
	var err error
	if h.qemu, err = exec.LookPath(QEMUBinary); err != nil {
		return host{}, ErrNoQEMU
	}
	if h.kernel, err = FindKernel(ctx, getenv); err != nil {
		return host{}, err
	}
	if h.gotool, err = goTool(); err != nil {
		return host{}, err
	}
	if h.root, err = moduleRoot(ctx, h.gotool); err != nil {
		return host{}, err
	}
	return h, nil
}

// image completes ird with init (test/nested/nestinit, built static), the
// kernel's KVM modules (added to plan, in load order) and plan itself,
// writes it to work/initramfs.cpio and returns the VM that boots it.
func (h host) image(ctx context.Context, work string, ird *Initramfs, plan protocol.Plan) (VM, error) {
	// A retry boots the same files with another plan: add this VM's own
	// to a copy.
	ird = ird.Clone()
	initBin := filepath.Join(work, "init")
	if err := BuildStatic(ctx, h.gotool, h.root, "./test/nested/nestinit", initBin); err != nil {
		return VM{}, err
	}
	if err := ird.AddFile("/init", initBin); err != nil {
		return VM{}, err
	}
	for _, m := range h.kernel.Modules {
		inside := "/modules/" + filepath.Base(m)
		if err := ird.AddFile(inside, m); err != nil {
			return VM{}, err
		}
		plan.Modules = append(plan.Modules, inside)
	}
	planJSON, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return VM{}, fmt.Errorf("nested plan: %w", err)
	}
	ird.AddBytes(protocol.PlanPath, planJSON, 0o644)
	initrd := filepath.Join(work, "initramfs.cpio")
	if err := ird.Write(initrd); err != nil {
		return VM{}, err
	}
	return VM{QEMU: h.qemu, Kernel: h.kernel.Image, Initrd: initrd, CPUs: 2, MemoryMiB: 2048, Cmdline: DefaultCmdline}, nil
}

// baseEnv is the environment of every program init runs (init adds it to
// its own PATH).
func baseEnv() []string {
	return []string{"HOME=/root", "TMPDIR=/tmp", "PATH=/bin:/usr/bin:/sbin:/usr/sbin", EnvInside + "=1"}
}
