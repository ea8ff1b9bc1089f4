package pglocal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newDataDir returns a fresh empty directory that, as root, Start can hand to the unprivileged
// user (t.TempDir's parent is a 0700 root directory postgres could not enter).
func newDataDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("GPUGATE_TEST_PG_BIN")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStartReuseStop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := newDataDir(t)

	t0 := time.Now()
	s := start(t, Options{DataDir: dir}) // durable settings: the production path
	t.Logf("first start (initdb + postgres): %v", time.Since(t0))

	if got := s.User(); got != "gpugate" {
		t.Errorf("User() = %q", got)
	}
	if want := filepath.Join(s.DataDir(), "run"); s.SocketDir() != want {
		t.Errorf("SocketDir() = %q, want %q", s.SocketDir(), want)
	}
	sock := filepath.Join(s.SocketDir(), fmt.Sprintf(".s.PGSQL.%d", s.Port()))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("socket file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("socket mode %v, want 0700", perm)
	}
	if os.Geteuid() == 0 {
		if s.OSUser() == "root" {
			t.Errorf("OSUser() = root")
		}
		if pfi, err := os.Stat(fmt.Sprintf("/proc/%d", s.cmd.Process.Pid)); err == nil {
			if uid := pfi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
				t.Errorf("postgres runs as uid 0")
			}
		}
	}

	if err := s.EnsureDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureDatabase(ctx, "app"); err != nil {
		t.Fatalf("second EnsureDatabase: %v", err)
	}
	for _, bad := range []string{"", "App", "1app", "a-b", "a\"b", strings.Repeat("a", 64)} {
		if err := s.EnsureDatabase(ctx, bad); err == nil {
			t.Errorf("EnsureDatabase(%q) succeeded", bad)
		}
	}
	db := open(t, s.DSN("app"))
	var user, dbname string
	if err := db.QueryRowContext(ctx, "SELECT current_user, current_database()").Scan(&user, &dbname); err != nil {
		t.Fatal(err)
	}
	if user != "gpugate" || dbname != "app" {
		t.Errorf("connected as %s to %s", user, dbname)
	}
	var listen string
	if err := db.QueryRowContext(ctx, "SHOW listen_addresses").Scan(&listen); err != nil || listen != "" {
		t.Errorf("listen_addresses = %q, %v; want empty", listen, err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	t0 = time.Now()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stop: %v", time.Since(t0))
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("socket file left after Stop")
	}

	t0 = time.Now()
	s2 := start(t, Options{DataDir: dir})
	t.Logf("restart on existing cluster: %v", time.Since(t0))
	var v string
	if err := open(t, s2.DSN("app")).QueryRowContext(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "survives" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
	if err := s2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	logb, err := os.ReadFile(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logb), "database system is ready to accept connections"); n != 2 {
		t.Errorf("postgres.log records %d starts, want 2 (appended)", n)
	}
}

func TestSecondStartFails(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	s := start(t, Options{DataDir: dir, Fast: true})

	_, err := Start(t.Context(), Options{DataDir: dir, Fast: true, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "another PostgreSQL is already running on") {
		t.Fatalf("second Start: %v", err)
	}
	t.Logf("second Start: %v", err)

	// A postgres left running without its gateway (the lock file released): postgres' own
	// lock stops the second one, and the error says why.
	s.lock.Close()
	_, err = Start(t.Context(), Options{DataDir: dir, Fast: true, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "another PostgreSQL is already running on") ||
		!strings.Contains(err.Error(), "postmaster.pid") {
		t.Fatalf("Start beside an orphaned postgres: %v", err)
	}
	t.Logf("Start beside an orphaned postgres: %v", err)

	// the first server still works
	if err := s.EnsureDatabase(t.Context(), "still_up"); err != nil {
		t.Fatal(err)
	}
}

func TestLongDataDirUsesShortSocketDir(t *testing.T) {
	t.Parallel()
	base := newDataDir(t)
	if err := os.Chmod(base, 0o755); err != nil { // MkdirTemp's 0700 would stop postgres
		t.Fatal(err)
	}
	dir := filepath.Join(base, strings.Repeat("d", 60), strings.Repeat("e", 40))
	s := start(t, Options{DataDir: dir, Fast: true})
	t.Cleanup(func() { os.RemoveAll(s.SocketDir()) })
	if strings.HasPrefix(s.SocketDir(), s.DataDir()) || !strings.HasPrefix(filepath.Base(s.SocketDir()), "gpugate-") {
		t.Errorf("SocketDir() = %q, want a short gpugate-<hash> dir", s.SocketDir())
	}
	if err := open(t, s.DSN("postgres")).PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.SocketDir()); err == nil {
		t.Errorf("socket dir %s left after Stop", s.SocketDir())
	}
}

func TestUnreachableDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another user")
	}
	t.Parallel()
	parent := t.TempDir() // its parent is a 0700 root directory
	_, err := Start(t.Context(), Options{DataDir: filepath.Join(parent, "data"), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot enter "+filepath.Dir(parent)) ||
		!strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start: %v", err)
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	_, err := FindBinDir(filepath.Join(t.TempDir(), "bogus"))
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("FindBinDir(bogus) = %v, want ErrNoPostgres", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Errorf("error does not say what to install: %v", err)
	}
	_, err = Start(t.Context(), Options{DataDir: t.TempDir(), BinDir: "/nonexistent"})
	if !errors.Is(err, ErrNoPostgres) {
		t.Errorf("Start with bogus BinDir = %v, want ErrNoPostgres", err)
	}

	dir, err := FindBinDir(os.Getenv("GPUGATE_TEST_PG_BIN"))
	if err != nil {
		t.Fatal(err)
	}
	if checkBinDir(dir) != nil {
		t.Errorf("FindBinDir() = %q without initdb and postgres", dir)
	}
	t.Logf("FindBinDir() = %s", dir)
}

func TestParseVersionOrder(t *testing.T) {
	a, _ := parseVersion("9.6")
	b, _ := parseVersion("10")
	c, _ := parseVersion("15")
	if !(compareVersions(a, b) < 0 && compareVersions(b, c) < 0) {
		t.Errorf("want 9.6 < 10 < 15")
	}
	if _, ok := parseVersion("15beta"); ok {
		t.Error("parsed 15beta")
	}
}
