package nested

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/nested/protocol"
)

func feed(lines ...string) *Results {
	var r Results
	for _, l := range lines {
		r.Line(l)
	}
	return &r
}

func TestResultsFollowAWholeRun(t *testing.T) {
	r := feed(
		"[    1.0] some kernel line",
		protocol.Line(protocol.KindInfo, "loaded /modules/kvm.ko"),
		protocol.Line(protocol.KindKVM, "/dev/kvm api=12")+"\r",
		protocol.Begin("kvm"),
		"=== RUN   TestA",
		"    a_test.go:1: hello",
		"--- PASS: TestA (0.00s)",
		"=== RUN   TestB",
		"=== RUN   TestB/sub",
		"    b_test.go:9: boom",
		"    --- FAIL: TestB/sub (0.00s)",
		"--- FAIL: TestB (0.01s)",
		"=== RUN   TestC",
		"    c_test.go:3: SKIP: no thing",
		"--- SKIP: TestC (0.00s)",
		"FAIL",
		protocol.End("kvm", 1),
		protocol.Begin("vmm/kvmvm"),
		"PASS",
		protocol.End("vmm/kvmvm", 0),
		protocol.Done(),
	)
	assert.Equal(t, "/dev/kvm api=12", r.KVM)
	assert.True(t, r.Done)
	assert.Empty(t, r.Errors)
	require.Len(t, r.Binaries, 2)

	k := r.Binaries[0]
	assert.Equal(t, "kvm", k.Name)
	assert.True(t, k.Ended)
	assert.Equal(t, 1, k.Exit)
	require.Len(t, k.Tests, 3)
	assert.Equal(t, TestResult{Name: "TestA", Outcome: Pass, Output: []string{"    a_test.go:1: hello"}}, k.Tests[0])
	assert.Equal(t, "TestB", k.Tests[1].Name)
	assert.Equal(t, Fail, k.Tests[1].Outcome)
	assert.Contains(t, strings.Join(k.Tests[1].Output, "\n"), "b_test.go:9: boom")
	assert.Equal(t, Skip, k.Tests[2].Outcome)
	assert.Equal(t, []TestResult{k.Tests[1]}, k.Failed())

	v := r.Binaries[1]
	assert.True(t, v.Ended)
	assert.Zero(t, v.Exit)
	assert.Empty(t, v.Tests)
}

func TestResultsParallelTestsKeepTheirOwnOutput(t *testing.T) {
	r := feed(
		protocol.Begin("p"),
		"=== RUN   TestX",
		"=== PAUSE TestX",
		"=== RUN   TestY",
		"=== PAUSE TestY",
		"=== CONT  TestX",
		"    x_test.go:1: from x",
		"=== CONT  TestY",
		"    y_test.go:1: from y",
		"--- PASS: TestY (0.00s)",
		"=== NAME  TestX",
		"    x_test.go:2: x again",
		"--- FAIL: TestX (0.00s)",
		protocol.End("p", 1),
	)
	b := r.Binaries[0]
	require.Len(t, b.Tests, 2)
	assert.Equal(t, []string{"    y_test.go:1: from y"}, b.Tests[0].Output)
	assert.Equal(t, []string{"    x_test.go:1: from x", "    x_test.go:2: x again"}, b.Tests[1].Output)
}

func TestResultsAVMThatDiesMidway(t *testing.T) {
	r := feed(
		protocol.Line(protocol.KindKVM, "ok"),
		protocol.Begin("kvm"),
		"=== RUN   TestA",
		"[   5.0] Kernel panic - not syncing: oops",
	)
	assert.False(t, r.Done)
	require.Len(t, r.Binaries, 1)
	assert.False(t, r.Binaries[0].Ended)
	assert.Equal(t, "[   5.0] Kernel panic - not syncing: oops", r.Tail[len(r.Tail)-1])
}

func TestResultsRecordErrorsAndBadMarkers(t *testing.T) {
	r := feed(
		protocol.Line(protocol.KindError, "no usable /dev/kvm"),
		protocol.Prefix+"END kvm exit=?",
	)
	require.Len(t, r.Errors, 2)
	assert.Equal(t, "no usable /dev/kvm", r.Errors[0])
	assert.Contains(t, r.Errors[1], "exit code")
}

func TestResultsKeepABoundedTail(t *testing.T) {
	var r Results
	for i := range 100 {
		r.Line(strings.Repeat("x", i))
	}
	assert.Len(t, r.Tail, tailLines)
	assert.Equal(t, strings.Repeat("x", 99), r.Tail[tailLines-1])
}

// TestResultsSeeANestedKernelCrash: the nested kernel's oops (here one a
// CI run saw) marks the run for a retry; test output that merely says BUG
// does not.
func TestResultsSeeANestedKernelCrash(t *testing.T) {
	tests := []struct {
		line  string
		crash bool
	}{
		{"[  149.026499] BUG: TASK stack guard page was hit at 0000000006decd0f (stack is 00000000f7ebbd57..000000007d1bf031)", true},
		{"[   12.000001] Kernel panic - not syncing: Fatal exception", true},
		{"--- FAIL: TestBUG: found a bug", false},
		{"    foo_test.go:12: BUG: expected", false},
	}
	for _, tt := range tests {
		r := &Results{}
		r.Line(tt.line)
		assert.Equal(t, tt.crash, r.KernelCrash != "", tt.line)
	}
}
