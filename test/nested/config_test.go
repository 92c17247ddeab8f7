package nested

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFrom(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		env     map[string]string
		run     string
		short   bool
		want    Config
		wantErr string
	}{
		{name: "defaults", want: Config{Mode: ModeAuto, Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout}},
		{name: "always, timeout, files, short",
			env:   map[string]string{EnvMode: "always", EnvTimeout: "90s", EnvTestTimeout: "1m", EnvTestFiles: dir},
			short: true,
			want:  Config{Mode: ModeAlways, Timeout: 90 * time.Second, TestTimeout: time.Minute, TestFiles: dir, Short: true}},
		{name: "off", env: map[string]string{EnvMode: "off"}, want: Config{Mode: ModeOff, Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout}},
		{name: "outer run selects package and inner run",
			run:  "TestKVMTestsInNestedVM/kvmvm/TestBoot/sub",
			want: Config{Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout, PkgFilter: "kvmvm", InnerRun: "TestBoot/sub"}},
		{name: "outer run names only the package",
			run:  "TestKVMTestsInNestedVM/selftest",
			want: Config{Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout, PkgFilter: "selftest"}},
		{name: "env run wins",
			env:  map[string]string{EnvRun: "TestZ", EnvSkip: "TestSlow"},
			run:  "TestKVMTestsInNestedVM/kvm/TestY",
			want: Config{Timeout: DefaultTimeout, TestTimeout: DefaultTestTimeout, PkgFilter: "kvm", InnerRun: "TestZ", InnerSkip: "TestSlow"}},
		{name: "bad mode", env: map[string]string{EnvMode: "sometimes"}, wantErr: EnvMode},
		{name: "bad timeout", env: map[string]string{EnvTimeout: "soon"}, wantErr: EnvTimeout},
		{name: "negative timeout", env: map[string]string{EnvTimeout: "-1m"}, wantErr: EnvTimeout},
		{name: "bad test timeout", env: map[string]string{EnvTestTimeout: "0s"}, wantErr: EnvTestTimeout},
		{name: "files not a dir", env: map[string]string{EnvTestFiles: dir + "/nope"}, wantErr: EnvTestFiles},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFrom(env(tt.env), tt.run, tt.short)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestInnerArgsAndEnv(t *testing.T) {
	assert.Equal(t, []string{"-test.v", "-test.timeout=10m0s"}, innerArgs(Config{TestTimeout: 10 * time.Minute}))
	assert.Equal(t, []string{"-test.v", "-test.timeout=1m0s", "-test.run=TestA", "-test.short"},
		innerArgs(Config{TestTimeout: time.Minute, InnerRun: "TestA", Short: true}))
	assert.Equal(t, []string{"-test.v", "-test.timeout=1m0s", "-test.skip=TestB"},
		innerArgs(Config{TestTimeout: time.Minute, InnerSkip: "TestB"}))
	assert.Contains(t, innerEnv(Config{}), "WISP_TEST_GUESTS=/guests")
	assert.NotContains(t, innerEnv(Config{}), "WISP_TEST_FILES=/files")
	assert.Contains(t, innerEnv(Config{TestFiles: "/x"}), "WISP_TEST_FILES=/files")
}
