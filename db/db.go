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
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers the "postgres" driver
	"golang.org/x/sync/singleflight"
)

// Options tune the pool and caches.
type Options struct {
	MaxOpenConns int           // default 20
	StatsTTL     time.Duration // how long networkStats may be reused; default 5s, negative disables
	// MaxOpenChallenges is how many unexpired, unused challenges one device may hold (default
	// DefaultMaxOpenChallenges; negative: no cap, for load tests that prepare proofs ahead).
	MaxOpenChallenges int
}

// DB is the gateway's handle on PostgreSQL. It is safe for concurrent use.
type DB struct {
	x        *sqlx.DB
	explorer *sqlx.DB // anonymous reads (roles.go); nil: they use x
	statsTTL time.Duration
	maxOpen  int // open challenges per device; <= 0: no cap
	stats    statsCache
	flight   singleflight.Group
}

// Open connects to dsn and checks the connection. It returns an error when the server cannot be
// reached within ctx.
func Open(ctx context.Context, dsn string, o Options) (*DB, error) {
	x, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
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
	return &DB{x: x, statsTTL: o.StatsTTL, maxOpen: o.MaxOpenChallenges}
}

// SQL returns the underlying pool (migrations, health checks, tests).
func (d *DB) SQL() *sqlx.DB { return d.x }

// Close closes the pools.
func (d *DB) Close() error {
	if d.explorer != nil {
		_ = d.explorer.Close()
	}
	return d.x.Close()
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
