package guard_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
)

// coded is an error carrying its own audit code, as a kill switch's refusal does.
type coded struct{}

func (coded) Error() string       { return "writes are disabled" }
func (coded) AuditReason() string { return "DISABLED" }

func TestClassifyMapsEachSentinel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err     error
		outcome guard.Outcome
		reason  string
	}{
		{nil, guard.Succeeded, ""},
		{fmt.Errorf("x: %w", coded{}), guard.Denied, "DISABLED"},
		{&db.RateLimitError{Msg: "slow down"}, guard.Denied, "RATE_LIMITED"},
		{db.Forbiddenf("not yours"), guard.Denied, "FORBIDDEN"},
		{fmt.Errorf("sign in: %w", oidc.ErrUnauthenticated), guard.Denied, "UNAUTHENTICATED"},
		{fmt.Errorf("sign: %w", deviceauth.ErrUnauthenticated), guard.Denied, "UNAUTHENTICATED"},
		{db.Invalidf("bad"), guard.Failed, "BAD_USER_INPUT"},
		{fmt.Errorf("get: %w", db.ErrNotFound), guard.Failed, "NOT_FOUND"},
		{fmt.Errorf("insert: %w", db.ErrConflict), guard.Failed, "CONFLICT"},
		{context.DeadlineExceeded, guard.Failed, "TIMEOUT"},
		{errors.New("connection refused"), guard.Failed, "INTERNAL"},
	}
	for _, c := range cases {
		if o, r := guard.Classify(c.err); o != c.outcome || r != c.reason {
			t.Errorf("Classify(%v) = %s %s, want %s %s", c.err, o, r, c.outcome, c.reason)
		}
	}
}

func TestPrincipal(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "anonymous", "anonymous": "anonymous", "u1": "user:u1",
		"user:u1": "user:u1", "device:d": "device:d", "key:abc": "key:abc"} {
		if got := guard.Principal(in); got != want {
			t.Errorf("Principal(%q) = %q, want %q", in, got, want)
		}
	}
}

// Flag inside Do makes the write FLAGGED with the reason; an error wins over a flag.
func TestFlagInsideDo(t *testing.T) {
	t.Parallel()
	g, _ := newGuard()
	var got []guard.Event
	g.Subscribe(func(ev guard.Event) { got = append(got, ev) })
	w := guard.Write{Op: "submitProof", Actor: "device:d", Target: "d"}
	_ = g.Do(context.Background(), w, func(ctx context.Context) error { guard.Flag(ctx, "A,B"); return nil })
	_ = g.Do(context.Background(), w, func(ctx context.Context) error { guard.Flag(ctx, "A"); return db.Invalidf("x") })
	guard.Flag(context.Background(), "ignored outside Do")
	if len(got) != 2 || got[0].Outcome != guard.Flagged || got[0].Reason != "A,B" || got[1].Outcome != guard.Failed {
		t.Fatalf("events %+v", got)
	}
}

type discard struct{}

func (discard) InsertAudit(context.Context, []db.AuditRecord) error { return nil }

// BenchmarkRecord is what a request pays for its audit record (the store discards batches).
func BenchmarkRecord(b *testing.B) {
	a := guard.NewAuditLog(discard{}, nil, guard.AuditOptions{})
	defer func() { _ = a.Close(context.Background()) }()
	ev := guard.Event{Write: guard.Write{Op: "heartbeat", Actor: "device:d", Target: "d"}, Outcome: guard.Succeeded, At: time.Now()}
	b.ReportAllocs()
	for range b.N {
		a.Record(ev)
	}
}
