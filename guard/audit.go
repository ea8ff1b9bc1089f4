package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/oidc"
)

// Reason codes of the audit log (docs/operations.md, "Audit log"). Those of refused requests
// are the extensions.code the API answers with (gateway/errors.go); a counterfeit finding's
// code is its attest.Reason.
const (
	ReasonUnauthenticated = "UNAUTHENTICATED"  // no or an invalid token / device signature
	ReasonForbidden       = "FORBIDDEN"        // not the owner, missing role, another device's signature
	ReasonRateLimited     = "RATE_LIMITED"     // over a rate or count limit
	ReasonDisabled        = "DISABLED"         // the write class's kill switch is off
	ReasonBadSignature    = "BAD_SIGNATURE"    // a device signature that does not verify or parse
	ReasonStaleSignature  = "STALE_SIGNATURE"  // a device signature outside the clock window
	ReasonReplayed        = "REPLAYED_REQUEST" // a device signature already used
	ReasonBadUserInput    = "BAD_USER_INPUT"
	ReasonNotFound        = "NOT_FOUND"
	ReasonConflict        = "CONFLICT"
	ReasonTimeout         = "TIMEOUT"
	ReasonInternal        = "INTERNAL" // a failure that is not the caller's (database down...)
)

// Classify is the one place an error becomes an audit outcome and reason code. An error that
// carries its own code (an AuditReason() string method anywhere in its chain: the device
// signature refusals, a kill switch's refusal) is DENIED with it; refusals of the caller
// (rate limited, forbidden, unauthenticated) are DENIED; everything else is FAILED with the code
// of its sentinel, INTERNAL when it has none.
func Classify(err error) (Outcome, string) {
	var coded interface{ AuditReason() string }
	switch {
	case err == nil:
		return Succeeded, ""
	case errors.As(err, &coded) && coded.AuditReason() != "":
		return Denied, coded.AuditReason()
	case errors.Is(err, db.ErrRateLimited):
		return Denied, ReasonRateLimited
	case errors.Is(err, db.ErrForbidden):
		return Denied, ReasonForbidden
	case errors.Is(err, oidc.ErrUnauthenticated), errors.Is(err, deviceauth.ErrUnauthenticated):
		return Denied, ReasonUnauthenticated
	case errors.Is(err, db.ErrInvalid):
		return Failed, ReasonBadUserInput
	case errors.Is(err, db.ErrNotFound):
		return Failed, ReasonNotFound
	case errors.Is(err, db.ErrConflict):
		return Failed, ReasonConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Failed, ReasonTimeout
	}
	return Failed, ReasonInternal
}

// Principal returns the audit principal of an actor: "anonymous" for "", a bare id as user:<id>,
// anything already prefixed (user:, device:, key:, alert:, anonymous) unchanged.
func Principal(actor string) string {
	switch {
	case actor == "" || actor == "anonymous":
		return "anonymous"
	case strings.HasPrefix(actor, "user:"), strings.HasPrefix(actor, "device:"),
		strings.HasPrefix(actor, "key:"), strings.HasPrefix(actor, "alert:"):
		return actor
	}
	return "user:" + actor
}

// RequestInfo is what the audit log keeps of the request a write came with.
type RequestInfo struct {
	ID            string // the request id (X-Request-Id)
	ClientAddress string // the peer's IP address
	UserAgent     string
}

type requestKey struct{}

// WithRequest returns ctx carrying r: the gateway's middleware adds it to every request.
func WithRequest(ctx context.Context, r RequestInfo) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// RequestFrom returns the request ctx carries, or the zero RequestInfo.
func RequestFrom(ctx context.Context) RequestInfo {
	r, _ := ctx.Value(requestKey{}).(RequestInfo)
	return r
}

// flag holds the finding code of the write Do is running, set by Flag.
type flag struct{ reason string }

type flagKey struct{}

func withFlag(ctx context.Context) (context.Context, *flag) {
	f := &flag{}
	return context.WithValue(ctx, flagKey{}, f), f
}

// Flag marks the write Do is running in ctx as FLAGGED with reason (e.g. the counterfeit
// reasons of a proof verdict, comma-separated): it is carried out, and recorded for review.
// Outside Do it does nothing.
func Flag(ctx context.Context, reason string) {
	if f, ok := ctx.Value(flagKey{}).(*flag); ok {
		f.reason = reason
	}
}

// Attempt tracks whether anything was recorded for one mutation field, so a mutation path that
// recorded nothing (refused by input validation before reaching the guard, or a write outside
// it) is still recorded once by the gateway.
type Attempt struct{ recorded atomic.Bool }

type attemptKey struct{}

// NewAttempt returns ctx tracking a mutation field's records, and the tracker.
func NewAttempt(ctx context.Context) (context.Context, *Attempt) {
	a := &Attempt{}
	return context.WithValue(ctx, attemptKey{}, a), a
}

// Recorded reports whether any record was made in the attempt's context.
func (a *Attempt) Recorded() bool { return a.recorded.Load() }

func markRecorded(ctx context.Context) {
	if a, ok := ctx.Value(attemptKey{}).(*Attempt); ok {
		a.recorded.Store(true)
	}
}

// AuditStore is where an AuditLog writes its batches (*db.DB).
type AuditStore interface {
	InsertAudit(ctx context.Context, recs []db.AuditRecord) error
}

// AuditOptions tune an AuditLog; zero fields take the defaults of DefaultAuditOptions.
type AuditOptions struct {
	// Interval: pending records are written at least this often.
	Interval time.Duration
	// Batch: a batch is written as soon as this many records are pending, and no insert holds
	// more.
	Batch int
	// Buffer: at most this many records wait in memory. A record beyond it is dropped, counted
	// (AuditStats.Dropped) and logged: a request is never held up by the audit log.
	Buffer int
	// FlushTimeout bounds each batch insert.
	FlushTimeout time.Duration
}

// DefaultAuditOptions returns the defaults: a batch every 200 ms or 500 records, 100,000 records
// buffered (a minute of a heavy heartbeat load while the database is slow), 5 s per insert.
func DefaultAuditOptions() AuditOptions {
	return AuditOptions{Interval: 200 * time.Millisecond, Batch: 500, Buffer: 100_000, FlushTimeout: 5 * time.Second}
}

// AuditStats counts what an AuditLog did since it started.
type AuditStats struct {
	Written uint64 // records stored
	Dropped uint64 // records lost: the buffer was full, or Close ran out of time
	Pending int    // records waiting in memory
	Failed  uint64 // batch inserts that failed (their records were kept for the next attempt)
}

// AuditLog is the durable audit log's writer: Record appends an event to an in-memory buffer
// and a background goroutine writes the buffer to the store in multi-row batches. The goroutine
// runs only while records are pending (an idle gateway holds none; a gateway that is dropped
// without Close leaves nothing running once its records are written). Several gateway replicas
// each run one over the same database; their rows interleave by time.
type AuditLog struct {
	store AuditStore
	log   *slog.Logger
	opt   AuditOptions

	mu      sync.Mutex
	buf     []db.AuditRecord
	closed  bool
	running bool // a writer goroutine is running (it stops when the buffer is empty)
	// inflight counts the records flush took and has not written yet: they count against
	// Buffer too.
	inflight int
	kick     chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	written  atomic.Uint64
	dropped  atomic.Uint64
	failed   atomic.Uint64
	// lastDropLog and lastFailLog rate-limit the drop and insert-failure logs (unix nanoseconds).
	lastDropLog atomic.Int64
	lastFailLog atomic.Int64
}

// NewAuditLog returns an AuditLog writing to store; Close flushes and stops it.
func NewAuditLog(store AuditStore, log *slog.Logger, o AuditOptions) *AuditLog {
	d := DefaultAuditOptions()
	if o.Interval <= 0 {
		o.Interval = d.Interval
	}
	if o.Batch <= 0 {
		o.Batch = d.Batch
	}
	if o.Buffer <= 0 {
		o.Buffer = d.Buffer
	}
	o.Buffer = max(o.Buffer, o.Batch)
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = d.FlushTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	return &AuditLog{store: store, log: log, opt: o, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// Attach subscribes the log to g's events.
func (a *AuditLog) Attach(g *Guard) { g.Subscribe(a.Record) }

// Record queues ev for writing. It never blocks on the database: when the buffer is full (or
// the log is closed) the record is dropped, counted and logged.
func (a *AuditLog) Record(ev Event) {
	rec := db.AuditRecord{At: ev.At, Principal: Principal(ev.Actor), Operation: ev.Op, Target: ev.Target,
		Outcome: string(ev.Outcome), Reason: ev.Reason, RequestID: ev.Request.ID,
		ClientAddress: ev.Request.ClientAddress, UserAgent: ev.Request.UserAgent}
	a.mu.Lock()
	if a.closed || len(a.buf)+a.inflight >= a.opt.Buffer {
		closed := a.closed
		a.mu.Unlock()
		if closed {
			a.drop(1, "recorded after the audit log was closed")
		} else {
			a.drop(1, "the audit buffer is full (the database is slow or down)")
		}
		return
	}
	a.buf = append(a.buf, rec)
	full := len(a.buf) >= a.opt.Batch
	if !a.running {
		a.running = true
		a.wg.Add(1)
		go a.run()
	}
	a.mu.Unlock()
	if full {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// drop counts n lost records and logs it, at most once a second.
func (a *AuditLog) drop(n int, why string) {
	total := a.dropped.Add(uint64(n)) // #nosec G115 -- n counts records: never negative
	if every(&a.lastDropLog, time.Second) {
		a.log.Error("audit records dropped", "why", why, "dropped_total", total)
	}
}

// every reports whether at least d passed since the time in last, and if so sets it to now.
func every(last *atomic.Int64, d time.Duration) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(d) && last.CompareAndSwap(prev, now)
}

// Stats returns the log's counters.
func (a *AuditLog) Stats() AuditStats {
	a.mu.Lock()
	pending := len(a.buf) + a.inflight
	a.mu.Unlock()
	return AuditStats{Written: a.written.Load(), Dropped: a.dropped.Load(), Pending: pending, Failed: a.failed.Load()}
}

// run writes the buffer every Interval, or as soon as a batch is full, until it is empty (or
// Close stops it).
func (a *AuditLog) run() {
	defer a.wg.Done()
	tick := time.NewTicker(a.opt.Interval)
	defer tick.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-tick.C:
		case <-a.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.opt.FlushTimeout)
		_ = a.flush(ctx)
		cancel()
		a.mu.Lock()
		if len(a.buf) == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
	}
}

// flush writes what is pending, a batch at a time. It takes the whole buffer at once (Record
// never waits behind a copy of it); when a batch fails, what is left goes back to the front of
// the buffer (as much as fits) for the next attempt, and flush returns the error.
func (a *AuditLog) flush(ctx context.Context) error {
	a.mu.Lock()
	pending := a.buf
	a.buf = make([]db.AuditRecord, 0, a.opt.Batch) // the steady state needs no growing
	a.inflight = len(pending)
	a.mu.Unlock()
	for len(pending) > 0 {
		n := min(len(pending), a.opt.Batch)
		if err := a.store.InsertAudit(ctx, pending[:n]); err != nil {
			a.failed.Add(1)
			a.mu.Lock()
			a.inflight = 0
			room := max(a.opt.Buffer-len(a.buf), 0)
			keep := pending[:min(len(pending), room)]
			a.buf = append(keep[:len(keep):len(keep)], a.buf...)
			pendingNow := len(a.buf)
			a.mu.Unlock()
			if lost := len(pending) - len(keep); lost > 0 {
				a.drop(lost, "the audit buffer is full (the database is slow or down)")
			}
			if every(&a.lastFailLog, 10*time.Second) { // a database outage must not flood the log
				a.log.Warn("writing audit records; kept for the next attempt", "records", n,
					"pending", pendingNow, "err", err)
			}
			return err
		}
		a.written.Add(uint64(n)) // #nosec G115 -- n counts records: never negative
		pending = pending[n:]
		a.mu.Lock()
		a.inflight = len(pending)
		a.mu.Unlock()
	}
	return nil
}

// Close stops the background writer and writes what is pending, retrying failed batches until
// ctx ends. It returns nil when nothing was lost, else an error counting the dropped records
// (also in Stats). Records arriving after Close are dropped and counted.
func (a *AuditLog) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	a.wg.Wait()
	for {
		fctx, cancel := context.WithTimeout(ctx, a.opt.FlushTimeout)
		err := a.flush(fctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			a.mu.Lock()
			lost := len(a.buf)
			a.buf = nil
			a.mu.Unlock()
			a.drop(lost, "shutdown ran out of time")
			return fmt.Errorf("audit log: %d records not written at shutdown: %w", lost, err)
		case <-time.After(a.opt.Interval):
		}
	}
}
