package db_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// emptyDatabase creates a database with nothing in it (no migration applied) in the test
// cluster, owned by owner ("" for the cluster's superuser), and returns its connection string
// for user ("" for the superuser).
func emptyDatabase(t *testing.T, owner, user string) string {
	t.Helper()
	x, dsn := dbtest.NewWithDSN(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "empty_" + hex.EncodeToString(b[:])
	stmt := "CREATE DATABASE " + name // a fixed prefix and hex digits: no quoting needed
	if owner != "" {
		stmt += " OWNER " + owner
	}
	if _, err := x.Exec(stmt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = x.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	if user != "" {
		u.User = url.User(user)
	}
	return u.String()
}

// appRole creates a login role with no privileges beyond PUBLIC's (on PostgreSQL 15, no CREATE
// on schema public), like a gateway's application role.
func appRole(t *testing.T) string {
	t.Helper()
	x := dbtest.New(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	role := "app_" + hex.EncodeToString(b[:])
	if _, err := x.Exec("CREATE ROLE " + role + " LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = x.Exec("DROP ROLE IF EXISTS " + role) })
	return role
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	sqldb, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqldb.Close() })
	return sqldb
}

// An empty database is "migrations pending", not "unreachable", also for the gateway's own role
// that may not create goose's version table: readiness must say what to do.
func TestEmptyDatabaseHasMigrationsPending(t *testing.T) {
	t.Parallel()
	sqldb := open(t, emptyDatabase(t, "", appRole(t)))
	pending, err := db.MigrationsPending(context.Background(), sqldb)
	if err != nil || !pending {
		t.Fatalf("MigrationsPending on an empty database = %v, %v; want true, nil", pending, err)
	}
	if err := db.New(sqlx.NewDb(sqldb, "postgres"), db.Options{}).Ready(context.Background()); !errors.Is(err, db.ErrMigrationsPending) {
		t.Fatalf("Ready on an empty database = %v; want ErrMigrationsPending", err)
	}
}

// Replicas starting together with pending migrations apply them one at a time: every Migrate
// succeeds and the schema is applied once.
func TestConcurrentMigrationsApplyOnce(t *testing.T) {
	t.Parallel()
	dsn := emptyDatabase(t, "", "")
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	applied := make([][]int64, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = db.Migrate(context.Background(), open(t, dsn))
		}()
	}
	wg.Wait()
	total := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		total += len(applied[i])
	}
	sqldb := open(t, dsn)
	var n int
	if err := sqldb.QueryRow(`SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if total != n || n == 0 {
		t.Fatalf("replicas applied %d migrations in all; the database records %d", total, n)
	}
}

// A role that may not create objects gets a message that says to migrate as the owner, not the
// driver's "permission denied for schema public".
func TestMigrateWithoutPrivilegesSaysWhatToDo(t *testing.T) {
	t.Parallel()
	dsn := emptyDatabase(t, "", appRole(t))
	_, err := db.Migrate(context.Background(), open(t, dsn))
	if !errors.Is(err, db.ErrMigratePermission) {
		t.Fatalf("Migrate as a role without CREATE = %v; want ErrMigratePermission", err)
	}
}
