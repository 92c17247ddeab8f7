// Package testutil holds small helpers shared by wisp's tests.
package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer collects output that one goroutine (a vCPU, a child process's
// pipe) writes while a test polls it from another.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
