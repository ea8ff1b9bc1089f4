// Package guard records the audit trail of writes. Every mutation runs through Guard.Do, which
// records its operation, principal, target, outcome and duration; a write refused before it ran
// (unauthenticated, not the owner, missing role, rate limited, a bad device signature) is
// recorded with Denied or Refused, and a counterfeit finding with Flagged. Records go to the log
// and to every subscriber: the durable audit log (audit.go, docs/operations.md "Audit log"),
// metrics and the write-rate detector. Authorization is decided by the schema directives
// (resolvers/directives.go) and ownership in SQL, and the worker limits by the verify package;
// Do is where admission checks that hold for every write (limits, kill switches) go.
package guard

import (
	"context"
	"log/slog"
	"time"
)

// Write describes one write attempt: the operation (mutation name), who attempts it (its
// principal: user:<id>, device:<id>, key:<fingerprint> or anonymous; a bare id is taken as a
// user id) and its target (a device id, or another identifier; never a secret).
type Write struct {
	Op     string
	Actor  string
	Target string
}

// Guard runs writes and records their outcome.
type Guard struct {
	log         *slog.Logger
	subscribers []func(Event)
}

// Outcome is what became of a write attempt (the schema's AuditOutcome).
type Outcome string

// The outcomes.
const (
	Succeeded Outcome = "SUCCEEDED" // carried out
	Denied    Outcome = "DENIED"    // refused before anything changed
	Flagged   Outcome = "FLAGGED"   // a counterfeit finding or an identity conflict
	Failed    Outcome = "FAILED"    // accepted for checking but not carried out
)

// Event is one recorded write attempt, as subscribers see it.
type Event struct {
	Write
	Class   Class   // ClassOf(Op)
	Outcome Outcome //
	Reason  string  // a stable code (reasons in audit.go, a counterfeit reason); "" on success
	At      time.Time
	Request RequestInfo // the request it came with (WithRequest), if any
}

// Subscribe adds fn to the functions every recorded event is passed to (the audit log,
// metrics, the write-rate detector). Call it before the guard is used; fn must not block.
func (g *Guard) Subscribe(fn func(Event)) { g.subscribers = append(g.subscribers, fn) }

// emit passes ev to every subscriber.
func (g *Guard) emit(ev Event) {
	ev.Class = ClassOf(ev.Op)
	ev.Actor = Principal(ev.Actor)
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	for _, fn := range g.subscribers {
		fn(ev)
	}
}

// record emits the event of w with ctx's request and marks ctx's attempt recorded, then logs it.
func (g *Guard) record(ctx context.Context, w Write, outcome Outcome, reason string, d time.Duration) {
	markRecorded(ctx)
	g.emit(Event{Write: w, Outcome: outcome, Reason: reason, Request: RequestFrom(ctx)})
	attrs := []slog.Attr{slog.String("op", w.Op), slog.String("actor", Principal(w.Actor)),
		slog.String("target", w.Target), slog.String("outcome", string(outcome))}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	if outcome == Denied {
		g.log.LogAttrs(ctx, slog.LevelWarn, "write denied", attrs...)
		return
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, "write", append(attrs, slog.Duration("duration", d))...)
}

// New returns a guard that writes its audit records to log.
func New(log *slog.Logger) *Guard {
	if log == nil {
		log = slog.Default()
	}
	return &Guard{log: log.With("audit", true)}
}

// Do runs fn as the write w and records the outcome: SUCCEEDED, FLAGGED when fn called Flag,
// or what Classify makes of fn's error. It returns fn's error unchanged.
func (g *Guard) Do(ctx context.Context, w Write, fn func(ctx context.Context) error) error {
	start := time.Now()
	ctx, flag := withFlag(ctx)
	err := fn(ctx)
	outcome, reason := Succeeded, ""
	switch {
	case err != nil:
		outcome, reason = Classify(err)
	case flag.reason != "":
		outcome, reason = Flagged, flag.reason
	}
	g.record(ctx, w, outcome, reason, time.Since(start))
	return err
}

// Denied records an attempt refused before it ran (unauthenticated, not the owner, missing
// role). reason is a stable code (ReasonForbidden...).
func (g *Guard) Denied(ctx context.Context, w Write, reason string) {
	g.record(ctx, w, Denied, reason, 0)
}

// Refused records an attempt that did not run because of err, with the outcome and reason
// Classify gives err (SUCCEEDED for nil: a write that ran outside Do).
func (g *Guard) Refused(ctx context.Context, w Write, err error) {
	outcome, reason := Classify(err)
	g.record(ctx, w, outcome, reason, 0)
}

// Flagged records a finding for review about w (a GPU identity conflict, address churn) that
// did not stop the write: reason is its code.
func (g *Guard) Flagged(ctx context.Context, w Write, reason string) {
	g.record(ctx, w, Flagged, reason, 0)
}
