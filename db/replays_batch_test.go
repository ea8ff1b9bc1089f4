package db_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// Tests of RecordReplay's group commit (db/replays.go, replayBatch). Each forms a batch
// deterministically: replayHold blocks the writes in flight behind a lock on device_replays,
// the calls under test queue behind them, and releasing the lock lets one write take them all.

// replayCall is one RecordReplay call running in its own goroutine.
type replayCall struct {
	use  db.ReplayUse
	err  error
	done chan struct{}
}

func replayGo(ctx context.Context, s *db.DB, cred, dev string, key [32]byte, at time.Time) *replayCall {
	c := &replayCall{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.use, c.err = s.RecordReplay(ctx, cred, dev, key, at)
	}()
	return c
}

func (c *replayCall) wait(t *testing.T) (db.ReplayUse, error) {
	t.Helper()
	select {
	case <-c.done:
		return c.use, c.err
	case <-time.After(30 * time.Second):
		t.Fatal("RecordReplay did not return")
		return 0, nil
	}
}

// replayEventually polls cond until it holds (30 s at most: a hang, not a timing assertion).
func replayEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// replayHold locks device_replays against inserts and starts two RecordReplay calls of dev on s
// (the plugs, one per writer s runs at once; each written alone, the first under firstCtx),
// waiting until both writes are blocked. Calls made afterwards queue. release runs during[0] (if given) in the locking transaction, commits it and
// returns the plugs' calls.
func replayHold(f *fixture, s *db.DB, cred, dev string, firstCtx context.Context) (plugs []*replayCall, release func(during ...string)) {
	f.t.Helper()
	at := time.Now().Truncate(time.Second)
	// The statement is prepared (and the connections opened) before the lock: preparing would
	// wait for it too.
	for range 2 {
		if _, err := s.RecordReplay(f.ctx, cred, dev, replayKey(f.t), at); err != nil {
			f.t.Fatal(err)
		}
	}
	tx := f.x.MustBeginTx(f.ctx, nil)
	tx.MustExecContext(f.ctx, `LOCK TABLE device_replays IN ACCESS EXCLUSIVE MODE`)
	for _, ctx := range []context.Context{firstCtx, f.ctx} {
		plugs = append(plugs, replayGo(ctx, s, cred, dev, replayKey(f.t), at))
		// One after the other: the second must find the first writing, not queued.
		replayEventually(f.t, "a plug blocked", func() bool {
			return scalar[int](f, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'device_replays'::regclass`) == len(plugs)
		})
	}
	return plugs, func(during ...string) {
		f.t.Helper()
		for _, q := range during {
			tx.MustExecContext(f.ctx, q)
		}
		if err := tx.Commit(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// replayStores returns the app role's store as it runs on a direct connection (statements
// prepared) and with Options.TransactionPooler (--database-pooler=transaction: nothing
// prepared, each statement in a transaction of its own), the protocol a transaction-pooling
// PgBouncer needs.
func replayStores(f *fixture) map[string]*db.DB {
	u, err := url.Parse(dbtest.DSN(f.t, f.x))
	if err != nil {
		f.t.Fatal(err)
	}
	u.User = url.User(db.RoleApp)
	pooled, err := db.Open(f.ctx, u.String(), db.Options{TransactionPooler: true})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = pooled.Close() })
	return map[string]*db.DB{"prepared": replayAppStore(f), "pooler": pooled}
}

// One signature replayed concurrently, so that its copies land in one batch: exactly one call
// is the first use, every other one a replay; keys of other signatures in the same batch are
// all first uses. In both connection modes.
func TestRecordReplayBatchSameKeyOnce(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	for mode, s := range replayStores(f) {
		plugs, release := replayHold(f, s, dev.Credential, dev.ID, f.ctx)
		at := time.Now().Truncate(time.Second)
		same := replayKey(t)
		var copies, others []*replayCall
		for range 8 {
			copies = append(copies, replayGo(f.ctx, s, dev.Credential, dev.ID, same, at))
			others = append(others, replayGo(f.ctx, s, dev.Credential, dev.ID, replayKey(t), at))
		}
		// The same signature at a timestamp that differs below PostgreSQL's microsecond: the
		// same row there, so the same replay.
		copies = append(copies, replayGo(f.ctx, s, dev.Credential, dev.ID, same, at.Add(100*time.Nanosecond)))
		replayEventually(t, "the batch queued", func() bool { return db.ReplayQueued(s) == 17 })
		release()
		for _, p := range plugs {
			use, err := p.wait(t)
			wantUse(t, mode+": plug", use, err, db.ReplayFirst)
		}
		first := 0
		for _, c := range copies {
			use, err := c.wait(t)
			if err != nil || (use != db.ReplayFirst && use != db.ReplayRepeated) {
				t.Fatalf("%s: copy of one signature: %v, %v", mode, use, err)
			}
			if use == db.ReplayFirst {
				first++
			}
		}
		if first != 1 {
			t.Fatalf("%s: %d of %d concurrent copies of one signature accepted, want exactly 1", mode, first, len(copies))
		}
		for _, c := range others {
			use, err := c.wait(t)
			wantUse(t, mode+": another signature in the batch", use, err, db.ReplayFirst)
		}
		if n := scalar[int](f, `SELECT count(*) FROM device_replays WHERE key = $1`, same[:]); n != 1 {
			t.Fatalf("%s: %d rows of the replayed key", mode, n)
		}
		use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, same, at)
		wantUse(t, mode+": the signature once more", use, err, db.ReplayRepeated)
	}
}

// A revoked credential, a removed device's and another device's in a batch with live ones:
// only those are refused, and nothing of theirs is recorded.
func TestRecordReplayBatchRevokedAmongLive(t *testing.T) {
	f := newFixture(t)
	owner := f.user("alice")
	live := f.enroll(owner, snapshot(gpuUUID()))
	revoked := f.enroll(owner, snapshot(gpuUUID()))
	removed := f.enroll(owner, snapshot(gpuUUID()))
	for mode, s := range replayStores(f) {
		plugs, release := replayHold(f, s, live.Credential, live.ID, f.ctx)
		at := time.Now().Truncate(time.Second)
		var good, bad []*replayCall
		badKeys := map[[32]byte]bool{}
		for range 5 {
			good = append(good, replayGo(f.ctx, s, live.Credential, live.ID, replayKey(t), at))
			for _, c := range [][2]string{{revoked.Credential, revoked.ID}, {removed.Credential, removed.ID}, {live.Credential, revoked.ID}} {
				k := replayKey(t)
				badKeys[k] = true
				bad = append(bad, replayGo(f.ctx, s, c[0], c[1], k, at))
			}
		}
		replayEventually(t, "the batch queued", func() bool { return db.ReplayQueued(s) == 20 })
		if mode == "prepared" { // the revocations happen while the batch waits (the second time they are done)
			if _, err := f.store.RevokeDeviceKey(f.ctx, revoked.ID, owner, revoked.Credential); err != nil {
				t.Fatal(err)
			}
			if err := f.store.RemoveDevice(f.ctx, removed.ID, owner); err != nil {
				t.Fatal(err)
			}
		}
		release()
		for _, c := range append(plugs, good...) {
			use, err := c.wait(t)
			wantUse(t, mode+": live credential", use, err, db.ReplayFirst)
		}
		for _, c := range bad {
			use, err := c.wait(t)
			wantUse(t, mode+": revoked credential in the batch", use, err, db.ReplayRevoked)
		}
		for k := range badKeys {
			if scalar[int](f, `SELECT count(*) FROM device_replays WHERE key = $1`, k[:]) != 0 {
				t.Fatalf("%s: a revoked credential's key was recorded", mode)
			}
		}
	}
}

// A caller whose context ends while it waits gets its context's error, wherever it waits:
//   - written alone in its own goroutine (nothing was queued): the statement is cancelled with
//     it, as before batching; the key is not recorded;
//   - still queued: dropped from the batch, its key is not recorded: the same signature later
//     is a first use;
//   - in a batch being written: the batch goes on for the others and records its key, so the
//     same signature again is a replay (docs/scale-out.md: the worker signs every attempt
//     afresh, with a new nonce), while a re-signed retry is a first use.
func TestRecordReplayBatchCallerGivesUp(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	s := replayAppStore(f)
	plugCtx, cancelPlug := context.WithCancel(f.ctx)
	plugs, release := replayHold(f, s, dev.Credential, dev.ID, plugCtx)
	at := time.Now().Truncate(time.Second)
	record := func(ctx context.Context, k [32]byte) *replayCall {
		return replayGo(ctx, s, dev.Credential, dev.ID, k, at)
	}
	wantCanceled := func(what string, c *replayCall) {
		t.Helper()
		if use, err := c.wait(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v, %v; want context.Canceled", what, use, err)
		}
	}
	inFlightKey, queuedKey := replayKey(t), replayKey(t)
	inFlightCtx, cancelInFlight := context.WithCancel(f.ctx)
	inFlight := record(inFlightCtx, inFlightKey)
	other := record(f.ctx, replayKey(t))
	replayEventually(t, "two calls queued", func() bool { return db.ReplayQueued(s) == 2 })
	// The first plug gives up: its statement is cancelled and its writer slot goes to a batch
	// of the two queued calls, which then waits for the lock too.
	cancelPlug()
	wantCanceled("written alone", plugs[0])
	replayEventually(t, "the batch blocked", func() bool {
		return db.ReplayQueued(s) == 0 &&
			scalar[int](f, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'device_replays'::regclass`) == 2
	})
	queuedCtx, cancelQueued := context.WithCancel(f.ctx)
	queued := record(queuedCtx, queuedKey)
	replayEventually(t, "one call queued", func() bool { return db.ReplayQueued(s) == 1 })
	cancelQueued()
	cancelInFlight()
	wantCanceled("queued", queued)
	wantCanceled("in a batch being written", inFlight)
	release()
	for what, c := range map[string]*replayCall{"the other plug": plugs[1], "a caller that waited, in the same batch": other} {
		use, err := c.wait(t)
		wantUse(t, what, use, err, db.ReplayFirst)
	}
	replayEventually(t, "the batch written", func() bool {
		return scalar[int](f, `SELECT count(*) FROM device_replays WHERE key = $1`, inFlightKey[:]) == 1
	})
	use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, inFlightKey, at)
	wantUse(t, "the same signature after giving up during its batch's write", use, err, db.ReplayRepeated)
	use, err = s.RecordReplay(f.ctx, dev.Credential, dev.ID, replayKey(t), at)
	wantUse(t, "a re-signed retry", use, err, db.ReplayFirst)
	use, err = s.RecordReplay(f.ctx, dev.Credential, dev.ID, queuedKey, at)
	wantUse(t, "the same signature after giving up in the queue", use, err, db.ReplayFirst)
	if n := scalar[int](f, `SELECT count(*) FROM device_replays`); n != 2+1+2+2 {
		t.Fatalf("%d rows, want the warm-up's 2, one plug's, the batch's 2 and the retries' 2", n)
	}
}

// A statement that fails fails every caller of its batch with the store's error, none is told
// first use and nothing is recorded; the next batch works.
func TestRecordReplayBatchFailureFailsAll(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	for mode, s := range replayStores(f) {
		before := scalar[int](f, `SELECT count(*) FROM device_replays`)
		plugs, release := replayHold(f, s, dev.Credential, dev.ID, f.ctx)
		before += 2
		at := time.Now().Truncate(time.Second)
		var calls []*replayCall
		for range 6 {
			calls = append(calls, replayGo(f.ctx, s, dev.Credential, dev.ID, replayKey(t), at))
		}
		replayEventually(t, "the batch queued", func() bool { return db.ReplayQueued(s) == 6 })
		release(`REVOKE INSERT ON device_replays FROM ` + db.RoleApp)
		for _, c := range append(plugs, calls...) {
			use, err := c.wait(t)
			if err == nil {
				t.Fatalf("%s: a failed batch answered %v", mode, use)
			}
			if errors.Is(err, db.ErrInvalid) || errors.Is(err, db.ErrNotFound) {
				t.Fatalf("%s: a failed batch answered %v, not the store's error", mode, err)
			}
		}
		if n := scalar[int](f, `SELECT count(*) FROM device_replays`); n != before {
			t.Fatalf("%s: %d rows after a failed batch, want %d", mode, n, before)
		}
		f.exec(`GRANT INSERT ON device_replays TO ` + db.RoleApp)
		use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, replayKey(t), at)
		wantUse(t, mode+": after the failure", use, err, db.ReplayFirst)
	}
}

// Many callers on two stores (two replicas) record overlapping keys in different orders, so
// batches that hold the same keys run at once: no error (no deadlock between them), and each
// key is a first use exactly once.
func TestRecordReplayBatchesOverlap(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	stores := replayStores(f)
	at := time.Now().Truncate(time.Second)
	keys := make([][32]byte, 300)
	for i := range keys {
		keys[i] = replayKey(t)
	}
	var mu sync.Mutex
	firsts := map[[32]byte]int{}
	var errs []error
	var wg sync.WaitGroup
	for _, s := range stores {
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				order := rand.New(rand.NewPCG(uint64(g), 7)).Perm(len(keys))
				for _, i := range order {
					use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, keys[i], at)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else if use == db.ReplayFirst {
						firsts[keys[i]]++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first %v", len(errs), errs[0])
	}
	for _, k := range keys {
		if firsts[k] != 1 {
			t.Fatalf("a key was a first use %d times", firsts[k])
		}
	}
}

// A key whose statement returned its row but whose COMMIT failed is not recorded, so it must
// not be answered as a first use: the caller would let the request through and a replay of it
// would pass too. Behind a transaction pooler the COMMIT is a separate round trip after the
// rows (db/pooler.go); a deferred constraint trigger makes it fail here.
func TestRecordReplayFailedCommitIsNotAFirstUse(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	f.x.MustExecContext(f.ctx, `CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$`)
	f.x.MustExecContext(f.ctx, `CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON device_replays
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()`)
	for mode, s := range replayStores(f) {
		use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, replayKey(t), time.Now())
		if err == nil {
			t.Errorf("%s: a key whose COMMIT failed was answered %v, no error", mode, use)
		}
	}
	var n int
	if err := f.x.GetContext(f.ctx, &n, `SELECT count(*) FROM device_replays`); err != nil || n != 0 {
		t.Fatalf("%d keys stored (%v); want none", n, err)
	}
}
