package verify

import (
	"fmt"
	"sync"
	"time"

	"github.com/gpugate/gpugate/internal/ttlcache"

	"github.com/gpugate/gpugate/db"
)

// Rate is a token bucket: Burst requests at once, then one per Every. A zero Every disables it.
type Rate struct {
	Every time.Duration
	Burst int
}

// limiter holds one token bucket per (operation, key): a device, or a user for
// createEnrollmentToken. Buckets live in process memory:
// behind several gateways a key gets each gateway's allowance, which the open-challenge cap in
// SQL and the proof's single-use challenge still bound. An idle bucket is dropped once it would
// be full again (a fresh bucket is the same thing), so memory follows the active keys.
type limiter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets *ttlcache.LRU[string, *bucket]
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(maxRefill time.Duration) *limiter {
	return &limiter{now: time.Now, buckets: ttlcache.New[string, *bucket](200_000, max(maxRefill, time.Minute))}
}

// allow takes a token from key's bucket under rate r. It returns nil, or a RateLimitError saying
// when the next token is due (nothing is taken then).
func (l *limiter) allow(op, key string, r Rate) error {
	if r.Every <= 0 || r.Burst <= 0 {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	id := op + "\x00" + key
	b, ok := l.buckets.Get(id)
	if !ok {
		b = &bucket{tokens: float64(r.Burst), at: now}
	}
	l.buckets.Add(id, b) // each use restarts the bucket's lifetime: only an idle bucket is dropped
	b.tokens = min(float64(r.Burst), b.tokens+float64(now.Sub(b.at))/float64(r.Every))
	b.at = now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) * float64(r.Every))
		return &db.RateLimitError{Msg: op + ": sent more than its limit (" +
			rateText(r) + "); retry later", RetryAfter: wait}
	}
	b.tokens--
	return nil
}

func rateText(r Rate) string {
	return fmt.Sprintf("a burst of %d, then one per %s", r.Burst, r.Every)
}
