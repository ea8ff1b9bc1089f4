// Package guard records the audit trail of writes. Every mutation runs through Guard.Do, which
// logs its operation, actor, target, outcome and duration; a write refused before it ran
// (unauthenticated, not the owner, missing role, rate limited, or an evidence finding to review)
// is logged with Denied. The guard itself refuses nothing: authorization is decided by the
// schema directives (resolvers/directives.go) and ownership in SQL, and the worker limits by the
// verify package. Because every write already passes here, this is where write limits per
// identity and a kill switch would go.
package guard

import (
	"context"
	"log/slog"
	"time"
)

// Write describes one write attempt: the operation (mutation name), who attempts it (an opaque
// actor id: a user or device id, never logged for anonymous callers) and its target.
type Write struct {
	Op     string
	Actor  string
	Target string
}

// Guard runs writes and records their outcome.
type Guard struct {
	log         *slog.Logger
	subscribers []func(Event)
	limits      *Limits   // write limits (limits.go); nil: none
	switches    *Switches // kill switches (switches.go); nil: none
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
	Reason  string  // a code (FORBIDDEN, RATE_LIMITED, a counterfeit reason...) or a short word; "" on success
	At      time.Time
}

// Subscribe adds fn to the functions every recorded event is passed to (metrics, the
// write-rate detector). Call it before the guard is used; fn must not block.
func (g *Guard) Subscribe(fn func(Event)) { g.subscribers = append(g.subscribers, fn) }

// emit passes ev to every subscriber.
func (g *Guard) emit(ev Event) {
	ev.Class = ClassOf(ev.Op)
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	for _, fn := range g.subscribers {
		fn(ev)
	}
}

// New returns a guard that writes its audit records to log.
func New(log *slog.Logger) *Guard {
	if log == nil {
		log = slog.Default()
	}
	return &Guard{log: log.With("audit", true)}
}

// Do runs fn as the write w and records the outcome. It returns fn's error unchanged, or,
// without running fn, the admission's refusal (a *DisabledError or a *db.RateLimitError).
func (g *Guard) Do(ctx context.Context, w Write, fn func(ctx context.Context) error) error {
	if code, err := g.admit(ctx, w); err != nil { // kill switch, then write limits (limits.go)
		g.Denied(ctx, w, code)
		return err
	}
	start := time.Now()
	err := fn(ctx)
	outcome, ev := "ok", Event{Write: w, Outcome: Succeeded}
	if err != nil {
		outcome, ev.Outcome, ev.Reason = "error", Failed, "error"
	}
	g.emit(ev)
	g.log.LogAttrs(ctx, slog.LevelInfo, "write", slog.String("op", w.Op), slog.String("actor", w.Actor),
		slog.String("target", w.Target), slog.String("outcome", outcome),
		slog.Duration("duration", time.Since(start)))
	return err
}

// Denied records an attempt refused before it ran (unauthenticated, not the owner, missing
// role). reason is a short machine-readable word.
func (g *Guard) Denied(ctx context.Context, w Write, reason string) {
	g.emit(Event{Write: w, Outcome: Denied, Reason: reason})
	g.log.LogAttrs(ctx, slog.LevelWarn, "write denied", slog.String("op", w.Op),
		slog.String("actor", w.Actor), slog.String("target", w.Target), slog.String("reason", reason))
}
