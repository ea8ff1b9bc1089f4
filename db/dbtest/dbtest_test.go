package dbtest_test

import (
	"os"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// isolated creates a table every test creates under the same name, which only works when each
// test has its own database, and checks the migrations reached the clone.
func isolated(t *testing.T, value string) {
	t.Parallel()
	ctx := t.Context()
	d, dsn := dbtest.NewWithDSN(t)
	if got := dbtest.DSN(t, d); got != dsn {
		t.Errorf("DSN = %q, want %q", got, dsn)
	}

	var devices bool
	if err := d.GetContext(ctx, &devices, "SELECT to_regclass('public.devices') IS NOT NULL"); err != nil || !devices {
		t.Fatalf("migrated devices table: exists=%v err=%v", devices, err)
	}
	var n int
	if err := d.GetContext(ctx, &n, "SELECT count(*) FROM devices"); err != nil || n != 0 {
		t.Fatalf("devices: %d rows, %v", n, err)
	}

	if _, err := d.ExecContext(ctx, "CREATE TABLE scratch (v text)"); err != nil {
		t.Fatalf("create scratch (another test's database?): %v", err)
	}
	if _, err := d.ExecContext(ctx, "INSERT INTO scratch VALUES ($1)", value); err != nil {
		t.Fatal(err)
	}
	// a second pool from the DSN sees the same database
	other, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var got []string
	if err := other.SelectContext(ctx, &got, "SELECT v FROM scratch"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != value {
		t.Fatalf("scratch = %q, want [%q]", got, value)
	}
}

func TestIsolationA(t *testing.T) { isolated(t, "a") }
func TestIsolationB(t *testing.T) { isolated(t, "b") }

// BenchmarkNew measures cloning a database from the template (and dropping it at the end).
func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		dbtest.New(b)
	}
}
