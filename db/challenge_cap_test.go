package db_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// The open-challenge cap is an option: a device may hold that many open challenges, the next
// request is RATE_LIMITED; a negative cap (load tests preparing proofs ahead) has none.
func TestOpenChallengeCapIsAnOption(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	ctx := context.Background()
	if _, err := db.New(x, db.Options{}).Seed(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var device string
	if err := x.Get(&device, `SELECT id FROM devices LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cap, allowed int
	}{{2, 2}, {0, db.DefaultMaxOpenChallenges}, {-1, 10}} {
		if _, err := x.Exec(`DELETE FROM challenges`); err != nil {
			t.Fatal(err)
		}
		store := db.New(x, db.Options{MaxOpenChallenges: c.cap})
		for i := range c.allowed {
			if _, err := store.CreateChallenge(ctx, device, 8, time.Minute); err != nil {
				t.Fatalf("cap %d: challenge %d: %v", c.cap, i+1, err)
			}
		}
		_, err := store.CreateChallenge(ctx, device, 8, time.Minute)
		var limited *db.RateLimitError
		if c.cap >= 0 && !errors.As(err, &limited) {
			t.Fatalf("cap %d: challenge %d = %v; want a RateLimitError", c.cap, c.allowed+1, err)
		}
		if c.cap < 0 && err != nil {
			t.Fatalf("no cap: challenge %d = %v", c.allowed+1, err)
		}
	}
}
