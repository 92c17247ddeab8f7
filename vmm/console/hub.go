package console

import (
	"errors"
	"io"
	"sync"
)

// Hub errors; test with errors.Is.
var (
	// ErrConsoleBusy: another viewer already types into the console.
	ErrConsoleBusy = errors.New("console busy: another viewer is writing")
	// ErrReadOnly: the viewer attached only to watch.
	ErrReadOnly = errors.New("console viewer is read-only")
	// ErrClosed: the hub or the viewer was closed.
	ErrClosed = errors.New("console closed")
)

// minLive is the least output the ring holds whatever keep says, so that a
// viewer reading live output has room to fall a little behind even when no
// history is kept.
const minLive = 64 << 10

// inputLimit is how much typed input may wait for the guest before the
// writing viewer blocks. Typing is slow; a paste larger than this waits for
// the guest to read, which pushes back on the typist, not on the guest.
const inputLimit = 64 << 10

// Hub shares one guest console among several viewers. The guest's output
// goes to Write (the backend's vmm.Console.Out); the guest's input comes
// from Input (vmm.Console.In), fed by the one viewer allowed to type.
//
// Output goes into a ring that every viewer reads at its own pace. Write
// never waits for a viewer: a viewer that falls further behind than the ring
// holds loses the oldest bytes it had not read (Viewer.Dropped counts them)
// and carries on from the oldest byte still kept. It is not disconnected: a
// console is a terminal, and a terminal that missed a burst of boot
// messages is still useful.
type Hub struct {
	keep int // bytes of history a new viewer gets

	mu     sync.Mutex
	output sync.Cond // signalled when output arrives or something closes
	input  sync.Cond // signalled when input arrives, is consumed, or something closes

	ring    []byte // output; stream position i is at ring[i%len(ring)]
	written uint64 // output bytes ever written
	writer  *Viewer
	typed   []byte // input not yet read by the guest; at most inputLimit
	closed  bool
}

// NewHub returns a hub that replays the last keep bytes of output to each
// viewer that attaches.
func NewHub(keep int) *Hub {
	keep = max(keep, 0)
	h := &Hub{
		keep:  keep,
		ring:  make([]byte, max(keep, minLive)),
		typed: make([]byte, 0, inputLimit),
	}
	h.output.L = &h.mu
	h.input.L = &h.mu
	return h
}

// Write records the guest's output and wakes the viewers. It never blocks
// on a viewer and does not allocate. It never fails: after Close the output
// is discarded, so a backend still running while the VMM shuts down is not
// stopped by its console.
func (h *Hub) Write(p []byte) (int, error) {
	n := len(p)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || n == 0 {
		return n, nil
	}
	size := len(h.ring)
	if len(p) > size {
		// Only the tail survives; the skipped bytes still count as written
		// so that viewers know what they lost.
		h.written += uint64(len(p) - size)
		p = p[len(p)-size:]
	}
	at := int(h.written % uint64(size))
	c := copy(h.ring[at:], p)
	copy(h.ring, p[c:])
	h.written += uint64(len(p))
	h.output.Broadcast()
	return n, nil
}

// oldest is the stream position of the oldest output byte the ring holds.
func (h *Hub) oldest() uint64 {
	return h.written - min(h.written, uint64(len(h.ring)))
}

// Attach adds a viewer that first reads the kept history and then live
// output. With write it may also type into the guest; only one viewer at a
// time may (ErrConsoleBusy). After Close it fails with ErrClosed.
func (h *Hub) Attach(write bool) (*Viewer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if write && h.writer != nil {
		return nil, ErrConsoleBusy
	}
	v := &Viewer{hub: h, write: write, pos: h.written - min(h.written, uint64(h.keep))}
	if write {
		h.writer = v
	}
	return v, nil
}

// Input is what the guest reads its console input from: the bytes the
// writing viewer typed. Reads block until input arrives; once the hub is
// closed they return io.EOF.
func (h *Hub) Input() io.Reader { return hubInput{h} }

type hubInput struct{ h *Hub }

func (in hubInput) Read(p []byte) (int, error) {
	h := in.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.typed) == 0 && !h.closed {
		h.input.Wait()
	}
	if h.closed {
		return 0, io.EOF
	}
	n := copy(p, h.typed)
	h.typed = h.typed[:copy(h.typed, h.typed[n:])]
	h.input.Broadcast()
	return n, nil
}

// Close ends the console: viewers read what output they have not read yet
// and then io.EOF, Input returns io.EOF, and Attach fails.
func (h *Hub) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.writer = nil
	h.output.Broadcast()
	h.input.Broadcast()
	return nil
}

// Viewer is one attachment to a Hub. Read and Write may be called from
// different goroutines; Close ends both.
type Viewer struct {
	hub   *Hub
	write bool

	// Guarded by hub.mu.
	pos     uint64 // next stream position to read
	dropped uint64
	closed  bool
}

// Read returns console output. It blocks until there is output it has not
// read; it returns io.EOF once the viewer is closed, or once the hub is
// closed and everything written before has been read.
func (v *Viewer) Read(p []byte) (int, error) {
	h := v.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for !v.closed && !h.closed && v.pos == h.written {
		h.output.Wait()
	}
	if v.closed {
		return 0, io.EOF
	}
	if old := h.oldest(); v.pos < old {
		v.dropped += old - v.pos
		v.pos = old
	}
	if v.pos == h.written {
		return 0, io.EOF // the hub is closed and nothing is left
	}
	size := uint64(len(h.ring))
	want := min(uint64(len(p)), h.written-v.pos)
	at := v.pos % size
	n := copy(p[:want], h.ring[at:])
	n += copy(p[n:want], h.ring)
	v.pos += uint64(n)
	return n, nil
}

// Write sends p to the guest as typed input. It fails with ErrReadOnly for
// a viewer that only watches and ErrClosed once the viewer or the hub is
// closed. It blocks while inputLimit bytes already wait for the guest.
func (v *Viewer) Write(p []byte) (int, error) {
	if !v.write {
		return 0, ErrReadOnly
	}
	h := v.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for n < len(p) {
		for len(h.typed) == inputLimit && !v.closed && !h.closed {
			h.input.Wait()
		}
		if v.closed || h.closed {
			return n, ErrClosed
		}
		c := min(len(p)-n, inputLimit-len(h.typed))
		h.typed = append(h.typed, p[n:n+c]...)
		n += c
		h.input.Broadcast()
	}
	return n, nil
}

// Writer reports whether the viewer may type.
func (v *Viewer) Writer() bool { return v.write }

// Dropped is how many output bytes the viewer lost by falling behind.
func (v *Viewer) Dropped() uint64 {
	v.hub.mu.Lock()
	defer v.hub.mu.Unlock()
	return v.dropped
}

// Close detaches the viewer: its Read and Write return at once, and the
// console is free for another writer. Input it typed that the guest has not
// read yet is still delivered.
func (v *Viewer) Close() error {
	h := v.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	v.closed = true
	if h.writer == v {
		h.writer = nil
	}
	h.output.Broadcast()
	h.input.Broadcast()
	return nil
}
