// Package dbtest gives every test its own PostgreSQL database, cloned from a migrated
// template, in one throwaway cluster per test binary (see pglocal). Tests using it may run
// in parallel. A package using New must route TestMain through Main:
//
//	func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }
//
// Set GPUGATE_TEST_PG_BIN to the directory holding initdb and postgres to override the
// automatic lookup (PATH, then /usr/lib/postgresql/*/bin).
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
)

// templateDB is the migrated database every test database is cloned from.
const templateDB = "gpugate_template"

// BinDirEnv names the environment variable that, when set, is passed as pglocal.Options.BinDir.
const BinDirEnv = "GPUGATE_TEST_PG_BIN"

var (
	mainRunning atomic.Bool

	setupOnce sync.Once
	setupErr  error
	dataDir   string
	server    *pglocal.Server
	admin     *sql.DB // connected to the "postgres" database, for CREATE/DROP DATABASE

	// createMu serializes CREATE DATABASE ... TEMPLATE: cloning fails while any other session
	// uses the template, and concurrent clones of one template contend for it.
	createMu sync.Mutex
	counter  atomic.Int64

	dsns sync.Map // *sqlx.DB -> DSN, for DSN
)

// Main runs the tests of a package that uses New, then stops the shared cluster (if a test
// started it) and removes its directory, whether or not the tests passed. It returns the exit
// code for os.Exit: m.Run's, or 1 when the tests passed but the cleanup failed. (A panicking
// test ends the process before the cleanup: PostgreSQL still exits with it, on Linux, but the
// gpugate-dbtest-* temp directory stays.)
func Main(m *testing.M) int {
	mainRunning.Store(true)
	code := m.Run()
	if err := teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "dbtest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func teardown() error {
	if admin != nil {
		_ = admin.Close() // the cluster stops next, which ends its sessions anyway
	}
	var err error
	if server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = server.Stop(ctx)
		cancel()
	}
	if dataDir != "" {
		if rmErr := os.RemoveAll(dataDir); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	return err
}

// setup starts the cluster and builds the migrated template, once per test binary.
func setup() error {
	setupOnce.Do(func() { setupErr = doSetup() })
	return setupErr
}

func doSetup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "gpugate-dbtest-")
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	dataDir = dir
	// Quiet: pglocal's errors carry what matters; its Info lines would clutter test output.
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	server, err = pglocal.Start(ctx, pglocal.Options{DataDir: dir, BinDir: os.Getenv(BinDirEnv), Fast: true, Logger: lg})
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	if err := server.EnsureDatabase(ctx, templateDB); err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	// As in zero-config mode (cli/database.go): the superuser creates the roles, the owner
	// migrates; every test database is a clone, with the same owners and grants.
	super, err := sql.Open("postgres", server.DSN(templateDB))
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	err = db.PrepareLocalRoles(ctx, super)
	_ = super.Close() // a pool's close error is a connection's; the statement's error is err
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	tmpl, err := sql.Open("postgres", server.DSNAs(db.RoleOwner, templateDB))
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	_, err = db.Migrate(ctx, tmpl)
	_ = tmpl.Close() // cloning needs the template free of sessions (a refused clone says so)
	if err != nil {
		return fmt.Errorf("dbtest: migrate template: %w", err)
	}
	admin, err = sql.Open("postgres", server.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("dbtest: %w", err)
	}
	admin.SetMaxOpenConns(4)
	return nil
}

// New returns a connection pool (driver "postgres", as the cluster's superuser) to a fresh
// database cloned from one migrated with db.Migrate as db.RoleOwner, dropped when the test ends. It fails the test (never skips) when
// the cluster cannot start, for instance with pglocal.ErrNoPostgres when the PostgreSQL
// server binaries are missing, or when Main is not running the tests.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	dbx, _ := NewWithDSN(t)
	return dbx
}

// NewWithDSN is New, also returning the connection string of the new database (for code
// under test that opens its own connections, such as a server started by the test).
func NewWithDSN(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal("dbtest: the package's TestMain must run the tests through dbtest.Main: func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }")
	}
	if err := setup(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	name := fmt.Sprintf("t_%d", counter.Add(1))
	createMu.Lock()
	_, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+" TEMPLATE "+pq.QuoteIdentifier(templateDB))
	createMu.Unlock()
	if err != nil {
		t.Fatalf("dbtest: create database %s: %v", name, err)
	}
	dsn := server.DSN(name)
	dbx, err := sqlx.Open("postgres", dsn)
	if err == nil {
		err = dbx.PingContext(ctx)
	}
	t.Cleanup(func() {
		if dbx != nil {
			_ = dbx.Close() // before DROP: FORCE would kill them anyway, but leave no broken pool
			dsns.Delete(dbx)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("dbtest: drop database %s: %v", name, err)
		}
	})
	if err != nil {
		t.Fatalf("dbtest: connect to %s: %v", name, err)
	}
	dsns.Store(dbx, dsn)
	return dbx, dsn
}

// DSN returns the connection string of a database returned by New or NewWithDSN while its
// test runs; it fails the test when dbx did not come from them.
func DSN(t testing.TB, dbx *sqlx.DB) string {
	t.Helper()
	v, ok := dsns.Load(dbx)
	if !ok {
		t.Fatal("dbtest: DSN: the *sqlx.DB does not come from dbtest.New")
	}
	return v.(string)
}

// AsRole returns a pool on the database of dbx (from New) as role (db.RoleOwner, db.RoleApp or
// db.RoleExplorer), closed when the test ends. The explorer's is opened by db.OpenExplorer:
// search_path is the explorer schema and the views are checked readable. It fails the test when
// the role cannot connect.
func AsRole(t testing.TB, dbx *sqlx.DB, role string) *sqlx.DB {
	t.Helper()
	u, err := url.Parse(DSN(t, dbx))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	var x *sqlx.DB
	if role == db.RoleExplorer {
		x, _, err = db.OpenExplorer(context.Background(), u.String(), 4)
	} else if x, err = sqlx.Open("postgres", u.String()); err == nil {
		err = x.Ping()
	}
	if err != nil {
		t.Fatalf("dbtest: connect as %s: %v", role, err)
	}
	t.Cleanup(func() { _ = x.Close() }) // its database is dropped next: nothing to lose
	return x
}

// Store returns a store on the database of dbx as the gateway runs in zero-config mode: the app
// role's pool, and the explorer role's for anonymous reads (db.Anonymous).
func Store(t testing.TB, dbx *sqlx.DB, o db.Options) *db.DB {
	t.Helper()
	s := db.New(AsRole(t, dbx, db.RoleApp), o)
	s.SetExplorer(AsRole(t, dbx, db.RoleExplorer))
	return s
}
