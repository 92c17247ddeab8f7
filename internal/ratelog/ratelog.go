// Package ratelog limits log lines a guest can trigger. A guest that
// repeats a malformed request or a faulting access millions of times a
// second must not turn into as many lines on the host (and as many
// blocking writes on a vCPU thread): each key (an address, a device) gets
// a small budget of lines, what goes over it is only counted, and the
// count is reported once lines for that key flow again.
package ratelog

import (
	"fmt"
	"sync"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultBurst    = 10
	DefaultInterval = time.Minute
	DefaultMaxKeys  = 64
)

// Config tunes a Limiter. Zero fields take the defaults.
type Config struct {
	// Burst is how many lines a key may log at once, and how many it
	// earns back over each Interval.
	Burst int
	// Interval is how long a key takes to earn back a full Burst.
	Interval time.Duration
	// MaxKeys bounds how many keys get a budget of their own, so that a
	// guest choosing keys (every port of the I/O space) cannot grow the
	// limiter; further keys share one budget until idle keys are dropped.
	MaxKeys int
	// Now is the clock; tests inject one.
	Now func() time.Time
}

// Limiter is a token bucket per key. It is safe for concurrent use (vCPU
// threads share one), and deciding to suppress a line allocates nothing.
type Limiter[K comparable] struct {
	burst    int
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu      sync.Mutex
	buckets map[K]bucket
	// overflow is the budget shared by the keys that did not fit.
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens     int
	refilled   time.Time // when tokens were last earned
	suppressed uint64    // lines held back since the last one let through
}

// New returns a Limiter configured by cfg.
func New[K comparable](cfg Config) *Limiter[K] {
	l := &Limiter[K]{burst: cfg.Burst, interval: cfg.Interval, maxKeys: cfg.MaxKeys, now: cfg.Now}
	if l.burst <= 0 {
		l.burst = DefaultBurst
	}
	if l.interval <= 0 {
		l.interval = DefaultInterval
	}
	if l.maxKeys <= 0 {
		l.maxKeys = DefaultMaxKeys
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.buckets = make(map[K]bucket, l.maxKeys)
	l.overflow = l.full(l.now())
	l.lastSweep = l.now()
	return l
}

// Allow reports whether a line for key may be logged now. When it may,
// suppressed is how many lines for key were held back since the last one
// let through; the caller reports them first (see Suppressed). Lines of
// keys beyond MaxKeys share one budget and one count.
func (l *Limiter[K]) Allow(key K) (ok bool, suppressed uint64) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, known := l.buckets[key]
	if !known && len(l.buckets) >= l.maxKeys {
		l.sweep(now)
	}
	switch {
	case known:
		ok, suppressed = l.take(&b, now)
		l.buckets[key] = b
	case len(l.buckets) < l.maxKeys:
		b = l.full(now)
		ok, suppressed = l.take(&b, now)
		l.buckets[key] = b
	default:
		ok, suppressed = l.take(&l.overflow, now)
	}
	return ok, suppressed
}

func (l *Limiter[K]) full(now time.Time) bucket {
	return bucket{tokens: l.burst, refilled: now}
}

// take spends a token of b if it has one, else counts a suppressed line.
func (l *Limiter[K]) take(b *bucket, now time.Time) (ok bool, suppressed uint64) {
	l.refill(b, now)
	if b.tokens == 0 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// refill adds the tokens b earned since it was last refilled, keeping the
// fraction of a token already earned.
func (l *Limiter[K]) refill(b *bucket, now time.Time) {
	elapsed := now.Sub(b.refilled)
	if elapsed >= l.interval {
		b.tokens, b.refilled = l.burst, now
		return
	}
	if elapsed <= 0 {
		return // a clock that went back earns nothing
	}
	// elapsed < interval, so elapsed*burst stays far from overflowing
	// for any sensible burst.
	earned := int(elapsed * time.Duration(l.burst) / l.interval)
	if earned == 0 {
		return
	}
	b.tokens += earned
	b.refilled = b.refilled.Add(time.Duration(earned) * l.interval / time.Duration(l.burst))
	if b.tokens >= l.burst {
		b.tokens, b.refilled = l.burst, now
	}
}

// sweep drops the buckets that are back to a full budget with nothing
// held back (a new bucket would be the same), at most once an Interval so
// that a guest cycling through keys does not make every line a scan.
func (l *Limiter[K]) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.interval {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		l.refill(&b, now)
		if b.tokens == l.burst && b.suppressed == 0 {
			delete(l.buckets, k)
		}
	}
}

// Suppressed is the summary of lines a Limiter held back; it is an error
// so that an error callback can carry it.
type Suppressed uint64

func (s Suppressed) Error() string { return fmt.Sprintf("%d more suppressed", uint64(s)) }

// Errors returns log limited by l, for error callbacks such as a device's:
// an error over its key's budget is dropped and counted, and the next one
// let through is preceded by a Suppressed with the count.
func Errors[K comparable](l *Limiter[K], log func(key K, err error)) func(key K, err error) {
	return func(key K, err error) {
		ok, suppressed := l.Allow(key)
		if !ok {
			return
		}
		if suppressed > 0 {
			log(key, Suppressed(suppressed))
		}
		log(key, err)
	}
}
