package db_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/db/pglocal"
)

// poolCluster is a primary and a streaming replica made by pglocal.StartReplica
// (pg_basebackup -R), a migrated and seeded database "gpugate" on both, and a store whose
// anonymous reads go to the replica.
type poolCluster struct {
	t                *testing.T
	primary, replica *pglocal.Server
	replicaDir       string
	super            *sqlx.DB // superuser on the primary
	store            *db.DB
	owner            string // the owner of device
	device           string
}

const poolDB = "gpugate"

// poolReplicaLag is the staleness bound of the tests: long enough that a paused replica is
// still used for a while, short enough to wait for.
const poolReplicaLag = 2 * time.Second

func poolStartCluster(t *testing.T) *poolCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Under /tmp, 0755: postgres runs as another user when the tests run as root, and
	// t.TempDir's parent is a 0700 root directory it could not enter.
	base, err := os.MkdirTemp("", "gpugate-pool-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &poolCluster{t: t, replicaDir: filepath.Join(base, "replica")}
	c.primary, err = pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(base, "primary"), BinDir: os.Getenv(dbtest.BinDirEnv), Fast: true, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.primary.Stop(context.Background()) })
	if err := c.primary.EnsureDatabase(ctx, poolDB); err != nil {
		t.Fatal(err)
	}
	c.super = sqlx.MustOpen("postgres", c.primary.DSN(poolDB))
	t.Cleanup(func() { _ = c.super.Close() })
	if err := db.PrepareLocalRoles(ctx, c.super.DB); err != nil {
		t.Fatal(err)
	}
	owner, err := db.Open(ctx, c.primary.DSNAs(db.RoleOwner, poolDB), db.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Migrate(ctx, owner.SQL().DB); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Seed(ctx, 20); err != nil {
		t.Fatal(err)
	}
	_ = owner.Close()
	if err := c.super.GetContext(ctx, &c.device, `SELECT id FROM devices WHERE owner_id IS NOT NULL AND removed_at IS NULL ORDER BY id LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if err := c.super.GetContext(ctx, &c.owner, `SELECT owner_id FROM devices WHERE id = $1`, c.device); err != nil {
		t.Fatal(err)
	}
	c.startReplica(ctx)

	app, err := db.Open(ctx, c.primary.DSNAs(db.RoleApp, poolDB), db.Options{StatsTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	ex, _, err := db.OpenExplorer(ctx, c.primary.DSNAs(db.RoleExplorer, poolDB), 4)
	if err != nil {
		t.Fatal(err)
	}
	app.SetExplorer(ex)
	err = app.AddReplicas([]string{c.replica.DSNAs(db.RoleExplorer, poolDB)},
		db.ReplicaOptions{MaxLag: poolReplicaLag, CheckEvery: 100 * time.Millisecond, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	c.store = app
	c.waitUp(true)
	return c
}

func (c *poolCluster) startReplica(ctx context.Context) {
	c.t.Helper()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := pglocal.StartReplica(ctx, c.primary, pglocal.Options{DataDir: c.replicaDir, Fast: true, Logger: lg})
	if err != nil {
		c.t.Fatal(err)
	}
	c.replica = r
	c.t.Cleanup(func() { _ = r.Stop(context.Background()) })
}

// replicaSQL runs q on the replica as its superuser.
func (c *poolCluster) replicaSQL(q string) {
	c.t.Helper()
	x, err := sqlx.Open("postgres", c.replica.DSN(poolDB))
	if err != nil {
		c.t.Fatal(err)
	}
	defer x.Close()
	if _, err := x.Exec(q); err != nil {
		c.t.Fatalf("replica: %s: %v", q, err)
	}
}

// waitUp waits until the replica's state is up (or not), and returns it.
func (c *poolCluster) waitUp(up bool) db.ReplicaState {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := c.store.Replicas()[0]
		if st.Up == up {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("replica state %+v; want up=%v", st, up)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// name reads the device's name as an anonymous visitor (anon) or as its owner.
func (c *poolCluster) name(anon bool) string {
	c.t.Helper()
	ctx := context.Background()
	if anon {
		ctx = db.Anonymous(ctx)
	}
	dev, err := c.store.Device(ctx, c.device)
	if err != nil {
		c.t.Fatalf("read device (anonymous %v): %v", anon, err)
	}
	return dev.Name
}

// rename renames the device as its owner, through the store (the primary).
func (c *poolCluster) rename(name string) {
	c.t.Helper()
	if _, err := c.store.UpdateDevice(context.Background(), c.device, c.owner, db.UpdateDeviceInput{Name: &name}); err != nil {
		c.t.Fatal(err)
	}
}

// waitName waits until an anonymous read returns want.
func (c *poolCluster) waitName(want string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.name(true) != want {
		if time.Now().After(deadline) {
			c.t.Fatalf("anonymous read still %q, want %q (replica %+v)", c.name(true), want, c.store.Replicas())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Anonymous reads are served by the replica, signed-in reads by the primary; a replica held
// back past the bound is left for the primary, and used again once it catches up; a stopped
// replica costs no failed read, and is used again once it is back.
func TestPoolReadReplica(t *testing.T) {
	c := poolStartCluster(t)

	c.rename("pool-one")
	c.waitName("pool-one") // streamed to the replica (or the primary: either way, consistent)
	c.waitUp(true)

	// Held back: the replica stops replaying; a write on the primary is not seen anonymously
	// while the replica is within the bound, and is seen by its owner at once.
	c.replicaSQL(`SELECT pg_wal_replay_pause()`)
	c.rename("pool-two")
	if got := c.name(false); got != "pool-two" {
		t.Fatalf("the owner reads %q after their write; want pool-two (owners read the primary)", got)
	}
	if got := c.name(true); got != "pool-one" {
		t.Fatalf("an anonymous read right after the write returned %q; want pool-one (the paused replica's)", got)
	}
	// Past the bound the checker takes it out of rotation: anonymous reads see the primary.
	st := c.waitUp(false)
	if st.Reason != db.ReplicaLagging || st.Lag <= poolReplicaLag || st.LagBytes <= 0 {
		t.Fatalf("lagging replica state %+v; want reason %s, lag > %v, lag bytes > 0", st, db.ReplicaLagging, poolReplicaLag)
	}
	if got := c.name(true); got != "pool-two" {
		t.Fatalf("anonymous read with the replica past the bound: %q; want pool-two (the primary's)", got)
	}
	// Replaying again, it catches up and is used again: held back once more, it answers.
	c.replicaSQL(`SELECT pg_wal_replay_resume()`)
	c.waitUp(true)
	c.replicaSQL(`SELECT pg_wal_replay_pause()`)
	c.rename("pool-three")
	if got := c.name(true); got != "pool-two" {
		t.Fatalf("anonymous read after the replica returned: %q; want pool-two (the paused replica's)", got)
	}
	c.replicaSQL(`SELECT pg_wal_replay_resume()`)
	c.waitName("pool-three")
	c.waitUp(true)

	// Stopped: the very next anonymous reads still answer (a failed replica query runs again
	// on the primary), listings and stats too.
	ctx := context.Background()
	if err := c.replica.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got := c.name(true); got != "pool-three" {
			t.Fatalf("anonymous read with the replica stopped: %q", got)
		}
		if _, err := c.store.ListDevices(db.Anonymous(ctx), db.ListParams{First: 5}); err != nil {
			t.Fatalf("anonymous listing with the replica stopped: %v", err)
		}
		if _, err := c.store.NetworkStats(db.Anonymous(ctx)); err != nil {
			t.Fatalf("stats with the replica stopped: %v", err)
		}
	}
	if st := c.waitUp(false); st.Reason != db.ReplicaUnreachable {
		t.Fatalf("stopped replica state %+v; want %s", st, db.ReplicaUnreachable)
	}
	// Back: it resumes streaming from where it stopped and is used again.
	c.startReplica(ctx)
	c.waitUp(true)
	c.replicaSQL(`SELECT pg_wal_replay_pause()`)
	c.rename("pool-four")
	if got := c.name(true); got != "pool-three" {
		t.Fatalf("anonymous read after the replica restarted: %q; want pool-three (the paused replica's)", got)
	}
	if got := c.name(false); got != "pool-four" {
		t.Fatalf("the owner reads %q; want pool-four", got)
	}
}
