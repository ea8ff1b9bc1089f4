package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/internal/ttlcache"
)

// Write limits keyed on identity, never on the client address (docs/operations.md, "Write
// limits"). Every limit is a token bucket (GCRA) kept in PostgreSQL, so it holds across
// replicas; one statement checks and counts all the limits of a write before the write runs,
// all or none, so a refused write changes nothing.

// Rate is a token bucket: Burst requests at once, then one per Every. A zero Every or Burst
// means the default where there is one; a negative Every disables the limit.
type Rate struct {
	Every time.Duration
	Burst int
}

func (r Rate) on() bool { return r.Every > 0 && r.Burst > 0 }

func (r Rate) String() string {
	return fmt.Sprintf("a burst of %d, then one per %s", r.Burst, r.Every)
}

// LimitConfig sets the identity limits of users' writes. A zero field takes its default
// (DefaultLimits); a negative Every disables that limit.
type LimitConfig struct {
	// User limits all of one user's writes of every class together.
	User Rate
	// Target limits the writes of users (the owner, whoever) on one device.
	Target Rate
	// Distinct limits how many different devices one user writes within DistinctWindow
	// (the incident's mass rename): a write to a device not written within the window takes a
	// token.
	Distinct       Rate
	DistinctWindow time.Duration
}

// DefaultLimits returns the default identity limits, sized so that an owner managing a fleet of
// 500 devices (renaming, pausing and resuming each within the hour, by script) is never
// limited, while one device rewritten in a loop is within seconds.
func DefaultLimits() LimitConfig {
	return LimitConfig{
		User:           Rate{Burst: 1500, Every: 2 * time.Second},
		Target:         Rate{Burst: 30, Every: 2 * time.Second},
		Distinct:       Rate{Burst: 1000, Every: 3600 * time.Millisecond},
		DistinctWindow: time.Hour,
	}
}

func (c LimitConfig) withDefaults() LimitConfig {
	d := DefaultLimits()
	for _, p := range []struct{ v, d *Rate }{{&c.User, &d.User}, {&c.Target, &d.Target}, {&c.Distinct, &d.Distinct}} {
		if *p.v == (Rate{}) {
			*p.v = *p.d
		}
	}
	if c.DistinctWindow <= 0 {
		c.DistinctWindow = d.DistinctWindow
	}
	c.DistinctWindow = min(c.DistinctWindow, db.MaxTouchWindow)
	return c
}

// OpRate is a per-operation limit keyed on the actor (a device's worker operations, a user's
// createEnrollmentToken). With Batched, the shared count is taken by the operation's own
// batched write (heartbeats: db.HeartbeatLimit) and the guard keeps only a per-replica
// pre-check, which sheds a flood before it reaches the batch.
type OpRate struct {
	Rate    Rate
	Batched bool
}

// Limits holds the write limits and takes their tokens. It is safe for concurrent use.
type Limits struct {
	store *db.DB
	cfg   LimitConfig
	now   func() time.Time

	mu    sync.RWMutex
	ops   map[string]OpRate
	local *LocalLimiter
}

// NewLimits returns the limits cfg (zero fields: defaults) kept in store.
func NewLimits(store *db.DB, cfg LimitConfig) *Limits {
	return &Limits{store: store, cfg: cfg.withDefaults(), now: time.Now, ops: map[string]OpRate{},
		local: NewLocalLimiter(time.Hour)}
}

// Config returns the identity limits in use, defaults applied.
func (l *Limits) Config() LimitConfig { return l.cfg }

// SetOpRate sets the per-actor limit of the operation op (a disabled rate removes it). Call it
// before the guard is used.
func (l *Limits) SetOpRate(op string, r OpRate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Rate.on() {
		l.ops[op] = r
	} else {
		delete(l.ops, op)
	}
}

// userActor reports whether actor is a signed-in user: devices are "device:<id>", enrolling
// keys "key:<fingerprint>", and callers without identity "anonymous" or "".
func userActor(actor string) bool {
	return actor != "" && actor != "anonymous" && !strings.Contains(actor, ":")
}

// Take counts the write w against its limits and returns nil, or a *db.RateLimitError naming
// the limit and when to retry (nothing counted then), or the store's error. Writes in no class
// (admin moderation, the switches) are never limited.
func (l *Limits) Take(ctx context.Context, w Write) error {
	if l == nil || ClassOf(w.Op) == "" {
		return nil
	}
	l.mu.RLock()
	op, hasOp := l.ops[w.Op]
	l.mu.RUnlock()
	now := l.now()
	var (
		buckets []db.Bucket
		names   []string
		touch   *db.Touch
	)
	if hasOp {
		key := w.Op + "|" + w.Actor
		if op.Batched {
			if wait, ok := l.local.Allow(key, op.Rate, now); !ok {
				return limited(w.Op, "its limit ("+op.Rate.String()+")", wait)
			}
		} else {
			buckets = append(buckets, db.Bucket{Key: key, Every: op.Rate.Every, Burst: op.Rate.Burst})
			names = append(names, "its limit ("+op.Rate.String()+")")
		}
	}
	if userActor(w.Actor) {
		if c := l.cfg.User; c.on() {
			buckets = append(buckets, db.Bucket{Key: "user|" + w.Actor, Every: c.Every, Burst: c.Burst})
			names = append(names, "the per-user write limit ("+c.String()+")")
		}
		if w.Target != "" {
			if c := l.cfg.Target; c.on() {
				buckets = append(buckets, db.Bucket{Key: "target|" + w.Target, Every: c.Every, Burst: c.Burst})
				names = append(names, "the write limit of this device ("+c.String()+")")
			}
			if c := l.cfg.Distinct; c.on() {
				touch = &db.Touch{Actor: w.Actor, Target: w.Target, Window: l.cfg.DistinctWindow,
					Distinct: db.Bucket{Key: "distinct|" + w.Actor, Every: c.Every, Burst: c.Burst}}
			}
		}
	}
	if len(buckets) == 0 && touch == nil {
		return nil
	}
	refused, wait, err := l.store.TakeWriteTokens(ctx, now, buckets, touch)
	switch {
	case err != nil:
		return err
	case refused < 0:
		return nil
	case refused < len(names):
		return limited(w.Op, names[refused], wait)
	}
	c := l.cfg.Distinct
	return limited(w.Op, fmt.Sprintf("the limit of distinct devices one account writes (%s, a device counting once per %s)",
		c, l.cfg.DistinctWindow), wait)
}

func limited(op, what string, wait time.Duration) error {
	return &db.RateLimitError{Msg: op + ": over " + what + "; retry later", RetryAfter: wait}
}

// admit decides whether the write w may run: its class must be switched on, then its limits
// must have room. It returns nil, a *DisabledError, a *db.RateLimitError, or the store's error,
// with the code to record the refusal under.
func (g *Guard) admit(ctx context.Context, w Write) (string, error) {
	if err := g.switches.Check(ctx, ClassOf(w.Op)); err != nil {
		return "DISABLED", err
	}
	if err := g.limits.Take(ctx, w); err != nil {
		if errors.Is(err, db.ErrRateLimited) {
			return "RATE_LIMITED", err
		}
		return "LIMIT_ERROR", err
	}
	return "", nil
}

// Admission makes the guard refuse the writes of switched-off classes (s) and over their limits
// (l) before they run; either may be nil (no switches, no limits). Call it before the guard is
// used.
func (g *Guard) Admission(l *Limits, s *Switches) {
	g.limits, g.switches = l, s
}

// Limits returns the guard's limits, or nil.
func (g *Guard) Limits() *Limits { return g.limits }

// Switches returns the guard's kill switches, or nil.
func (g *Guard) Switches() *Switches { return g.switches }

// LocalLimiter holds token buckets in process memory: the per-replica pre-check of the
// batched limits. An idle bucket is dropped once it would be full again (a fresh bucket is the
// same thing), so memory follows the active keys. It is safe for concurrent use.
type LocalLimiter struct {
	mu      sync.Mutex
	buckets *ttlcache.LRU[string, *bucket]
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLocalLimiter returns a limiter whose idle buckets live at least maxRefill (and a minute).
func NewLocalLimiter(maxRefill time.Duration) *LocalLimiter {
	return &LocalLimiter{buckets: ttlcache.New[string, *bucket](200_000, max(maxRefill, time.Minute))}
}

// Allow takes a token from key's bucket under r at now. It returns ok, or how long until the
// next token is due (nothing taken then). A disabled rate always allows.
func (l *LocalLimiter) Allow(key string, r Rate, now time.Time) (wait time.Duration, ok bool) {
	if !r.on() {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.buckets.Get(key)
	if !found {
		b = &bucket{tokens: float64(r.Burst), at: now}
	}
	l.buckets.Add(key, b) // each use restarts the bucket's lifetime: only an idle bucket is dropped
	b.tokens = min(float64(r.Burst), b.tokens+float64(now.Sub(b.at))/float64(r.Every))
	b.at = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) * float64(r.Every)), false
	}
	b.tokens--
	return 0, true
}
