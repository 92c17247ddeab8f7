package console

import (
	"io"
	"sync"
)

// asyncLimit is how much output may wait before a writer blocks: enough
// for a burst of boot messages, small enough that a stuck terminal slows the
// guest down instead of growing wisp's memory without bound.
const asyncLimit = 1 << 20

// AsyncWriter decouples a device that writes a byte at a time (the UART,
// from a vCPU thread) from a slow destination (a terminal): writes land in a
// buffer and one goroutine hands whatever has gathered to the destination in
// a single Write. Close flushes what is left.
type AsyncWriter struct {
	dst io.Writer

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	closed  bool
	flushed chan struct{}
	err     error
}

// NewAsyncWriter starts the goroutine that feeds dst.
func NewAsyncWriter(dst io.Writer) *AsyncWriter {
	a := &AsyncWriter{dst: dst, flushed: make(chan struct{})}
	a.cond = sync.NewCond(&a.mu)
	go a.loop()
	return a
}

// Write queues p. It blocks only while asyncLimit bytes are already queued.
func (a *AsyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.buf) >= asyncLimit && !a.closed {
		a.cond.Wait()
	}
	if a.closed {
		return 0, io.ErrClosedPipe
	}
	a.buf = append(a.buf, p...)
	a.cond.Broadcast()
	return len(p), nil
}

func (a *AsyncWriter) loop() {
	defer close(a.flushed)
	var out []byte
	for {
		a.mu.Lock()
		for len(a.buf) == 0 && !a.closed {
			a.cond.Wait()
		}
		if len(a.buf) == 0 && a.closed {
			a.mu.Unlock()
			return
		}
		out, a.buf = a.buf, out[:0]
		a.cond.Broadcast()
		a.mu.Unlock()
		if _, err := a.dst.Write(out); err != nil {
			a.mu.Lock()
			if a.err == nil {
				a.err = err
			}
			a.mu.Unlock()
		}
	}
}

// Close flushes the queued output and stops the goroutine. It returns the
// first error the destination gave, if any.
func (a *AsyncWriter) Close() error {
	a.mu.Lock()
	a.closed = true
	a.cond.Broadcast()
	a.mu.Unlock()
	<-a.flushed
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
