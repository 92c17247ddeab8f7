package nested

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Environment variables the harness reads.
const (
	EnvMode        = "WISP_NESTED"              // "", "always" or "off"
	EnvTimeout     = "WISP_NESTED_TIMEOUT"      // time.ParseDuration syntax
	EnvRun         = "WISP_NESTED_RUN"          // inner -test.run
	EnvSkip        = "WISP_NESTED_SKIP"         // inner -test.skip
	EnvTestTimeout = "WISP_NESTED_TEST_TIMEOUT" // inner -test.timeout, per binary
	EnvKernelRoot  = "WISP_NESTED_KERNEL_ROOT"  // unpacked Debian kernel package
	EnvTestFiles   = "WISP_TEST_FILES"          // directory copied into the VM
	// EnvInside is set to 1 for the test binaries inside the nested VM.
	EnvInside = "WISP_NESTED_INSIDE"
)

// Defaults for WISP_NESTED_TIMEOUT (the whole nested run) and
// WISP_NESTED_TEST_TIMEOUT (each inner test binary, as go test's own).
const (
	DefaultTimeout = 20 * time.Minute
	// StallTimeout is how long the nested VM may print nothing before it
	// is declared stuck: longer than any one inner test takes under load
	// (they print as they start and end).
	StallTimeout       = 6 * time.Minute
	DefaultTestTimeout = 10 * time.Minute
)

// Packages are the packages whose tests run inside the nested VM, as
// patterns relative to the module root. Packages that do not exist (yet)
// or have no tests are skipped with a note.
func Packages() []string {
	return []string{
		"./kvm",
		"./vmm/kvmvm",
		"./test/kvm",
		"./test/nested/selftest",
	}
}

// Mode says whether the nested run happens.
type Mode int

// Modes.
const (
	ModeAuto   Mode = iota // only where the host has no /dev/kvm
	ModeAlways             // even where it has
	ModeOff                // never
)

// Config is the harness's settings, from the environment and the outer
// test's flags.
type Config struct {
	Mode        Mode
	Timeout     time.Duration // the whole nested run
	TestTimeout time.Duration // each inner binary's -test.timeout
	InnerRun    string        // -test.run for the inner binaries, "" for all
	InnerSkip   string        // -test.skip for the inner binaries, "" for none
	PkgFilter   string        // regexp on the package's subtest name (e.g. "vmm.kvmvm"), "" for all
	TestFiles   string        // host directory for WISP_TEST_FILES, "" for none
	Short       bool
}

// ConfigFrom reads the settings. getenv is os.Getenv in the harness;
// outerRun is the outer test binary's -test.run value.
func ConfigFrom(getenv func(string) string, outerRun string, short bool) (Config, error) {
	c := Config{Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout, Short: short, TestFiles: getenv(EnvTestFiles)}
	switch m := getenv(EnvMode); m {
	case "", "auto":
		c.Mode = ModeAuto
	case "always", "1":
		c.Mode = ModeAlways
	case "off", "0":
		c.Mode = ModeOff
	default:
		return Config{}, fmt.Errorf("%s=%q: want always, off or auto", EnvMode, m)
	}
	for _, d := range []struct {
		env string
		to  *time.Duration
	}{{EnvTimeout, &c.Timeout}, {EnvTestTimeout, &c.TestTimeout}} {
		if v := getenv(d.env); v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil || dur <= 0 {
				return Config{}, fmt.Errorf("%s=%q: want a positive duration like 20m", d.env, v)
			}
			*d.to = dur
		}
	}
	c.PkgFilter, c.InnerRun = splitRun(outerRun)
	if v := getenv(EnvRun); v != "" {
		c.InnerRun = v
	}
	c.InnerSkip = getenv(EnvSkip)
	if c.TestFiles != "" {
		if st, err := os.Stat(c.TestFiles); err != nil || !st.IsDir() {
			return Config{}, fmt.Errorf("%s=%s: not a directory", EnvTestFiles, c.TestFiles)
		}
	}
	return c, nil
}

// splitRun takes the outer -run pattern apart like go test does for
// subtests: element 2 selects packages, elements 3 and on are the inner
// -test.run. ("TestKVMTestsInNestedVM/kvm/TestFoo" -> "kvm", "TestFoo".)
// The package element matches SubtestName (vmm/kvmvm is "vmm.kvmvm").
func splitRun(run string) (pkg, inner string) {
	parts := strings.SplitN(run, "/", 3)
	if len(parts) >= 2 {
		pkg = parts[1]
	}
	if len(parts) == 3 {
		inner = parts[2]
	}
	return pkg, inner
}
