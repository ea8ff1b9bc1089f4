package guard

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// clockLimits returns limits on a fresh database whose clock the test moves.
func clockLimits(t *testing.T, cfg LimitConfig) (*Limits, *time.Time, *sqlx.DB) {
	t.Helper()
	x := dbtest.New(t)
	l := NewLimits(db.New(x, db.Options{}), cfg)
	now := time.Date(2026, 4, 25, 1, 5, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	return l, &now, x
}

func wantLimited(t *testing.T, err error, what string, retry time.Duration) {
	t.Helper()
	var rl *db.RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, db.ErrRateLimited) {
		t.Fatalf("want a RateLimitError (%s), got %v", what, err)
	}
	if !strings.Contains(rl.Msg, what) || rl.RetryAfter != retry {
		t.Fatalf("refusal %q retry after %s; want it to name %q and %s", rl.Msg, rl.RetryAfter, what, retry)
	}
}

var off = Rate{Every: -1}

// The per-target limit at its boundary: the Burst-th write goes, the next is refused with the
// exact wait, a write a microsecond early is still refused, and one Every later exactly one more
// goes (the bucket refills one token per Every, never more than Burst).
func TestTargetLimitBoundaryAndRollover(t *testing.T) {
	t.Parallel()
	l, now, _ := clockLimits(t, LimitConfig{User: off, Distinct: off, Target: Rate{Burst: 3, Every: 10 * time.Second}})
	ctx := context.Background()
	w := Write{Op: "updateDevice", Actor: "8f7a6e6c-0000-4000-8000-000000000001", Target: "dev-1"}
	for i := range 3 {
		if err := l.Take(ctx, w); err != nil {
			t.Fatalf("write %d of a burst of 3: %v", i+1, err)
		}
	}
	wantLimited(t, l.Take(ctx, w), "write limit of this device", 10*time.Second)
	// Another caller on the same device meets the same limit: it is the target's.
	other := w
	other.Actor = "8f7a6e6c-0000-4000-8000-000000000002"
	wantLimited(t, l.Take(ctx, other), "write limit of this device", 10*time.Second)
	// Another device is not affected.
	if err := l.Take(ctx, Write{Op: "updateDevice", Actor: w.Actor, Target: "dev-2"}); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(10*time.Second - time.Microsecond) // PostgreSQL keeps microseconds
	wantLimited(t, l.Take(ctx, w), "write limit of this device", time.Microsecond)
	*now = now.Add(time.Microsecond)
	if err := l.Take(ctx, w); err != nil {
		t.Fatalf("one Every later: %v", err)
	}
	wantLimited(t, l.Take(ctx, w), "write limit of this device", 10*time.Second)
	// After a long pause the bucket is full again, never fuller.
	*now = now.Add(time.Hour)
	for i := range 3 {
		if err := l.Take(ctx, w); err != nil {
			t.Fatalf("after an hour, write %d: %v", i+1, err)
		}
	}
	wantLimited(t, l.Take(ctx, w), "write limit of this device", 10*time.Second)
}

// A refusal by one limit takes nothing from the others: the user's allowance is intact after
// its writes to a full device were refused.
func TestRefusalTakesNothing(t *testing.T) {
	t.Parallel()
	l, _, _ := clockLimits(t, LimitConfig{Distinct: off, User: Rate{Burst: 4, Every: time.Hour}, Target: Rate{Burst: 2, Every: time.Hour}})
	ctx := context.Background()
	user := "8f7a6e6c-0000-4000-8000-000000000003"
	w := Write{Op: "pauseDevice", Actor: user, Target: "dev-1"}
	for range 2 {
		if err := l.Take(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		wantLimited(t, l.Take(ctx, w), "write limit of this device", time.Hour)
	}
	// 2 of the user's 4 were used; the 10 refusals took none.
	for i := range 2 {
		if err := l.Take(ctx, Write{Op: "pauseDevice", Actor: user, Target: "dev-" + string(rune('a'+i))}); err != nil {
			t.Fatalf("user write %d: %v", 3+i, err)
		}
	}
	wantLimited(t, l.Take(ctx, Write{Op: "pauseDevice", Actor: user, Target: "dev-z"}), "per-user write limit", time.Hour)
	// The user limit is the user's: another user writes on.
	if err := l.Take(ctx, Write{Op: "pauseDevice", Actor: "8f7a6e6c-0000-4000-8000-000000000004", Target: "dev-z"}); err != nil {
		t.Fatal(err)
	}
}

// Distinct devices per identity: a device counts once per window however often it is
// written; the (Burst+1)-th new device is refused; after the window a device counts again.
func TestDistinctDevicesPerWindow(t *testing.T) {
	t.Parallel()
	l, now, _ := clockLimits(t, LimitConfig{User: off, Target: off, Distinct: Rate{Burst: 3, Every: 20 * time.Minute}, DistinctWindow: time.Hour})
	ctx := context.Background()
	user := "8f7a6e6c-0000-4000-8000-000000000005"
	w := func(target string) Write { return Write{Op: "updateDevice", Actor: user, Target: target} }
	for _, d := range []string{"d1", "d2", "d3", "d1", "d2", "d3", "d3"} {
		if err := l.Take(ctx, w(d)); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	wantLimited(t, l.Take(ctx, w("d4")), "distinct devices", 20*time.Minute)
	if err := l.Take(ctx, w("d2")); err != nil { // a device already written still may be
		t.Fatal(err)
	}
	*now = now.Add(20 * time.Minute) // one token back: one more new device
	if err := l.Take(ctx, w("d4")); err != nil {
		t.Fatal(err)
	}
	wantLimited(t, l.Take(ctx, w("d5")), "distinct devices", 20*time.Minute)
	// An hour after their first write, d1..d3 are new again and need tokens.
	*now = now.Add(40 * time.Minute)
	for _, d := range []string{"d1", "d2"} {
		if err := l.Take(ctx, w(d)); err != nil {
			t.Fatalf("%s after the window: %v", d, err)
		}
	}
	wantLimited(t, l.Take(ctx, w("d3")), "distinct devices", 20*time.Minute)
}

// Only users' classed writes meet the identity limits: admin moderation (no class) and the
// devices' own worker writes do not; a device's op limit is kept per device.
func TestWhoIsLimited(t *testing.T) {
	t.Parallel()
	l, _, _ := clockLimits(t, LimitConfig{User: Rate{Burst: 1, Every: time.Hour}, Target: Rate{Burst: 1, Every: time.Hour}, Distinct: off})
	l.SetOpRate("requestChallenge", OpRate{Rate: Rate{Burst: 2, Every: time.Hour}})
	ctx := context.Background()
	admin := "8f7a6e6c-0000-4000-8000-000000000006"
	for range 5 {
		if err := l.Take(ctx, Write{Op: "quarantineDevice", Actor: admin, Target: "dev-1"}); err != nil {
			t.Fatal(err)
		}
	}
	dev := Write{Op: "requestChallenge", Actor: "device:dev-1", Target: "dev-1"}
	for range 2 {
		if err := l.Take(ctx, dev); err != nil {
			t.Fatal(err)
		}
	}
	wantLimited(t, l.Take(ctx, dev), "its limit", time.Hour)
	// The device's writes did not use its target allowance, which users' writes share.
	if err := l.Take(ctx, Write{Op: "updateDevice", Actor: admin, Target: "dev-1"}); err != nil {
		t.Fatal(err)
	}
}

// Across replicas: two stores (pools) on one database, 40 concurrent takers for a burst of
// 10: exactly 10 get through, whichever replica they use.
func TestLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	x2, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x2.Close() })
	cfg := LimitConfig{User: off, Distinct: off, Target: Rate{Burst: 10, Every: time.Hour}}
	replicas := []*Limits{NewLimits(db.New(x, db.Options{}), cfg), NewLimits(db.New(x2, db.Options{}), cfg)}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := replicas[i%2].Take(context.Background(), Write{Op: "updateDevice", Actor: "8f7a6e6c-0000-4000-8000-00000000000" + string(rune('a'+i%6)), Target: "dev-1"})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, db.ErrRateLimited):
				refused.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 || refused.Load() != 30 {
		t.Fatalf("%d allowed, %d refused; want exactly 10 and 30", ok.Load(), refused.Load())
	}
}

// The purge job forgets full buckets and old touches, and nothing else.
func TestPurgeForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	l, now, x := clockLimits(t, LimitConfig{User: Rate{Burst: 5, Every: time.Second}, Target: off, Distinct: Rate{Burst: 5, Every: time.Second}})
	*now = time.Now().Add(-48 * time.Hour) // long ago: full again, touches older than a day
	if err := l.Take(context.Background(), Write{Op: "updateDevice", Actor: "8f7a6e6c-0000-4000-8000-000000000007", Target: "old"}); err != nil {
		t.Fatal(err)
	}
	*now = time.Now().Add(time.Hour) // still counting
	if err := l.Take(context.Background(), Write{Op: "updateDevice", Actor: "8f7a6e6c-0000-4000-8000-000000000008", Target: "new"}); err != nil {
		t.Fatal(err)
	}
	n, err := l.store.Purge(context.Background(), db.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	if n.WriteLimits != 3 { // the old user's and distinct buckets, and its touch
		t.Fatalf("purged %+v; want 3 write-limit rows", n)
	}
	var left int
	if err := x.Get(&left, `SELECT (SELECT count(*) FROM write_limits) + (SELECT count(*) FROM write_touches)`); err != nil || left != 3 {
		t.Fatalf("%d rows left (%v); want the new user's 3", left, err)
	}
}
