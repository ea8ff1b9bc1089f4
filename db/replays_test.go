package db_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// replayKey returns a random 32-byte replay key.
func replayKey(t *testing.T) [32]byte {
	t.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// replayAppStore is the gateway's store as it runs: the app role's pool.
func replayAppStore(f *fixture) *db.DB {
	return db.New(dbtest.AsRole(f.t, f.x, db.RoleApp), db.Options{})
}

func wantUse(t *testing.T, what string, got db.ReplayUse, err error, want db.ReplayUse) {
	t.Helper()
	if err != nil || got != want {
		t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
	}
}

// A signature is recorded once; the same key and timestamp again is a replay, whichever pool
// (replica) records it; the same key at another timestamp is another row (it cannot be the
// same signature).
func TestRecordReplayFirstUseOnly(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	a, b := replayAppStore(f), replayAppStore(f)
	key, at := replayKey(t), time.Now().Truncate(time.Second)
	use, err := a.RecordReplay(f.ctx, dev.Credential, dev.ID, key, at)
	wantUse(t, "first use", use, err, db.ReplayFirst)
	use, err = b.RecordReplay(f.ctx, dev.Credential, dev.ID, key, at)
	wantUse(t, "replay on another pool", use, err, db.ReplayRepeated)
	use, err = a.RecordReplay(f.ctx, dev.Credential, dev.ID, key, at)
	wantUse(t, "replay on the same pool", use, err, db.ReplayRepeated)
	use, err = a.RecordReplay(f.ctx, dev.Credential, dev.ID, key, at.Add(time.Second))
	wantUse(t, "same key, other second", use, err, db.ReplayFirst)
	if n := scalar[int](f, `SELECT count(*) FROM device_replays`); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
	_, err = a.RecordReplay(f.ctx, "not-a-uuid", dev.ID, key, at)
	wantKind(t, "bad credential ID", err, db.ErrInvalid)
	_, err = a.RecordReplay(f.ctx, dev.Credential, "x", key, at)
	wantKind(t, "bad device ID", err, db.ErrInvalid)
}

// A revoked key (revoked by the owner, or its device removed), a credential of another device
// and an unknown one record nothing: ReplayRevoked, however often, never ReplayRepeated.
func TestRecordReplayRefusesARevokedCredential(t *testing.T) {
	f := newFixture(t)
	owner := f.user("alice")
	s := replayAppStore(f)
	at := time.Now().Truncate(time.Second)

	revoked := f.enroll(owner, snapshot(gpuUUID()))
	if _, err := f.store.RevokeDeviceKey(f.ctx, revoked.ID, owner, revoked.Credential); err != nil {
		t.Fatal(err)
	}
	removed := f.enroll(owner, snapshot(gpuUUID()))
	if err := f.store.RemoveDevice(f.ctx, removed.ID, owner); err != nil {
		t.Fatal(err)
	}
	// removed_at alone (no revocation) is enough too.
	hidden := f.enroll(owner, snapshot(gpuUUID()))
	f.exec(`UPDATE devices SET removed_at = now() WHERE id = $1`, hidden.ID)
	other := f.enroll(owner, snapshot(gpuUUID()))
	for _, c := range []struct{ name, cred, dev string }{
		{"revoked key", revoked.Credential, revoked.ID},
		{"removed device", removed.Credential, removed.ID},
		{"device hidden without revoking", hidden.Credential, hidden.ID},
		{"another device's credential", other.Credential, revoked.ID},
		{"unknown credential", "00000000-0000-4000-8000-000000000001", other.ID},
	} {
		key := replayKey(t)
		for i := range 2 {
			use, err := s.RecordReplay(f.ctx, c.cred, c.dev, key, at)
			wantUse(t, c.name+" #"+string(rune('1'+i)), use, err, db.ReplayRevoked)
		}
	}
	if n := scalar[int](f, `SELECT count(*) FROM device_replays`); n != 0 {
		t.Fatalf("%d rows recorded for revoked credentials", n)
	}
	use, err := s.RecordReplay(f.ctx, other.Credential, other.ID, replayKey(t), at)
	wantUse(t, "live key", use, err, db.ReplayFirst)
}

// Retirement empties exactly the partitions no minute within db.ReplayHorizon of now maps to,
// keeps every row inside it (a replay of those still conflicts), and an insert never misses a
// partition whatever its timestamp.
func TestRetireReplaysKeepsTheHorizon(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	s := replayAppStore(f)
	now := time.Now().Truncate(time.Second)
	record := func(at time.Time) [32]byte {
		k := replayKey(t)
		use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, k, at)
		wantUse(t, "record at "+at.String(), use, err, db.ReplayFirst)
		return k
	}
	// Inside the horizon (the signature window is 60 s; this keeps 5 minutes either side).
	live := map[time.Time][32]byte{}
	for _, d := range []time.Duration{-4*time.Minute - 50*time.Second, -time.Minute, 0, time.Minute, 4*time.Minute + 50*time.Second} {
		live[now.Add(d)] = record(now.Add(d))
	}
	// Outside it, in partitions no live minute maps to (the ring is 16 minutes: 6 to 10 minutes
	// ago, or 7 to 10 minutes ahead).
	var old [][32]byte
	for _, d := range []time.Duration{-7 * time.Minute, -10 * time.Minute, 7 * time.Minute} {
		old = append(old, record(now.Add(d)))
	}
	// Far away: still a partition (a ring has no end); rows of other minutes never conflict.
	for _, at := range []time.Time{now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)} {
		record(at)
	}
	n, err := s.RetireReplays(f.ctx)
	if err != nil || n == 0 {
		t.Fatalf("retire: %d partitions, %v", n, err)
	}
	within := scalar[int](f, `SELECT count(*) FROM device_replays WHERE abs(extract(epoch FROM signed_at - now())) < 300`)
	if within != len(live) {
		t.Fatalf("after retiring: %d rows within the horizon, want %d", within, len(live))
	}
	for _, k := range old {
		if scalar[int](f, `SELECT count(*) FROM device_replays WHERE key = $1`, k[:]) != 0 {
			t.Fatalf("a row from outside the horizon survived")
		}
	}
	// What is left is in live partitions only (far-away rows may share one: kept, harmless).
	if n := scalar[int](f, `SELECT count(*) FROM device_replays r WHERE NOT EXISTS (
		SELECT FROM generate_series(now() - interval '5 minutes', now() + interval '5 minutes', interval '1 minute') g
		WHERE gpugate_replay_slot(g) = r.slot)`); n != 0 {
		t.Fatalf("%d rows left in retirable partitions", n)
	}
	for at, k := range live {
		use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, k, at)
		wantUse(t, "replay after retiring", use, err, db.ReplayRepeated)
	}
	if n, err := s.RetireReplays(f.ctx); err != nil || n != 0 {
		t.Fatalf("second retire: %d partitions, %v; want nothing left to empty", n, err)
	}
	// The gateway's role may record and retire, but not delete or truncate replay keys itself.
	app := dbtest.AsRole(t, f.x, db.RoleApp)
	for _, q := range []string{`DELETE FROM device_replays`, `TRUNCATE device_replays`, `TRUNCATE device_replays_00`,
		`UPDATE device_replays SET key = ''`, `DELETE FROM device_replays_00`, `UPDATE device_replays_01 SET key = ''`,
		`DROP TABLE device_replays_01`, `CREATE TABLE device_replays_16 PARTITION OF device_replays FOR VALUES IN (16)`} {
		_, err := app.ExecContext(f.ctx, q)
		wantDenied(t, "app: "+q, err)
	}
	// Nor may the explorer role (anonymous reads) run the retirement, which has its owner's rights.
	explorer := dbtest.AsRole(t, f.x, db.RoleExplorer)
	_, err = explorer.ExecContext(f.ctx, `SELECT public.gpugate_retire_replays()`)
	wantDenied(t, "explorer: gpugate_retire_replays()", err)
}

// Several replicas retire at once while others record: every call succeeds, a call that finds
// another running returns at once, and no live row is lost.
func TestRetireReplaysConcurrently(t *testing.T) {
	f := newFixture(t)
	dev := f.enroll(f.user("alice"), snapshot(gpuUUID()))
	now := time.Now().Truncate(time.Second)
	stores := []*db.DB{replayAppStore(f), replayAppStore(f), replayAppStore(f)}
	for i := range 200 { // old rows in every retirable partition: 6 to 10 minutes old
		at := now.Add(-6*time.Minute - time.Duration(i%5)*time.Minute)
		if _, err := stores[0].RecordReplay(f.ctx, dev.Credential, dev.ID, replayKey(t), at); err != nil {
			t.Fatal(err)
		}
	}
	// A maintainer holding the lock: the others return 0 at once instead of queueing.
	tx := f.x.MustBeginTx(f.ctx, nil)
	tx.MustExecContext(f.ctx, `SELECT pg_advisory_xact_lock(hashtext('gpugate_retire_replays'))`)
	if n, err := stores[1].RetireReplays(f.ctx); err != nil || n != 0 {
		t.Fatalf("retire while another holds the lock: %d, %v", n, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var emptied int
	keys := make(chan [32]byte, 300)
	for i, s := range stores {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 20 {
				n, err := s.RetireReplays(f.ctx)
				mu.Lock()
				emptied += n
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			for j := range 100 {
				k := sha256.Sum256([]byte{byte(i), byte(j)})
				if use, err := s.RecordReplay(f.ctx, dev.Credential, dev.ID, k, now); err != nil || use != db.ReplayFirst {
					mu.Lock()
					errs = append(errs, fmt.Errorf("record %d: %v, %v", j, use, err))
					mu.Unlock()
					continue
				}
				keys <- k
			}
		}()
	}
	wg.Wait()
	close(keys)
	if len(errs) > 0 {
		t.Fatalf("concurrent retire and record: %v", errs)
	}
	if emptied == 0 {
		t.Fatal("nothing retired")
	}
	if n := scalar[int](f, `SELECT count(*) FROM device_replays`); n != 300 {
		t.Fatalf("%d rows left, want the 300 live ones", n)
	}
	for k := range keys {
		use, err := stores[2].RecordReplay(f.ctx, dev.Credential, dev.ID, k, now)
		wantUse(t, "replay of a live key", use, err, db.ReplayRepeated)
	}
}

// Every change to a device's keys is announced on db.DeviceKeysChannel with the device ID, by
// the changing transaction: enrolment, a key added, a key revoked, the device removed, its
// removed_at set by hand and a credential deleted. Touching a key (last_used_at) is not.
func TestDeviceKeyChangesAreNotified(t *testing.T) {
	f := newFixture(t)
	owner := f.user("alice")
	l := pq.NewListener(dbtest.DSN(t, f.x), 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { _ = l.Close() })
	if err := l.Listen(db.DeviceKeysChannel); err != nil {
		t.Fatal(err)
	}
	next := func(what, want string) {
		t.Helper()
		select {
		case n := <-l.Notify:
			if n == nil || n.Extra != want {
				t.Fatalf("%s: notification %+v, want device %s", what, n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no notification", what)
		}
	}
	dev := f.enroll(owner, snapshot(gpuUUID()))
	next("enrolment", dev.ID)
	if err := f.store.TouchCredentials(f.ctx, []string{dev.Credential}); err != nil {
		t.Fatal(err)
	}
	pub, _ := newKey(t)
	added, err := f.store.AddDeviceKey(f.ctx, dev.ID, owner, pub)
	if err != nil {
		t.Fatal(err)
	}
	next("key added (and nothing for the touch)", dev.ID)
	if _, err := f.store.RevokeDeviceKey(f.ctx, dev.ID, owner, added.ID); err != nil {
		t.Fatal(err)
	}
	next("key revoked", dev.ID)
	if err := f.store.RemoveDevice(f.ctx, dev.ID, owner); err != nil {
		t.Fatal(err)
	}
	next("device removed", dev.ID) // one notification: identical payloads of a transaction fold
	other := f.enroll(owner, snapshot(gpuUUID()))
	next("enrolment", other.ID)
	f.exec(`UPDATE devices SET removed_at = now() WHERE id = $1`, other.ID)
	next("removed_at set by hand", other.ID)
	f.exec(`DELETE FROM device_credentials WHERE device_id = $1`, other.ID)
	next("credential deleted", other.ID)
	select {
	case n := <-l.Notify:
		t.Fatalf("unexpected notification %+v", n)
	case <-time.After(200 * time.Millisecond):
	}
}

// BenchmarkRecordReplay records fresh replay keys of one device through the app role's store,
// one caller at a time ("serial") and from 64 concurrent callers ("concurrent", as many
// heartbeats arriving at once on a busy replica). Besides ns/op it reports this process's CPU
// per key (cpu-us/op) and the PostgreSQL backends' (pg-us/op, from /proc).
//
//	go test -run '^$' -bench BenchmarkRecordReplay -benchtime 20000x ./db/
func BenchmarkRecordReplay(b *testing.B) {
	super := dbtest.New(b)
	ctx := context.Background()
	owner := db.New(super, db.Options{})
	u, err := owner.UserForIdentity(ctx, db.Identity{Issuer: "https://issuer.test", Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := owner.CreateEnrollmentToken(ctx, u.ID)
	if err != nil {
		b.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	dev, cred, err := owner.Enroll(ctx, db.Enrollment{Token: tok, PublicKey: pub, Region: "r", Snapshot: snapshot(gpuUUID())})
	if err != nil {
		b.Fatal(err)
	}
	s := db.New(dbtest.AsRole(b, super, db.RoleApp), db.Options{})
	for _, par := range []int{1, 64} {
		name := "serial"
		if par > 1 {
			name = "concurrent"
		}
		var n atomic.Uint64 // across the runs of one sub-benchmark: every key fresh
		b.Run(name, func(b *testing.B) {
			record := func() {
				k := sha256.Sum256(binary.AppendUvarint([]byte(name), n.Add(1)))
				if use, err := s.RecordReplay(ctx, cred, dev, k, time.Now().Truncate(time.Second)); err != nil || use != db.ReplayFirst {
					b.Error(use, err)
				}
			}
			for range 100 {
				record()
			}
			pg0, me0 := backendCPU(b, super), selfCPU()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + par - 1) / par
			for g := range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g * per; i < min(b.N, (g+1)*per); i++ {
						record()
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			me := selfCPU() - me0
			var pg int64
			for pid, ns := range backendCPU(b, super) {
				pg += ns - pg0[pid]
			}
			b.ReportMetric(float64(me)/1e3/float64(b.N), "cpu-us/op")
			b.ReportMetric(float64(pg)/1e3/float64(b.N), "pg-us/op")
		})
	}
}
