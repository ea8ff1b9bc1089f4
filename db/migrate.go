package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/lib/pq"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// migrationProvider returns goose's provider over the embedded migrations. With locked, applying
// them takes a session-level advisory lock, so replicas that start together with pending
// migrations apply them one at a time (each waits up to 5 minutes for the other).
func migrationProvider(sqldb *sql.DB, locked bool) (*goose.Provider, error) {
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	var opts []goose.ProviderOption
	if locked {
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqldb, sub, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// ErrMigratePermission is returned by Migrate when the database role may not create what the
// migrations create: migrations must run as the role that owns the schema.
var ErrMigratePermission = errors.New("migrate: permission denied: run `gpugate migrate` as the role that owns the database " +
	"(see docs/postgresql.md), then start serve with --migrate=false")

// Migrate applies every pending embedded migration, one gateway at a time. It returns the
// versions applied; an error leaves the database at the last migration that completed (each
// runs in its own transaction). A role without the privileges gets ErrMigratePermission.
func Migrate(ctx context.Context, sqldb *sql.DB) ([]int64, error) {
	p, err := migrationProvider(sqldb, true)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "42501" { // insufficient_privilege
		return nil, fmt.Errorf("%w (%s)", ErrMigratePermission, pqErr.Message)
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// MigrationsPending reports whether the database lacks any embedded migration. It returns an
// error when the database cannot be read.
func MigrationsPending(ctx context.Context, sqldb *sql.DB) (bool, error) {
	// An empty database has no version table yet: every migration is pending (goose would
	// report it as an error).
	var exists bool
	if err := sqldb.QueryRowContext(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists); err != nil {
		return false, fmt.Errorf("migration status: %w", err)
	}
	if !exists {
		return true, nil
	}
	p, err := migrationProvider(sqldb, false)
	if err != nil {
		return false, err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return false, fmt.Errorf("migration status: %w", err)
	}
	return pending, nil
}
