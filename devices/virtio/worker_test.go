package virtio

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newEventFD(t *testing.T) *EventFD {
	t.Helper()
	e, err := NewEventFD()
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// waitFor blocks until e is signalled (no timeout: a lost interrupt hangs
// the test until go test's own deadline, which names it).
func waitFor(t *testing.T, e *EventFD) {
	t.Helper()
	never := newEventFD(t)
	stopped, err := Wait(e, never)
	require.NoError(t, err)
	require.False(t, stopped)
}

type queueError struct {
	queue int
	err   error
}

func TestEventFD(t *testing.T) {
	e := newEventFD(t)
	n, err := e.Drain()
	require.NoError(t, err)
	assert.Zero(t, n)
	require.NoError(t, e.Signal())
	require.NoError(t, e.Trigger())
	n, err = e.Drain()
	require.NoError(t, err)
	assert.Equal(t, uint64(2), n)

	stop := newEventFD(t)
	require.NoError(t, stop.Signal())
	stopped, err := Wait(e, stop)
	require.NoError(t, err)
	assert.True(t, stopped)
	n, err = stop.Drain()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), n, "Wait leaves stop signalled")
}

// End to end with real eventfds: the driver kicks, the worker runs the
// handler, the chain lands in the used ring and the call eventfd fires.
func TestServeEndToEnd(t *testing.T) {
	skipUnderRace(t)
	r := newTestRing(t, 8)
	q := r.queue(FeatureVersion1 | FeatureRingIndirectDesc)
	kick, call := newEventFD(t), newEventFD(t)
	errs := make(chan queueError, 16)
	w, err := NewWorkers(func(i int, err error) { errs <- queueError{i, err} })
	require.NoError(t, err)

	handler := func(c *Chain) (uint32, error) {
		in := make([]byte, c.ReadableLen())
		_, err := c.Reader().Read(in)
		if err != nil {
			return 0, err
		}
		if string(in) == "fail" {
			return 1, errors.New("handler refused")
		}
		out := c.Writer()
		n, err := out.Write(append([]byte("echo:"), in...))
		return uint32(n), err
	}
	w.Serve(3, ActiveQueue{Queue: q, Kick: kick, Interrupt: call}, handler)

	// A good request.
	copy(r.at(testData), "ping")
	r.desc(0, testData, 4, descFNext, 1)
	r.desc(1, testData+0x100, 16, descFWrite, 0)
	r.push(0)
	require.NoError(t, kick.Signal())
	waitFor(t, call)
	require.Equal(t, uint16(1), r.usedIdx())
	id, ln := r.usedElem(0)
	assert.Equal(t, uint32(0), id)
	assert.Equal(t, uint32(9), ln)
	assert.Equal(t, "echo:ping", string(r.at(testData + 0x100)[:9]))

	// A handler error is reported and the chain still comes back.
	copy(r.at(testData+0x200), "fail")
	r.desc(2, testData+0x200, 4, descFNext, 3)
	r.desc(3, testData+0x300, 1, descFWrite, 0)
	r.push(2)
	require.NoError(t, kick.Signal())
	waitFor(t, call)
	require.Equal(t, uint16(2), r.usedIdx())
	id, ln = r.usedElem(1)
	assert.Equal(t, uint32(2), id)
	assert.Equal(t, uint32(1), ln)
	e := <-errs
	assert.Equal(t, 3, e.queue)
	assert.ErrorContains(t, e.err, "handler refused")

	// A malformed chain is reported and returned with 0 bytes.
	r.desc(4, testMemLimit, 4, 0, 0)
	r.push(4)
	require.NoError(t, kick.Signal())
	waitFor(t, call)
	require.Equal(t, uint16(3), r.usedIdx())
	id, ln = r.usedElem(2)
	assert.Equal(t, uint32(4), id)
	assert.Equal(t, uint32(0), ln)
	e = <-errs
	assert.ErrorIs(t, e.err, ErrBadChain)

	// An indirect chain.
	const table = testData + 0x1000
	copy(r.at(testData+0x400), "abc")
	r.putDesc(table, 0, testData+0x400, 3, descFNext, 1)
	r.putDesc(table, 1, testData+0x500, 8, descFWrite, 0)
	r.desc(5, table, 2*descSize, descFIndir, 0)
	r.push(5)
	require.NoError(t, kick.Signal())
	waitFor(t, call)
	require.Equal(t, uint16(4), r.usedIdx())
	assert.Equal(t, "echo:abc", string(r.at(testData + 0x500)[:8]))

	// A broken ring stops the queue's worker and is reported.
	r.push(200)
	require.NoError(t, kick.Signal())
	e = <-errs
	assert.ErrorIs(t, e.err, ErrBadRing)
	require.NoError(t, w.Stop())
	assert.Empty(t, errs)
}

func TestStopIdleWorkers(t *testing.T) {
	w, err := NewWorkers(nil)
	require.NoError(t, err)
	for i := range 3 {
		r := newTestRing(t, 4)
		w.Serve(i, ActiveQueue{Queue: r.queue(0), Kick: newEventFD(t)}, func(*Chain) (uint32, error) { return 0, nil })
	}
	ran := make(chan struct{})
	w.Go(func() {
		_, err := Wait(newEventFD(t), w.StopFD())
		assert.NoError(t, err)
		close(ran)
	})
	require.NoError(t, w.Stop())
	<-ran
}

type countingInterrupt struct{ n int }

func (c *countingInterrupt) Trigger() error { c.n++; return nil }

// Drain is synchronous, so what it must not do (interrupt, leave
// notifications off) can be checked without timing.
func TestDrain(t *testing.T) {
	tests := []struct {
		name       string
		features   uint64
		chains     int
		availFlags uint16
		usedEvent  uint16
		wantIRQ    int
	}{
		{"nothing to do, no interrupt", 0, 0, 0, 0, 0},
		{"interrupt after a batch", 0, 3, 0, 0, 1},
		{"driver set NO_INTERRUPT", 0, 3, availFNoIRQ, 0, 0},
		{"event index: first batch interrupts", FeatureRingEventIdx, 2, availFNoIRQ, 0xffff, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRing(t, 8)
			q := r.queue(tt.features)
			r.setAvailFlags(tt.availFlags)
			r.setUsedEvent(tt.usedEvent)
			r.desc(0, testData, 4, descFWrite, 0)
			for range tt.chains {
				r.push(0)
			}
			w, err := NewWorkers(nil)
			require.NoError(t, err)
			defer func() { require.NoError(t, w.Stop()) }()
			irq := &countingInterrupt{}
			handled := 0
			err = w.Drain(0, ActiveQueue{Queue: q, Interrupt: irq}, func(*Chain) (uint32, error) {
				handled++
				return 4, nil
			})
			require.NoError(t, err)
			assert.Equal(t, tt.chains, handled)
			assert.Equal(t, uint16(tt.chains), r.usedIdx())
			assert.Equal(t, tt.wantIRQ, irq.n)
			// Notifications are back on when Drain returns.
			assert.Zero(t, r.usedFlags()&usedFNoKick)
			if tt.features&FeatureRingEventIdx != 0 {
				assert.Equal(t, uint16(tt.chains), r.availEvent())
			}
		})
	}
}

func TestDrainBrokenRing(t *testing.T) {
	r := newTestRing(t, 8)
	q := r.queue(0)
	r.push(9)
	w, err := NewWorkers(nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, w.Stop()) }()
	err = w.Drain(1, ActiveQueue{Queue: q}, func(*Chain) (uint32, error) { return 0, nil })
	require.ErrorIs(t, err, ErrBadRing)
	assert.ErrorContains(t, err, "queue 1")
}

func TestStopTwice(t *testing.T) {
	w, err := NewWorkers(nil)
	require.NoError(t, err)
	require.NoError(t, w.Stop())
	require.NoError(t, w.Stop(), "second Stop does not touch the closed eventfd")
}

// skipUnderRace skips a test in which a goroutine playing the guest driver
// and the device's worker share ring memory: they synchronize the way a
// guest and a device do, through eventfds and the ring's own indices,
// which the race detector cannot see, so it reports races that are the
// protocol working as designed.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("race detector: driver and device share guest memory outside Go's memory model (eventfd handoff)")
	}
}

// A driver that refills the ring as fast as the device empties it cannot
// hold Drain (and so Stop) forever: Drain checks the stop signal after
// every batch, and interrupts once per batch.
func TestDrainStopsBetweenBatchesWhenTheDriverKeepsRefilling(t *testing.T) {
	r := newTestRing(t, 8)
	q := r.queue(0)
	r.desc(0, testData, 4, descFWrite, 0)
	r.push(0)
	w, err := NewWorkers(nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, w.Stop()) }()
	require.NoError(t, w.stop.Signal())
	irq := &countingInterrupt{}
	handled := 0
	err = w.Drain(0, ActiveQueue{Queue: q, Interrupt: irq}, func(*Chain) (uint32, error) {
		handled++
		r.push(0) // the driver hands the buffer straight back
		return 4, nil
	})
	require.NoError(t, err)
	assert.Equal(t, drainBatch, handled)
	assert.Equal(t, 1, irq.n)
}
