package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: SKIP: no /dev/kvm\n"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: want 1, got 2\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestC"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}`,
		`{"Action":"fail","Package":"p"}`,
		`# q`,
	}, "\n")
	var out bytes.Buffer
	c, err := report(strings.NewReader(in), &out)
	require.NoError(t, err)
	assert.Equal(t, counts{passed: 1, failed: 1, skipped: 1}, c)
	s := out.String()
	assert.Contains(t, s, "SKIP p TestB: b_test.go:9: SKIP: no /dev/kvm\n")
	assert.Contains(t, s, "=== FAIL p TestC\n    c_test.go:3: want 1, got 2\n")
	assert.Contains(t, s, "FAIL\tp\t0.1s\n")
	assert.Contains(t, s, "# q\n")
	assert.True(t, strings.HasSuffix(s, "1 passed, 1 failed, 1 skipped\n"))
	assert.NotContains(t, s, "=== RUN   TestA", "passing tests stay quiet")
}

func TestReportPackageFailureCounts(t *testing.T) {
	var out bytes.Buffer
	c, err := report(strings.NewReader(`{"Action":"fail","Package":"p"}`), &out)
	require.NoError(t, err)
	assert.Equal(t, 1, c.failed, "a package that crashed or failed to build counts as a failure")
}
