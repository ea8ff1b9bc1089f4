package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Read replicas (docs/postgresql.md, "Read replicas"): anonymous explorer reads go to a healthy
// streaming replica; everything else (writes, authorization checks, every signed-in read) goes
// to the primary, so an owner reads their own writes back without waiting for a replica. A
// background checker per replica compares the replica's replayed WAL position with the
// primary's and takes the replica out of rotation while it is unreachable, not a standby, or
// further behind than ReplicaOptions.MaxLag; reads then use the primary's explorer pool.

// DefaultReplicaMaxLag is how stale a replica may be before anonymous reads leave it. The
// explorer already shows network totals up to 5 s old (the stats TTL) and device states that
// change on 30 s heartbeats, so a replica a few seconds behind shows nothing an anonymous
// visitor could tell from the primary's answer.
const DefaultReplicaMaxLag = 5 * time.Second

// DefaultReplicaCheckEvery is how often each replica's health and lag are checked.
const DefaultReplicaCheckEvery = time.Second

// ReplicaOptions configure AddReplicas.
type ReplicaOptions struct {
	MaxLag     time.Duration // staleness bound; default DefaultReplicaMaxLag
	CheckEvery time.Duration // default DefaultReplicaCheckEvery
	MaxConns   int           // connections per replica; default 10
	Logger     *slog.Logger  // state changes; nil: slog.Default()
}

// ReplicaState is what the last check found about one replica.
type ReplicaState struct {
	Name string // the replica's position in the configured list: "0", "1", ...
	// Up: anonymous reads use it now (reachable, a standby, explorer views readable, within
	// MaxLag).
	Up bool
	// Lag is how stale the replica's data is: every write the primary committed more than Lag
	// ago is visible on it (measured from WAL positions, not from replay timestamps, so an idle
	// primary does not make it grow). Negative: unknown (unreachable, or not measured yet).
	Lag time.Duration
	// LagBytes is the WAL the replica has yet to replay (primary position minus replay
	// position); negative: unknown.
	LagBytes int64
	Reason   string // why it is not up: unreachable, not_standby, explorer_views, lagging, starting
}

// Reasons a replica is not up (ReplicaState.Reason).
const (
	ReplicaUnreachable   = "unreachable"
	ReplicaNotStandby    = "not_standby"
	ReplicaExplorerViews = "explorer_views"
	ReplicaLagging       = "lagging"
	ReplicaStarting      = "starting"
)

type replica struct {
	name  string
	x     *sqlx.DB
	stmts *stmtCache      // prepared on x, falling back to the primary's (stmtCache.replica)
	q     *replicaQueryer // x, falling back to the primary's
	up    atomic.Bool
	mu    sync.Mutex
	state ReplicaState
	// samples of the primary's WAL position (checker goroutine only), oldest first.
	samples []lsnSample
}

type lsnSample struct {
	at  time.Time
	lsn uint64
}

type replicaSet struct {
	list    []*replica
	next    atomic.Uint64
	maxLag  time.Duration
	every   time.Duration
	log     *slog.Logger
	primary *sqlx.DB
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// AddReplicas makes the read replicas at dsns serve anonymous reads and starts their checkers;
// Close stops them and closes their pools. Each connection string gets the explorer's
// search_path (see ExplorerDSN: a physical replica has the primary's roles and views, so use
// the explorer role's credentials). No replica is contacted here: one that is down at start
// is simply not used until a check finds it healthy. Call it once, before serving. It returns
// an error for a malformed connection string.
func (d *DB) AddReplicas(dsns []string, o ReplicaOptions) error {
	if len(dsns) == 0 {
		return nil
	}
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultReplicaMaxLag
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = DefaultReplicaCheckEvery
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 10
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &replicaSet{maxLag: o.MaxLag, every: o.CheckEvery, log: o.Logger, primary: d.x}
	for i, dsn := range dsns {
		edsn, err := d.explorerDSN(dsn)
		if err != nil {
			s.closePools()
			return fmt.Errorf("replica %d: %w", i, err)
		}
		x, err := sqlx.Open("postgres", edsn)
		if err != nil {
			s.closePools()
			return fmt.Errorf("replica %d: %w", i, err)
		}
		x.SetMaxOpenConns(o.MaxConns)
		x.SetMaxIdleConns(o.MaxConns)
		x.SetConnMaxIdleTime(5 * time.Minute)
		name := strconv.Itoa(i)
		r := &replica{name: name, x: x, stmts: d.newStmtCache(x.DB),
			state: ReplicaState{Name: name, Lag: -1, LagBytes: -1, Reason: ReplicaStarting}}
		r.q = &replicaQueryer{r: r, d: d}
		r.stmts.replica = r.q
		s.list = append(s.list, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	for _, r := range s.list {
		s.wg.Add(1)
		go s.watch(ctx, r)
	}
	d.replicas = s
	return nil
}

// Replicas returns the state of each configured replica, in configuration order (nil when none
// is configured). It reads no database, so a metrics scrape may call it.
func (d *DB) Replicas() []ReplicaState {
	if d.replicas == nil {
		return nil
	}
	out := make([]ReplicaState, len(d.replicas.list))
	for i, r := range d.replicas.list {
		r.mu.Lock()
		out[i] = r.state
		r.mu.Unlock()
	}
	return out
}

func (s *replicaSet) close() {
	s.stop()
	s.wg.Wait()
	s.closePools()
}

func (s *replicaSet) closePools() {
	for _, r := range s.list {
		r.stmts.close()
		_ = r.x.Close()
	}
}

// pick returns a replica that is up, taking them in turn, or nil when none is.
func (s *replicaSet) pick() *replica {
	n := uint64(len(s.list))
	start := s.next.Add(1)
	for i := uint64(0); i < n; i++ {
		if r := s.list[(start+i)%n]; r.up.Load() {
			return r
		}
	}
	return nil
}

func (s *replicaSet) watch(ctx context.Context, r *replica) {
	defer s.wg.Done()
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.check(ctx, r)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check measures r once and publishes the result. The primary's position is read before the
// replica's, so a replica that has replayed it holds every write committed before that read.
func (s *replicaSet) check(ctx context.Context, r *replica) {
	timeout := s.every
	if timeout < time.Second {
		timeout = time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := time.Now()
	var primaryLSN string
	primaryOK := s.primary.QueryRowContext(cctx, `SELECT pg_current_wal_lsn()::text`).Scan(&primaryLSN) == nil
	if primaryOK {
		if p, ok := parseLSN(primaryLSN); ok {
			r.samples = append(r.samples, lsnSample{at: now, lsn: p})
		}
	}
	var probe struct {
		recovery bool
		replay   sql.NullString
		schema   sql.NullString
	}
	err := r.x.QueryRowContext(cctx, `SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, current_schema()`).
		Scan(&probe.recovery, &probe.replay, &probe.schema)
	if ctx.Err() != nil {
		return // stopping: publish nothing
	}
	st := ReplicaState{Name: r.name, Lag: -1, LagBytes: -1}
	replay, replayOK := parseLSN(probe.replay.String)
	switch {
	case err != nil:
		st.Reason = ReplicaUnreachable
	case !probe.recovery || !replayOK:
		st.Reason = ReplicaNotStandby // promoted or a primary: it no longer follows ours
	case probe.schema.String != ExplorerSchema:
		st.Reason = ReplicaExplorerViews
	case !primaryOK:
		// The primary does not answer: nothing is being written, so the replica is as fresh
		// as it gets; keep serving anonymous reads from it if it was serving them.
		st.Up, st.Reason = r.up.Load(), ""
		if !st.Up {
			st.Reason = ReplicaStarting
		}
	default:
		st.Lag, st.LagBytes = r.staleness(now, replay, s.maxLag)
		switch {
		case st.Lag < 0:
			st.Reason = ReplicaStarting
		case st.Lag > s.maxLag:
			st.Reason = ReplicaLagging
		default:
			st.Up = true
		}
	}
	r.publish(st, err, s.log)
}

// staleness returns how stale a replica that has replayed up to replay is at now, from the
// primary's sampled positions, and how many WAL bytes it is behind the latest sample; (-1, -1)
// when no sample bounds it yet. Samples older than what bound needs are dropped.
func (r *replica) staleness(now time.Time, replay uint64, bound time.Duration) (time.Duration, int64) {
	if len(r.samples) == 0 {
		return -1, -1
	}
	latest := r.samples[len(r.samples)-1]
	var behind int64
	if latest.lsn > replay {
		behind = math.MaxInt64 // LSNs are below 2^63 in practice; saturate rather than wrap
		if d := latest.lsn - replay; d < math.MaxInt64 {
			behind = int64(d)
		}
	}
	lag := time.Duration(-1)
	if replay >= latest.lsn {
		lag = 0
	} else {
		// The newest sample the replica has fully replayed: every write committed before it
		// is visible there.
		for i := len(r.samples) - 1; i >= 0; i-- {
			if r.samples[i].lsn <= replay {
				lag = now.Sub(r.samples[i].at)
				break
			}
		}
		if lag < 0 && now.Sub(r.samples[0].at) > bound {
			lag = now.Sub(r.samples[0].at) // at least this stale: beyond the bound either way
		}
	}
	// Keep what can still matter: samples within twice the bound, and always the latest.
	keep := 0
	for keep < len(r.samples)-1 && now.Sub(r.samples[keep].at) > 2*bound {
		keep++
	}
	r.samples = append(r.samples[:0], r.samples[keep:]...)
	return lag, behind
}

// publish stores st and logs a change of usability.
func (r *replica) publish(st ReplicaState, err error, log *slog.Logger) {
	r.mu.Lock()
	prev := r.state
	r.state = st
	r.mu.Unlock()
	was := r.up.Swap(st.Up)
	switch {
	case st.Up && !was:
		log.Info("read replica in use for anonymous reads", "replica", r.name, "lag", st.Lag)
	case !st.Up && (was || prev.Reason != st.Reason) && st.Reason != ReplicaStarting:
		args := []any{"replica", r.name, "reason", st.Reason, "lag", st.Lag, "lag_bytes", st.LagBytes}
		if err != nil {
			args = append(args, "err", err)
		}
		log.Warn("read replica not used: anonymous reads fall back to the primary", args...)
	}
}

// failed takes r out of rotation after a query found it unreachable; the next check puts it
// back when it answers again.
func (r *replica) failed(err error, log *slog.Logger) {
	r.mu.Lock()
	r.state.Up, r.state.Reason = false, ReplicaUnreachable
	r.mu.Unlock()
	if r.up.Swap(false) {
		log.Warn("read replica failed a query: anonymous reads fall back to the primary", "replica", r.name, "err", err)
	}
}

// parseLSN parses a pg_lsn's text form ("16/B374D848") into its 64-bit position.
func parseLSN(s string) (uint64, bool) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, false
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return h<<32 | l, true
}

// queryer is what the public read methods run unprepared statements on (readPool): a pool, or
// a replica's pool with a fallback to the primary's.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// replicaQueryer runs reads on a replica, and once more on the primary's pool when the replica
// fails in a way that says nothing about the query (see replicaFailure): reads have no side
// effects, so the second run answers as the first would have. A failure while reading the rows
// after the first one arrived is returned as is (the caller has consumed part of them).
type replicaQueryer struct {
	r *replica
	d *DB
}

// QueryContext returns the replica's rows, or the primary's after a replica failure.
func (q *replicaQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := q.r.x.QueryContext(ctx, query, args...)
	if q.fallback(ctx, err) {
		x, _ := q.d.primaryReadPool(ctx)
		return x.QueryContext(ctx, query, args...)
	}
	return rows, err
}

// QueryxContext is QueryContext for sqlx (reader: sqlx.SelectContext).
func (q *replicaQueryer) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	rows, err := q.r.x.QueryxContext(ctx, query, args...)
	if q.fallback(ctx, err) {
		x, _ := q.d.primaryReadPool(ctx)
		return x.QueryxContext(ctx, query, args...)
	}
	return rows, err
}

// QueryRowxContext runs on the replica only: its error is known only when scanned.
func (q *replicaQueryer) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return q.r.x.QueryRowxContext(ctx, query, args...)
}

// fallback reports whether err from the replica calls for running the read on the primary,
// taking the replica out of rotation when err says it is unusable.
func (q *replicaQueryer) fallback(ctx context.Context, err error) bool {
	retry, down := replicaFailure(ctx, err)
	if down {
		q.r.failed(err, q.d.replicas.log)
	}
	return retry
}

// replicaFailure reports whether err, from a read on a replica, may be retried on the primary
// (retry) and whether it says the replica is unusable (down). A request whose context ended is
// not retried; an error the query itself caused (bad input, a missing row) would recur.
func replicaFailure(ctx context.Context, err error) (retry, down bool) {
	if err == nil || ctx.Err() != nil || errors.Is(err, sql.ErrNoRows) {
		return false, false
	}
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		// Not the server's answer: the connection failed (refused, reset, EOF, bad conn).
		return true, true
	}
	switch code := string(pqErr.Code); {
	case strings.HasPrefix(code, "08"), // connection exception
		code == "57P01", code == "57P02", code == "57P03", // shutting down, crashed, starting up
		code == "53300": // too many connections
		return true, true
	case code == "40001", // canceled by a conflict with WAL replay
		strings.HasPrefix(code, "53"), strings.HasPrefix(code, "58"): // out of resources, system error
		return true, false
	}
	return false, false
}
