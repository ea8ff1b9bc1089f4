package guard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/guard"
)

// records decodes the JSON log lines written so far.
func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

type ctxKey struct{}

// ctxHandler adds the request ID the context carries, as the gateway's log handler does.
type ctxHandler struct{ slog.Handler }

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(ctxKey{}).(string); ok {
		r.AddAttrs(slog.String("request", id))
	}
	return h.Handler.Handle(ctx, r)
}
func (h ctxHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return ctxHandler{h.Handler.WithAttrs(as)}
}

func newGuard() (*guard.Guard, *bytes.Buffer) {
	var buf bytes.Buffer
	return guard.New(slog.New(ctxHandler{slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})), &buf
}

func TestDoRecordsEachWrite(t *testing.T) {
	t.Parallel()
	g, buf := newGuard()
	ctx := context.WithValue(context.Background(), ctxKey{}, "req-1")
	w := guard.Write{Op: "updateDevice", Actor: "user-1", Target: "device-1"}

	calls := 0
	err := g.Do(ctx, w, func(got context.Context) error {
		calls++
		if got.Value(ctxKey{}) != "req-1" {
			t.Error("fn did not get the caller's context")
		}
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("Do = %v after %d calls, want nil after 1", err, calls)
	}
	cause := errors.New("device not found")
	if err := g.Do(ctx, w, func(context.Context) error { return cause }); err != cause {
		t.Fatalf("Do returned %v, want fn's error unchanged", err)
	}

	recs := records(t, buf)
	if len(recs) != 2 {
		t.Fatalf("%d records for two writes", len(recs))
	}
	wantKeys := [][]string{{"actor", "audit", "duration", "level", "msg", "op", "outcome", "request", "target", "time"},
		{"actor", "audit", "duration", "level", "msg", "op", "outcome", "reason", "request", "target", "time"}}
	for i, outcome := range []string{"SUCCEEDED", "FAILED"} {
		r := recs[i]
		if got := slices.Sorted(maps.Keys(r)); !slices.Equal(got, wantKeys[i]) {
			t.Fatalf("record %d has keys %v, want %v (the error text is not logged)", i, got, wantKeys[i])
		}
		if r["msg"] != "write" || r["level"] != "INFO" || r["audit"] != true || r["op"] != "updateDevice" ||
			r["actor"] != "user:user-1" || r["target"] != "device-1" || r["outcome"] != outcome || r["request"] != "req-1" {
			t.Fatalf("record %d = %v", i, r)
		}
		if d, ok := r["duration"].(float64); !ok || d < 0 {
			t.Fatalf("record %d duration %v", i, r["duration"])
		}
	}
}

func TestDeniedRecordsTheRefusalWithoutRunning(t *testing.T) {
	t.Parallel()
	g, buf := newGuard()
	g.Denied(context.WithValue(context.Background(), ctxKey{}, "req-2"),
		guard.Write{Op: "quarantineDevice", Actor: "user-2", Target: "device-2"}, guard.ReasonForbidden)
	recs := records(t, buf)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	want := map[string]any{"msg": "write denied", "level": "WARN", "audit": true, "op": "quarantineDevice",
		"actor": "user:user-2", "target": "device-2", "reason": "FORBIDDEN", "request": "req-2", "outcome": "DENIED"}
	for k, v := range want {
		if r[k] != v {
			t.Fatalf("%s = %v, want %v (record %v)", k, r[k], v, r)
		}
	}
	if _, ok := r["duration"]; ok {
		t.Fatal("a denial records a duration: nothing ran")
	}
}

// A nil logger means the process default, still marked as audit.
func TestNewWithoutLoggerUsesTheDefault(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, nil)))
	defer slog.SetDefault(prev)
	g := guard.New(nil)
	if err := g.Do(context.Background(), guard.Write{Op: "heartbeat", Actor: "device:d", Target: "d"}, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	recs := records(t, &buf)
	if len(recs) != 1 || recs[0]["audit"] != true || recs[0]["op"] != "heartbeat" {
		t.Fatalf("records %v", recs)
	}
}
