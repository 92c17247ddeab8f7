package ratelog

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a hand-moved clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

// tally counts what a flood of lines through l turned into.
type tally struct {
	allowed    int
	suppressed uint64 // reported in summaries
}

func (t *tally) line(l *Limiter[string], key string) {
	ok, n := l.Allow(key)
	if ok {
		t.allowed++
		t.suppressed += n
	}
}

// pending is how many lines l holds back for key and has not reported.
func pending(l *Limiter[string], key string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets[key].suppressed
}

func TestFloodIsBounded(t *testing.T) {
	tests := []struct {
		name     string
		step     time.Duration // clock advance between lines
		maxLines int
	}{
		{"all at once", 0, 10},
		{"1ms apart (10s)", time.Millisecond, 10 + 10*10/60 + 1},
		{"10ms apart (100s)", 10 * time.Millisecond, 10 + 10*100/60 + 1},
		{"a second apart (10000s)", time.Second, 10 + 10*10000/60 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l := New[string](Config{Burst: 10, Interval: time.Minute, Now: c.now})
			var got tally
			for range 10000 {
				got.line(l, "port 0x3f8")
				c.advance(tt.step)
			}
			assert.LessOrEqual(t, got.allowed, tt.maxLines)
			assert.GreaterOrEqual(t, got.allowed, 10, "the first burst gets through")
			assert.Equal(t, uint64(10000), uint64(got.allowed)+got.suppressed+pending(l, "port 0x3f8"),
				"every line is either logged or counted")
		})
	}
}

func TestSuppressedCountIsReportedWhenLinesFlowAgain(t *testing.T) {
	c := newClock()
	l := New[string](Config{Burst: 3, Interval: time.Minute, Now: c.now})
	for i := range 3 {
		ok, n := l.Allow("k")
		require.True(t, ok, "line %d", i)
		require.Zero(t, n)
	}
	for range 9997 {
		ok, _ := l.Allow("k")
		require.False(t, ok)
	}
	c.advance(time.Minute)
	ok, n := l.Allow("k")
	require.True(t, ok)
	assert.Equal(t, uint64(9997), n)
	ok, n = l.Allow("k")
	require.True(t, ok)
	assert.Zero(t, n, "a count is reported once")
}

func TestTokensComeBackGradually(t *testing.T) {
	c := newClock()
	l := New[string](Config{Burst: 6, Interval: time.Minute, Now: c.now})
	for range 6 {
		ok, _ := l.Allow("k")
		require.True(t, ok)
	}
	c.advance(9 * time.Second) // 0.9 of a token
	ok, _ := l.Allow("k")
	assert.False(t, ok)
	c.advance(time.Second) // the earned fraction is kept: one token now
	ok, _ = l.Allow("k")
	assert.True(t, ok)
	ok, _ = l.Allow("k")
	assert.False(t, ok)
}

func TestDistinctKeysAreLimitedSeparately(t *testing.T) {
	c := newClock()
	l := New[string](Config{Burst: 5, Interval: time.Minute, Now: c.now})
	var a, b tally
	for range 10000 {
		a.line(l, "disk a")
	}
	for range 10000 {
		b.line(l, "disk b")
	}
	assert.Equal(t, 5, a.allowed)
	assert.Equal(t, 5, b.allowed, "a's flood does not use up b's budget")
	assert.Equal(t, uint64(9995), pending(l, "disk a"))
	assert.Equal(t, uint64(9995), pending(l, "disk b"))
}

func TestKeysBeyondMaxKeysShareOneBudget(t *testing.T) {
	c := newClock()
	l := New[uint64](Config{Burst: 2, Interval: time.Minute, MaxKeys: 4, Now: c.now})
	allowed := 0
	for port := range uint64(10000) {
		if ok, _ := l.Allow(port); ok {
			allowed++
		}
	}
	// Each port comes once: one line for each of the four keys with a
	// budget of their own, then the shared budget of two.
	assert.Equal(t, 4+2, allowed)
	assert.Len(t, l.buckets, 4)
}

func TestIdleKeysMakeRoom(t *testing.T) {
	c := newClock()
	l := New[uint64](Config{Burst: 1, Interval: time.Minute, MaxKeys: 2, Now: c.now})
	for key := range uint64(2) {
		ok, _ := l.Allow(key)
		require.True(t, ok)
	}
	ok, _ := l.Allow(2)
	require.True(t, ok, "the shared budget")
	ok, _ = l.Allow(3)
	require.False(t, ok, "the shared budget is spent")
	c.advance(time.Minute)
	ok, _ = l.Allow(3)
	require.True(t, ok)
	assert.Contains(t, l.buckets, uint64(3), "idle keys were dropped and 3 got a bucket")
	assert.LessOrEqual(t, len(l.buckets), 2)
}

func TestSuppressingAllocatesNothing(t *testing.T) {
	c := newClock()
	type access struct {
		mmio bool
		addr uint64
	}
	l := New[access](Config{Burst: 1, Now: c.now})
	key := access{mmio: true, addr: 0xfee00000}
	l.Allow(key)
	allocs := testing.AllocsPerRun(1000, func() {
		if ok, _ := l.Allow(key); ok {
			t.Fatal("the budget should be spent")
		}
	})
	assert.Zero(t, allocs)

	var logged int
	log := Errors(New[string](Config{Burst: 1, Now: c.now}), func(string, error) { logged++ })
	err := errors.New("bad descriptor")
	log("disk a", err)
	allocs = testing.AllocsPerRun(1000, func() { log("disk a", err) })
	assert.Zero(t, allocs)
	assert.Equal(t, 1, logged)
}

func TestErrors(t *testing.T) {
	c := newClock()
	type line struct {
		dev string
		err string
	}
	var got []line
	log := Errors(New[string](Config{Burst: 2, Interval: time.Minute, Now: c.now}), func(dev string, err error) {
		got = append(got, line{dev, err.Error()})
	})
	for i := range 1000 {
		log("disk a", fmt.Errorf("request %d", i))
	}
	log("disk b", errors.New("other"))
	c.advance(time.Minute)
	log("disk a", errors.New("again"))
	assert.Equal(t, []line{
		{"disk a", "request 0"},
		{"disk a", "request 1"},
		{"disk b", "other"},
		{"disk a", "998 more suppressed"},
		{"disk a", "again"},
	}, got)
	var s Suppressed
	require.True(t, errors.As(error(Suppressed(3)), &s))
}

func TestDefaults(t *testing.T) {
	l := New[string](Config{})
	assert.Equal(t, DefaultBurst, l.burst)
	assert.Equal(t, DefaultInterval, l.interval)
	assert.Equal(t, DefaultMaxKeys, l.maxKeys)
	assert.NotNil(t, l.now)
}

// TestConcurrentAllow is for the race detector: vCPU threads share a
// limiter.
func TestConcurrentAllow(t *testing.T) {
	c := newClock()
	l := New[string](Config{Burst: 10, Now: c.now})
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				if ok, _ := l.Allow("k"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 10, allowed)
}
