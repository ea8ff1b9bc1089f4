// Package db is gpugate's store: the domain types (types.go, enums.go; gqlgen binds the GraphQL
// types to them), the PostgreSQL queries that store them (sqlx + lib/pq, parameterized only; one
// file per area: devices, owners, workers, evidence, addresses, stats, retention), the embedded
// migrations, the demo seed (seed.go), the normalisation of stored text (text.go) and the
// heartbeat coalescer that batches heartbeat writes (heartbeats.go). The types stay beside their
// SQL, as in Dex's storage package: a type here is what a row holds. It never imports the
// GraphQL layer or the verify service that drives the worker protocol over it.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq" // also registers the "postgres" driver
	"golang.org/x/sync/singleflight"
)

// Options tune the pool and caches.
type Options struct {
	MaxOpenConns int           // default 20
	StatsTTL     time.Duration // how long networkStats may be reused; default 5s, negative disables
	// MaxOpenChallenges is how many unexpired, unused challenges one device may hold (default
	// DefaultMaxOpenChallenges; negative: no cap, for load tests that prepare proofs ahead).
	MaxOpenChallenges int
	// TransactionPooler says the connections go through a transaction-pooling PgBouncer
	// (before 1.21), where a statement prepared on one server connection is missing on the
	// next: named prepared statements are then off, every statement is sent with its text
	// (docs/postgresql.md, "PgBouncer"), and Open wraps each lone statement with parameters in
	// a transaction of its own (pooler.go).
	TransactionPooler bool
}

// DB is the gateway's handle on PostgreSQL. It is safe for concurrent use.
type DB struct {
	x        *sqlx.DB
	explorer *sqlx.DB // anonymous reads (roles.go); nil: they use x
	// The read statements prepared on x and on explorer (see stmtCache).
	appStmts, explorerStmts *stmtCache
	statsTTL                time.Duration
	maxOpen                 int // open challenges per device; <= 0: no cap
	noPrepare               bool
	replicas                *replicaSet // anonymous reads (replicas.go); nil: none configured
	session                 *sqlx.DB    // session-level work (SetSession); nil: x
	stats                   statsCache
	flight                  singleflight.Group
	replays                 replayBatch // RecordReplay's queue (replays.go)
}

// Open connects to dsn and checks the connection. It returns an error when the server cannot be
// reached within ctx.
func Open(ctx context.Context, dsn string, o Options) (*DB, error) {
	var x *sqlx.DB
	if o.TransactionPooler {
		pooled, err := openPooled(dsn) // pooler.go
		if err != nil {
			return nil, err
		}
		x = sqlx.NewDb(pooled, "postgres")
	} else {
		var err error
		if x, err = sqlx.Open("postgres", dsn); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
	}
	if err := x.PingContext(ctx); err != nil {
		_ = x.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return New(x, o), nil
}

// New wraps an open pool.
func New(x *sqlx.DB, o Options) *DB {
	if o.MaxOpenConns <= 0 {
		o.MaxOpenConns = 20
	}
	if o.StatsTTL == 0 {
		o.StatsTTL = 5 * time.Second
	}
	x.SetMaxOpenConns(o.MaxOpenConns)
	x.SetMaxIdleConns(o.MaxOpenConns)
	x.SetConnMaxIdleTime(5 * time.Minute)
	if o.MaxOpenChallenges == 0 {
		o.MaxOpenChallenges = DefaultMaxOpenChallenges
	}
	d := &DB{statsTTL: o.StatsTTL, maxOpen: o.MaxOpenChallenges, noPrepare: o.TransactionPooler}
	d.x, d.appStmts = x, d.newStmtCache(x.DB)
	return d
}

// Prepares reports whether the store uses named prepared statements (not Options.TransactionPooler).
func (d *DB) Prepares() bool { return !d.noPrepare }

// SetSession makes x the pool of work that needs a session of its own (session advisory
// locks), for a store whose pool goes through a transaction pooler (Options.TransactionPooler);
// Close closes it. Call it before serving.
func (d *DB) SetSession(x *sqlx.DB) { d.session = x }

// Session returns the pool for session-level work: the one SetSession gave, else the app pool.
func (d *DB) Session() *sqlx.DB {
	if d.session != nil {
		return d.session
	}
	return d.x
}

// SQL returns the underlying pool (migrations, health checks, tests).
func (d *DB) SQL() *sqlx.DB { return d.x }

// Close closes the pools (and with them their prepared statements).
func (d *DB) Close() error {
	if d.replicas != nil {
		d.replicas.close()
	}
	if d.session != nil {
		_ = d.session.Close()
	}
	if d.explorer != nil {
		d.explorerStmts.close()
		_ = d.explorer.Close()
	}
	d.appStmts.close()
	return d.x.Close()
}

// stmtCache holds the hot read statements (devices.go) prepared on one pool, by SQL text, so
// PostgreSQL parses and analyzes each once per connection and, for statements whose plan does
// not depend on their parameters, reuses one generic plan (plan_cache_mode=auto switches to it
// after five executions when it costs no more than the custom ones). Only SQL from the fixed
// tables of devices.go is prepared: the set is bounded, whatever clients ask.
//
// database/sql prepares a statement on each connection the first time it runs there, and again
// on a new connection after one was lost (a terminated backend or a restarted server: lib/pq
// reports the connection bad and database/sql retries on another one). A statement belongs to
// its pool, hence to that pool's role and search_path: the explorer pool's statements read the
// explorer views, the app pool's the tables. A migration that changes what a prepared
// statement returns makes PostgreSQL refuse it ("cached plan must not change result type"):
// query then drops the statement and runs it once more, prepared afresh.
//
// PgBouncer in transaction mode (docs/postgresql.md, "PgBouncer") hands each transaction a
// different server connection, on which a statement prepared elsewhere does not exist: there
// these statements need PgBouncer 1.21+ with max_prepared_statements set (it tracks
// protocol-level prepared statements per server connection), or Options.TransactionPooler,
// which turns the cache off (query then runs the text).
type stmtCache struct {
	pool *sql.DB
	off  bool // Options.TransactionPooler: run the text instead
	// replica: the statements of a read replica's pool, run once more on the primary's
	// after a replica failure (replicas.go); nil for the primary's pools.
	replica *replicaQueryer
	mu      sync.Mutex
	stmts   sync.Map // SQL text -> *sql.Stmt
}

// newStmtCache returns the statement cache of pool, off when the store prepares nothing.
func (d *DB) newStmtCache(pool *sql.DB) *stmtCache { return &stmtCache{pool: pool, off: d.noPrepare} }

// stmt returns the statement for q, preparing it on first use. A failed preparation is not
// remembered (the next call tries again); its error is the driver's.
func (c *stmtCache) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if v, ok := c.stmts.Load(q); ok {
		return v.(*sql.Stmt), nil
	}
	c.mu.Lock() // one preparation per statement, not one per concurrent first caller
	defer c.mu.Unlock()
	if v, ok := c.stmts.Load(q); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := c.pool.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.stmts.Store(q, st)
	return st, nil
}

// query runs the prepared statement q with args. It returns the driver's error; a statement
// PostgreSQL refuses because the schema under it changed is prepared again and run once more.
func (c *stmtCache) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	rows, err := c.run(ctx, q, args...)
	if c.replica != nil && c.replica.fallback(ctx, err) {
		_, primary := c.replica.d.primaryReadPool(ctx)
		return primary.run(ctx, q, args...)
	}
	return rows, err
}

// run is query on this pool alone.
func (c *stmtCache) run(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if c.off {
		return c.pool.QueryContext(ctx, q, args...)
	}
	st, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil && stalePlan(err) {
		c.forget(q, st)
		if st, err = c.stmt(ctx, q); err != nil {
			return nil, err
		}
		rows, err = st.QueryContext(ctx, args...)
	}
	return rows, err
}

// forget drops st, the statement of q, so the next use prepares q again.
func (c *stmtCache) forget(q string, st *sql.Stmt) {
	if c.stmts.CompareAndDelete(q, st) {
		_ = st.Close()
	}
}

func (c *stmtCache) close() {
	c.stmts.Range(func(q, st any) bool {
		_ = st.(*sql.Stmt).Close()
		c.stmts.Delete(q)
		return true
	})
}

// stalePlan reports whether err is PostgreSQL refusing a prepared statement whose result
// columns changed since it was prepared (SQLSTATE 0A000, "cached plan must not change result
// type").
func stalePlan(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "0A000" && pqErr.Message == "cached plan must not change result type"
}

// Ready reports whether the database answers and every embedded migration is applied; the error
// says which is not the case.
func (d *DB) Ready(ctx context.Context) error {
	if err := d.x.PingContext(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	pending, err := MigrationsPending(ctx, d.x.DB)
	if err != nil {
		return err
	}
	if pending {
		return ErrMigrationsPending
	}
	return nil
}
