package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKmsgLine(t *testing.T) {
	tests := []struct {
		rec  string
		line string
		keep bool
	}{
		{"4,512,7031931,-;kvm: SMP vm created on host with unstable TSC\n", "kvm: SMP vm created on host with unstable TSC", true},
		{"3,600,1,-;Out of memory: Killed process 42 (x.test)\n SUBSYSTEM=mem\n", "Out of memory: Killed process 42 (x.test)", true},
		{"6,601,1,-;SVM: kvm: Nested Paging enabled\n", "", false},
		{"12,602,1,-;user warning, facility 1\n", "user warning, facility 1", true},
		{"garbage", "", false},
		{"x,1,1,-;bad prio\n", "", false},
	}
	for _, tt := range tests {
		line, keep := kmsgLine(tt.rec)
		assert.Equal(t, tt.keep, keep, tt.rec)
		assert.Equal(t, tt.line, line, tt.rec)
	}
}

func TestLineTrackerHoldsKernelLinesUntilALineEnds(t *testing.T) {
	var buf bytes.Buffer
	lt := &lineTracker{w: &buf}
	lt.Write([]byte("--- PA"))
	lt.between("kernel: oops")
	lt.Write([]byte("SS: TestX (0.00s)\n"))
	lt.Write([]byte("no newline"))
	lt.marker("WISP-NESTED END x exit=0")
	assert.Equal(t, "--- PASS: TestX (0.00s)\nkernel: oops\nno newline\nWISP-NESTED END x exit=0\n", buf.String())
}
