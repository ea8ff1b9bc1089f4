package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Every resolved field passes through stopWhenDone (TestDeadlineStopsExecution drives it over
// HTTP); once the request's context has ended it resolves nothing more.
func TestStopWhenDoneResolvesNothingAfterTheDeadline(t *testing.T) {
	calls := 0
	next := func(context.Context) (any, error) { calls++; return "v", nil }
	if v, err := stopWhenDone(context.Background(), next); err != nil || v != "v" || calls != 1 {
		t.Fatalf("live context: %v %v %d", v, err, calls)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := stopWhenDone(ctx, next)
	if !errors.Is(err, errStopped) || !errors.Is(err, context.DeadlineExceeded) || calls != 1 {
		t.Fatalf("expired context: err %v, resolver calls %d", err, calls)
	}
}
