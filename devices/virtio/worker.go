package virtio

import (
	"errors"
	"fmt"
	"sync"
)

// Handler serves one request and returns how many bytes it wrote into the
// chain's writable buffers. An error is reported through the Workers'
// error callback; the chain is completed anyway with the bytes written, so
// the driver always gets its buffers back.
type Handler func(c *Chain) (written uint32, err error)

// Workers runs the queue-serving goroutines of one active device and stops
// them all on Stop. Devices whose queues are driven only by kicks (block,
// rng, net transmit) use Serve; others (net receive, driven by the tap)
// use Go with their own loop and watch StopFD.
type Workers struct {
	stop  *EventFD
	wg    sync.WaitGroup
	onErr func(queue int, err error)

	stopOnce sync.Once
	stopErr  error
}

// NewWorkers makes a worker group; onErr receives request errors (it may
// be nil to drop them) and must be safe for concurrent use.
func NewWorkers(onErr func(queue int, err error)) (*Workers, error) {
	stop, err := NewEventFD()
	if err != nil {
		return nil, err
	}
	if onErr == nil {
		onErr = func(int, error) {}
	}
	return &Workers{stop: stop, onErr: onErr}, nil
}

// StopFD is signalled when the workers must stop.
func (w *Workers) StopFD() *EventFD { return w.stop }

// Go runs fn in the group.
func (w *Workers) Go(fn func()) {
	w.wg.Add(1)
	go func() { defer w.wg.Done(); fn() }()
}

// Serve runs a goroutine that waits for kicks on queue index i and hands
// every available chain to h, raising the interrupt when the driver wants
// one. A broken ring stops that queue (reported through onErr).
func (w *Workers) Serve(i int, aq ActiveQueue, h Handler) {
	w.Go(func() {
		for {
			if err := w.Drain(i, aq, h); err != nil {
				w.onErr(i, err)
				return
			}
			stopped, err := Wait(aq.Kick, w.stop)
			if err != nil {
				w.onErr(i, err)
				return
			}
			if stopped {
				return
			}
		}
	})
}

// drainBatch bounds the chains Drain serves between interrupts and checks
// of the stop signal, so a driver that keeps refilling a ring can neither
// starve itself of interrupts nor hold up Stop.
const drainBatch = 256

// Drain serves every available chain of aq with h, re-enabling driver
// notifications before it returns so no kick is lost. It returns an error
// only when the ring itself is broken. It returns early, with chains left,
// when the workers are told to stop.
func (w *Workers) Drain(i int, aq ActiveQueue, h Handler) error {
	q := aq.Queue
	for {
		completed, more := 0, false
		q.SetNotify(false)
		for {
			if completed == drainBatch {
				more = true
				break
			}
			c, err := q.Next()
			if c == nil && err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
			if c == nil {
				break
			}
			var written uint32
			if err == nil {
				written, err = h(c)
			}
			if err != nil {
				w.onErr(i, fmt.Errorf("queue %d: %w", i, err))
			}
			if err := q.Complete(c, written); err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
			completed++
		}
		if !more {
			q.SetNotify(true)
			more = q.HasAvailable()
		}
		if completed > 0 && q.NeedsInterrupt() && aq.Interrupt != nil {
			if err := aq.Interrupt.Trigger(); err != nil {
				return fmt.Errorf("queue %d: interrupt: %w", i, err)
			}
		}
		if !more || w.stop.signalled() {
			return nil
		}
	}
}

// Stop signals every worker and waits for them to return. Calling it again
// returns the first call's result: a second Signal or Close on the stop
// eventfd's number, which the kernel may have reused for another file by
// then, would hit that file.
func (w *Workers) Stop() error {
	w.stopOnce.Do(func() {
		err := w.stop.Signal()
		w.wg.Wait()
		w.stopErr = errors.Join(err, w.stop.Close())
	})
	return w.stopErr
}
