package nested

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-vmm/wisp/test/guests"
	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

// TestKVMTestsInNestedVM runs the KVM-tier tests of Packages() inside a
// QEMU-TCG VM with nested SVM, where the host has no /dev/kvm. See the
// package comment for what it does and the environment it reads.
func TestKVMTestsInNestedVM(t *testing.T) {
	runFlag := ""
	if f := flag.Lookup("test.run"); f != nil {
		runFlag = f.Value.String()
	}
	cfg, err := ConfigFrom(os.Getenv, runFlag, testing.Short())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.Mode == ModeOff:
		t.Skipf("SKIP: %s=off", EnvMode)
	case cfg.Mode == ModeAuto && HostHasKVM():
		t.Skip("SKIP: host has /dev/kvm: the KVM tests run directly (set " + EnvMode + "=always to run them nested too)")
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline(t, cfg.Timeout))
	defer cancel()
	h, err := findHost(ctx, os.Getenv)
	switch {
	case errors.Is(err, ErrNoQEMU):
		t.Skipf("SKIP: %s not found, so the KVM tests cannot run in a nested VM here: %s", QEMUBinary, QEMUInstallHint)
	case errors.Is(err, ErrNoKernel):
		t.Skipf("SKIP: cannot run the KVM tests nested: %v", err)
	case err != nil:
		t.Fatal(err)
	}
	gotool, root := h.gotool, h.root

	pkgs, err := ListPackages(ctx, gotool, root, Packages(), cfg.PkgFilter)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, p := range pkgs {
		if p.Dir != "" {
			patterns = append(patterns, p.Pattern)
		}
	}
	sources, err := SourceFiles(ctx, gotool, root, append(patterns, "./test/nested/nestinit", "./cmd/wisp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sources {
		os.Stat(f) // for go test's result cache; see SourceFiles
	}
	work := t.TempDir()
	if cfg.TestFiles == "" {
		cfg.TestFiles = linuxTestFiles(ctx, t, work, gotool, root)
	}
	ird := NewInitramfs()
	plan := protocol.Plan{Env: innerEnv(cfg)}
	var toRun []TestPackage
	start := time.Now()
	for _, p := range pkgs {
		switch {
		case p.Dir == "":
			t.Run(p.SubtestName(), func(t *testing.T) { t.Skipf("SKIP: package %s: %s", p.Pattern, p.Problem) })
			continue
		case !p.HasTests:
			t.Run(p.SubtestName(), func(t *testing.T) { t.Skipf("SKIP: package %s has no tests", p.Pattern) })
			continue
		}
		bin := filepath.Join(work, p.BinaryName())
		if err := BuildTestBinary(ctx, gotool, root, p, bin); err != nil {
			t.Run(p.SubtestName(), func(t *testing.T) { t.Fatal(err) })
			continue
		}
		inside := "/src/" + p.Name
		ird.AddDir(inside)
		if td := filepath.Join(p.Dir, "testdata"); isDir(td) {
			if err := ird.AddTree(inside+"/testdata", td); err != nil {
				t.Fatal(err)
			}
		}
		if err := ird.AddFile("/tests/"+p.BinaryName(), bin); err != nil {
			t.Fatal(err)
		}
		plan.Binaries = append(plan.Binaries, protocol.Binary{
			Name: p.Name, Path: "/tests/" + p.BinaryName(), Dir: inside, Args: innerArgs(cfg),
			Timeout: cfg.TestTimeout + time.Minute, // after -test.timeout had its chance
		})
		toRun = append(toRun, p)
	}
	if len(toRun) == 0 {
		t.Skip("SKIP: no package with KVM tests to run nested (see the subtests)")
	}
	t.Logf("built %d test binaries in %s", len(toRun), time.Since(start).Round(time.Second))

	notes, err := addHostTools(ctx, ird, HostTools())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range notes {
		t.Log(n)
	}
	for _, name := range guests.Names() {
		if err := ird.AddFile("/guests/"+name, guests.Build(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.TestFiles != "" {
		if err := ird.AddTree("/files", cfg.TestFiles); err != nil {
			t.Fatal(err)
		}
	}
	res, runErr := runPlan(ctx, t, h, work, ird, plan)
	if unfinished := unfinishedBinaries(plan, res); (errors.Is(runErr, ErrStalled) || res.KernelCrash != "") && len(unfinished) > 0 {
		// A stuck or crashed nested kernel is the emulator's, not the
		// tests': say so loudly and give the packages it did not get
		// through one fresh VM.
		why := fmt.Sprint(runErr)
		if res.KernelCrash != "" {
			why = "the nested kernel crashed (" + strings.TrimSpace(res.KernelCrash) + ")"
		}
		t.Logf("RETRY: %s in %s; running %d unfinished package(s) once more in a fresh nested VM",
			why, res.Running(), len(unfinished))
		retry := plan
		retry.Binaries = unfinished
		again, againErr := runPlan(ctx, t, h, work, ird, retry)
		res.Merge(again)
		runErr = againErr
	}
	report(t, res, toRun, runErr, cfg)
}

// runPlan boots the nested VM with plan and collects its results.
func runPlan(ctx context.Context, t *testing.T, h host, work string, ird *Initramfs, plan protocol.Plan) (*Results, error) {
	t.Helper()
	vm, err := h.image(ctx, work, ird, plan)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(vm.Initrd); err == nil {
		t.Logf("initramfs %d MiB; booting %s", st.Size()>>20, vm.Kernel)
	}
	res := &Results{}
	start := time.Now()
	runErr := Run(ctx, vm, StallTimeout, func(line string) {
		t.Log("vm: " + line)
		res.Line(line)
	})
	t.Logf("nested VM ran %s", time.Since(start).Round(time.Second))
	return res, runErr
}

// unfinishedBinaries lists the binaries of plan that res did not see end.
func unfinishedBinaries(plan protocol.Plan, res *Results) []protocol.Binary {
	ended := map[string]bool{}
	for _, b := range res.Binaries {
		ended[b.Name] = b.Ended
	}
	var out []protocol.Binary
	for _, b := range plan.Binaries {
		if !ended[b.Name] {
			out = append(out, b)
		}
	}
	return out
}

// report mirrors the inner results as subtests and fails the outer test
// if the VM did not get through its plan.
func report(t *testing.T, res *Results, pkgs []TestPackage, runErr error, cfg Config) {
	t.Helper()
	tail := "last console lines:\n" + strings.Join(res.Tail, "\n")
	byName := map[string]*BinaryResult{}
	for _, b := range res.Binaries {
		byName[b.Name] = b
	}
	for _, p := range pkgs {
		b := byName[p.Name]
		t.Run(p.SubtestName(), func(t *testing.T) {
			if b == nil {
				t.Fatalf("%s never ran in the nested VM", p.Name)
			}
			for _, tr := range b.Tests {
				t.Run(tr.Name, func(t *testing.T) {
					switch tr.Outcome {
					case Fail:
						t.Errorf("failed in the nested VM:\n%s", strings.Join(tr.Output, "\n"))
					case Skip:
						t.Skipf("skipped in the nested VM:\n%s", strings.Join(tr.Output, "\n"))
					}
				})
			}
			switch {
			case !b.Ended:
				t.Errorf("%s did not finish: the nested VM ended or timed out while it ran", p.Name)
			case b.Exit != 0 && len(b.Failed()) == 0:
				t.Errorf("%s exited with code %d in the nested VM; its last lines:\n%s", p.Name, b.Exit, lastLines(b.Output, 40))
			case b.Exit == 0 && len(b.Tests) == 0:
				t.Skipf("SKIP: %s ran no test (inner -test.run %q)", p.Name, cfg.InnerRun)
			}
		})
	}
	for _, e := range res.Errors {
		t.Errorf("nested VM: %s", e)
	}
	switch {
	case errors.Is(runErr, ErrTimeout):
		t.Fatalf("%v (%s=%s); %s", runErr, EnvTimeout, cfg.Timeout, tail)
	case runErr != nil:
		t.Fatalf("nested VM: %v; %s", runErr, tail)
	case res.KVM == "" && len(res.Errors) == 0:
		t.Fatalf("nested VM never confirmed /dev/kvm; %s", tail)
	case !res.Done:
		t.Fatalf("nested VM stopped before its init finished (a kernel panic or an init crash); %s", tail)
	}
}

// deadline is now + timeout, but ends 30 s before go test's own -timeout
// would panic, so the failure message is ours.
func deadline(t *testing.T, timeout time.Duration) time.Time {
	d := time.Now().Add(timeout)
	if td, ok := t.Deadline(); ok && td.Add(-30*time.Second).Before(d) {
		d = td.Add(-30 * time.Second)
		t.Logf("go test -timeout leaves the nested run %s, less than %s=%s: pass -timeout 30m",
			time.Until(d).Round(time.Second), EnvTimeout, timeout)
	}
	return d
}

// innerArgs are the flags of every inner test binary.
func innerArgs(cfg Config) []string {
	args := []string{"-test.v", "-test.timeout=" + cfg.TestTimeout.String()}
	if cfg.InnerRun != "" {
		args = append(args, "-test.run="+cfg.InnerRun)
	}
	if cfg.InnerSkip != "" {
		args = append(args, "-test.skip="+cfg.InnerSkip)
	}
	if cfg.Short {
		args = append(args, "-test.short")
	}
	return args
}

// innerEnv is the environment of every inner test binary (init adds it
// to its own PATH).
func innerEnv(cfg Config) []string {
	env := append(baseEnv(), guests.EnvPrebuilt+"=/guests")
	if cfg.TestFiles != "" {
		env = append(env, EnvTestFiles+"=/files")
	}
	return env
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func lastLines(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
