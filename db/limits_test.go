package db_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// The coalescer with the shared heartbeat limit: several beats of one device in one batch take
// as many tokens, all or none; a limited device is not written and its callers get a
// RateLimitError with the wait; other devices of the batch are written; a generous limit
// refuses nothing.
func TestHeartbeatsLimitedBatch(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	a, b := f.enrollGPUs(owner, 1), f.enrollGPUs(owner, 1)
	readings := `[{"uuid": "GPU-1", "utilizationPercent": 90, "temperatureC": 60}]`

	generous := f.store.NewHeartbeats(5*time.Millisecond, 500)
	generous.Limit(db.HeartbeatLimit{KeyPrefix: "hb-generous|", Every: time.Millisecond, Burst: 1_000_000})
	for range 3 {
		if st, err := generous.Record(f.ctx, a.ID, []byte(readings)); err != nil || st != db.StatusUp {
			t.Fatalf("generous limit: %s %v", st, err)
		}
	}

	h := f.store.NewHeartbeats(time.Hour, 5) // a batch flushes at 5 beats
	h.Limit(db.HeartbeatLimit{KeyPrefix: "hb|", Every: time.Hour, Burst: 3})
	results := make([]error, 5)
	var wg sync.WaitGroup
	for i, dev := range []string{a.ID, a.ID, a.ID, a.ID, b.ID} { // four of a's: over its 3 at once
		wg.Go(func() { _, results[i] = h.Record(f.ctx, dev, []byte(readings)) })
	}
	wg.Wait()
	for i, err := range results[:4] {
		var rl *db.RateLimitError
		if !errors.As(err, &rl) || rl.RetryAfter < 59*time.Minute {
			t.Fatalf("beat %d of a: %v; want all of a's refused (4 beats, a burst of 3)", i, err)
		}
	}
	if results[4] != nil {
		t.Fatalf("b in the same batch: %v", results[4])
	}
	// a's bucket is untouched by the refusal: three beats go, one by one.
	h1 := f.store.NewHeartbeats(0, 1)
	h1.Limit(db.HeartbeatLimit{KeyPrefix: "hb|", Every: time.Hour, Burst: 3})
	for i := range 3 {
		if _, err := h1.Record(f.ctx, a.ID, []byte(readings)); err != nil {
			t.Fatalf("beat %d alone: %v", i, err)
		}
	}
	if _, err := h1.Record(f.ctx, a.ID, []byte(readings)); !errors.Is(err, db.ErrRateLimited) {
		t.Fatalf("fourth beat alone: %v", err)
	}
}

// BenchmarkHeartbeatBatch measures a batch of 64 devices' heartbeats through the coalescer,
// without and with the shared limit taken in the same statement, and the alternative the
// design avoids: one take_write_tokens round trip per heartbeat.
//
//	go test -run XXX -bench HeartbeatBatch -benchtime 200x ./db/
func BenchmarkHeartbeatBatch(b *testing.B) {
	x := dbtest.New(b)
	store, ctx := db.New(x, db.Options{StatsTTL: -1}), b.Context()
	if _, err := store.Seed(ctx, 64); err != nil {
		b.Fatal(err)
	}
	var ids []string
	if err := x.Select(&ids, `SELECT id FROM devices ORDER BY id`); err != nil {
		b.Fatal(err)
	}
	readings := []byte(`[{"uuid": "GPU-1", "utilizationPercent": 90, "temperatureC": 60}]`)
	for _, limited := range []bool{false, true} {
		name := "plain"
		if limited {
			name = "limited"
		}
		b.Run(name, func(b *testing.B) {
			h := store.NewHeartbeats(time.Hour, len(ids))
			if limited {
				h.Limit(db.HeartbeatLimit{KeyPrefix: "hb|", Every: time.Microsecond, Burst: 1 << 30})
			}
			for b.Loop() {
				var wg sync.WaitGroup
				for _, id := range ids {
					wg.Go(func() {
						if _, err := h.Record(ctx, id, readings); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/heartbeat")
		})
	}
	b.Run("round-trip-per-heartbeat", func(b *testing.B) {
		for b.Loop() {
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					if _, _, err := store.TakeWriteTokens(ctx, time.Now(), []db.Bucket{{Key: "hb|" + id, Every: time.Microsecond, Burst: 1 << 30}}, nil); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/heartbeat")
	})
}
