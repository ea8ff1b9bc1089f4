package verify

import (
	"errors"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
)

// allow takes a token as the guard's limits do (the shared GCRA bucket in PostgreSQL refuses
// exactly when this token bucket does; guard and gateway tests check that at the boundaries).
func allow(l *guard.LocalLimiter, now time.Time, op, key string, r Rate) error {
	if wait, ok := l.Allow(op+"|"+key, r, now); !ok {
		return &db.RateLimitError{Msg: op, RetryAfter: wait}
	}
	return nil
}

// The default limits never meet a genuine worker: a day of heartbeats every HeartbeatEvery, a
// proof (challenge + submission) every 3 minutes, and after every lost response three quick
// retries of each step. A key sending as fast as it can is limited within seconds.
func TestDefaultWorkerLimitsSpareGenuineWorkers(t *testing.T) {
	c := Config{}.withDefaults()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := guard.NewLocalLimiter(time.Hour)
	send := func(op string) error { return allow(l, now, op, "key", c.rate(op)) }

	end := now.Add(24 * time.Hour)
	nextProof := now
	for i := 0; now.Before(end); i++ {
		steps := []string{"heartbeat"}
		if !now.Before(nextProof) {
			steps = append(steps, "requestChallenge", "submitProof")
			nextProof = now.Add(3 * time.Minute)
		}
		for _, op := range steps {
			tries := 1
			if i%20 == 0 { // a lost response: retried three times in quick succession
				tries = 4
			}
			for range tries {
				if err := send(op); err != nil {
					t.Fatalf("a genuine worker was limited at %s on %s: %v", now.Format(time.TimeOnly), op, err)
				}
				now = now.Add(time.Second)
			}
		}
		now = now.Add(c.HeartbeatEvery)
	}

	for _, op := range []string{"heartbeat", "requestChallenge", "submitProof"} {
		var err error
		for range 1000 {
			if err = allow(l, now, op, "flooder", c.rate(op)); err != nil {
				break
			}
			now = now.Add(100 * time.Millisecond)
		}
		var rl *db.RateLimitError
		if !errors.As(err, &rl) || !errors.Is(err, db.ErrRateLimited) || rl.RetryAfter <= 0 {
			t.Fatalf("%s at 10 per second: %v", op, err)
		}
	}
}

// A disabled limit (negative Every) never refuses.
func TestDisabledLimit(t *testing.T) {
	l := guard.NewLocalLimiter(time.Minute)
	for range 100 {
		if err := allow(l, time.Now(), "heartbeat", "k", Rate{Every: -1}); err != nil {
			t.Fatal(err)
		}
	}
}
