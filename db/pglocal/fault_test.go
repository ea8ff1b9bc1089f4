//go:build unix

package pglocal

import (
	"context"
	"testing"
)

// Kill crashes the cluster like a power cut: no process of it is left, its data directory is
// free, and the next Start recovers from the WAL what was committed before, on the same socket.
// Stop after Kill does nothing.
func TestKillThenStartRecovers(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	s := start(t, Options{DataDir: dir})
	dsn := s.DSN("postgres")
	db := open(t, dsn)
	if _, err := db.Exec(`CREATE TABLE committed (n int); INSERT INTO committed VALUES (1), (2)`); err != nil {
		t.Fatal(err)
	}
	pgid := s.cmd.Process.Pid
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if groupAlive(pgid) {
		t.Fatal("a PostgreSQL process survived Kill")
	}
	if err := db.Ping(); err == nil {
		t.Fatal("the killed cluster still answers")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after Kill: %v", err)
	}
	s2 := start(t, Options{DataDir: dir})
	if s2.DSN("postgres") != dsn {
		t.Fatalf("the restarted cluster's DSN %s differs from %s", s2.DSN("postgres"), dsn)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM committed`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows committed before the kill: %d %v", n, err)
	}
}
