package db_test

// The concurrent cases that matter, each started from one barrier so the goroutines really
// contend, and each asserting the one outcome the store promises.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
)

// race runs fn(i) for i in 0..n-1 concurrently, released together.
func race(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; fn(i) })
	}
	close(start)
	wg.Wait()
}

// One enrollment token, N workers enrolling with it at once: exactly one device.
func TestEnrollmentTokenConsumedOnceUnderRace(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	tok := f.token(owner)
	const n = 10
	ids := make([]string, n)
	errs := make([]error, n)
	race(n, func(i int) {
		pub, _ := newKey(t)
		ids[i], _, errs[i] = f.store.Enroll(f.ctx, db.Enrollment{Token: tok, PublicKey: pub, Region: "r", Snapshot: snapshot(gpuUUID())})
	})
	won := 0
	for i := range n {
		switch {
		case errs[i] == nil:
			won++
		case !errors.Is(errs[i], db.ErrInvalid):
			t.Fatalf("enrollment %d: %v, want success or ErrInvalid", i, errs[i])
		}
	}
	if won != 1 {
		t.Fatalf("%d enrollments won one token", won)
	}
	if d := scalar[int](f, `SELECT count(*) FROM devices`); d != 1 {
		t.Fatalf("%d devices from one token", d)
	}
	if g := scalar[int](f, `SELECT count(*) FROM gpus`); g != 1 {
		t.Fatalf("%d GPU rows: losers left claims behind", g)
	}
	if c := scalar[int](f, `SELECT count(*) FROM device_credentials`); c != 1 {
		t.Fatalf("%d credentials: losers left keys behind", c)
	}
}

// One challenge, N submissions at once: exactly one verdict, one attestation, one consumption.
func TestConsumeAndRecordOneVerdictUnderRace(t *testing.T) {
	f := newFixture(t)
	d := f.enrollGPUs(f.user("owner"), 1)
	for round := range 5 {
		c := f.challenge(d.ID)
		const n = 8
		consumed := make([]bool, n)
		errs := make([]error, n)
		race(n, func(i int) {
			var findings []attest.Finding
			if i%2 == 1 {
				findings = []attest.Finding{{Reason: attest.ReasonMemoryOutOfBand}}
			}
			consumed[i], _, _, _, errs[i] = f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID,
				Findings: findings, Snapshot: &d.Snapshot, ProofHash: []byte{byte(i)}})
		})
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d submission %d: %v", round, i, errs[i])
			}
			if consumed[i] {
				if winner >= 0 {
					t.Fatalf("round %d: submissions %d and %d both consumed the challenge", round, winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody consumed an open challenge", round)
		}
		if a := scalar[int](f, `SELECT count(*) FROM attestations WHERE challenge_id = $1`, c.ID); a != 1 {
			t.Fatalf("round %d: %d verdicts for one challenge", round, a)
		}
		// The stored verdict and the device's state are the winner's.
		want := db.VerificationVerified
		if winner%2 == 1 {
			want = db.VerificationFlagged
		}
		if got := f.row(d.ID).Verification; got != want {
			t.Fatalf("round %d: device shows %s, the winning verdict says %s", round, got, want)
		}
		if h := scalar[[]byte](f, `SELECT proof_hash FROM attestations WHERE challenge_id = $1`, c.ID); !slices.Equal(h, []byte{byte(winner)}) {
			t.Fatalf("round %d: stored proof %v, winner %d", round, h, winner)
		}
	}
}

// Three hosts enrolling at once with the same 64 GPU UUIDs (more than a host has, to widen the window in which they contend), in different orders (as listed,
// reversed, shuffled): each UUID ends held by exactly one of them, every enrollment succeeds (a
// conflict is a finding, not a failure) and every claim a device lost is recorded as a conflict.
func TestGPUClaimsUnderRace(t *testing.T) {
	f := newFixture(t)
	owners := []string{f.user("a"), f.user("b"), f.user("c")}
	for round := range 10 {
		uuids := make([]string, 64)
		for i := range uuids {
			uuids[i] = gpuUUID()
		}
		reversed, shuffled := slices.Clone(uuids), slices.Clone(uuids)
		slices.Reverse(reversed)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		snaps := []attest.Snapshot{snapshot(uuids...), snapshot(reversed...), snapshot(shuffled...)}
		toks := []string{f.token(owners[0]), f.token(owners[1]), f.token(owners[2])}
		ids := make([]string, 3)
		errs := make([]error, 3)
		// The enrollments queue on their tokens, held by another transaction, and run on together
		// when it commits: they reach the GPU claims at the same moment.
		release := f.holdRows(`SELECT 1 FROM enrollment_tokens FOR UPDATE`, 3)
		race(4, func(i int) {
			if i == 3 {
				release()
				return
			}
			pub, _ := newKey(t)
			ids[i], _, errs[i] = f.store.Enroll(f.ctx, db.Enrollment{Token: toks[i], PublicKey: pub, Region: "r", Snapshot: snaps[i]})
		})
		for i, err := range errs {
			if err != nil {
				// Different orders once deadlocked in PostgreSQL ("store gpus: pq: deadlock
				// detected") until insertGPUs inserted in UUID order.
				t.Fatalf("round %d: enrollment %d failed: %v", round, i, err)
			}
		}
		for _, u := range uuids {
			n := scalar[int](f, `SELECT count(*) FROM gpus WHERE uuid = $1`, u)
			if h := f.holder(u); n != 1 || !slices.Contains(ids, h) {
				t.Fatalf("round %d: GPU %s has %d rows, holder %q", round, u, n, h)
			}
		}
		for i, id := range ids {
			held := scalar[int](f, `SELECT count(*) FROM gpus WHERE device_id = $1`, id)
			lost := scalar[int](f, `SELECT count(*) FROM gpu_claim_conflicts WHERE claimant_device_id = $1`, id)
			if held+lost != len(uuids) || f.row(id).GPUCount != held {
				t.Fatalf("round %d: device %d holds %d, lost %d (conflicts), gpu_count %d", round, i, held, lost, f.row(id).GPUCount)
			}
		}
	}
}

// Removal racing a device's own traffic (heartbeats, challenges, proofs, addresses): once
// RemoveDevice has returned, the device shows DOWN, has no usable key, and nothing it sends is
// accepted: no heartbeat, no new challenge, no verdict on any challenge it holds, no address.
func TestRemovalRacingDeviceTraffic(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	for round := range 6 {
		d := f.enrollGPUs(owner, 1)
		pre := []db.IssuedChallenge{f.challenge(d.ID), f.challenge(d.ID)}
		var removeErr error
		var mu sync.Mutex
		var issued []db.IssuedChallenge
		race(7, func(i int) {
			switch i {
			case 0:
				removeErr = f.store.RemoveDevice(f.ctx, d.ID, owner)
			case 1, 2:
				for range 5 {
					_, _ = f.store.Heartbeat(f.ctx, d.ID, []byte(`{}`))
				}
			case 3:
				for range 3 {
					if c, err := f.store.CreateChallenge(f.ctx, d.ID, 4, time.Minute); err == nil {
						mu.Lock()
						issued = append(issued, c)
						mu.Unlock()
					}
				}
			case 4:
				_, _, _, _, _ = f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: pre[0].ID, Snapshot: &d.Snapshot})
			case 5:
				_, _ = f.store.RecordAddress(f.ctx, d.ID, "198.51.100.7:4000", db.AddressChurn{})
			case 6:
				_, _ = f.store.NewHeartbeats(time.Millisecond, 10).Record(f.ctx, d.ID, []byte(`{}`))
			}
		})
		if removeErr != nil {
			t.Fatalf("round %d: remove: %v", round, removeErr)
		}
		if st := scalar[string](f, `SELECT status FROM devices WHERE id = $1`, d.ID); st != "DOWN" {
			t.Fatalf("round %d: a removed device shows %s after racing heartbeats", round, st)
		}
		if keys, err := f.store.DeviceKeys(f.ctx, d.ID); err != nil || len(keys) != 0 {
			t.Fatalf("round %d: removed device has %d keys (%v)", round, len(keys), err)
		}
		if n := scalar[int](f, `SELECT count(*) FROM device_credentials WHERE device_id = $1 AND revoked_at IS NULL`, d.ID); n != 0 {
			t.Fatalf("round %d: %d unrevoked credentials", round, n)
		}
		// After removal: nothing is accepted.
		if _, err := f.store.Heartbeat(f.ctx, d.ID, nil); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("round %d: heartbeat after removal: %v", round, err)
		}
		if _, err := f.store.CreateChallenge(f.ctx, d.ID, 4, time.Minute); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("round %d: challenge after removal: %v", round, err)
		}
		before := scalar[int](f, `SELECT count(*) FROM attestations WHERE device_id = $1`, d.ID)
		for _, c := range append(pre, issued...) {
			if ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID}); err != nil || ok {
				t.Fatalf("round %d: challenge %s consumed after removal (%v, %v)", round, c.ID, ok, err)
			}
		}
		if after := scalar[int](f, `SELECT count(*) FROM attestations WHERE device_id = $1`, d.ID); after != before {
			t.Fatalf("round %d: verdicts stored after removal", round)
		}
		addrs := scalar[int](f, `SELECT count(*) FROM device_addresses WHERE device_id = $1`, d.ID)
		if _, err := f.store.RecordAddress(f.ctx, d.ID, "203.0.113.9", db.AddressChurn{}); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](f, `SELECT count(*) FROM device_addresses WHERE device_id = $1`, d.ID); n != addrs {
			t.Fatalf("round %d: an address was recorded after removal", round)
		}
	}
}

// Revocation racing the store's key lookup: once RevokeDeviceKey has returned, DeviceKeys never
// returns the key again (the Authenticator's cache is deviceauth's test).
func TestRevokeRacingDeviceKeys(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	var revoked sync.WaitGroup
	revoked.Add(1)
	stale := make(chan string, 100)
	race(5, func(i int) {
		if i == 0 {
			if _, err := f.store.RevokeDeviceKey(f.ctx, d.ID, owner, d.Credential); err != nil {
				t.Error(err)
			}
			revoked.Done()
			return
		}
		for range 20 {
			keys, err := f.store.DeviceKeys(f.ctx, d.ID)
			if err != nil {
				t.Error(err)
				return
			}
			_ = keys
		}
		revoked.Wait()
		keys, err := f.store.DeviceKeys(f.ctx, d.ID)
		if err == nil && len(keys) != 0 {
			stale <- keys[0].CredentialID
		}
	})
	close(stale)
	for id := range stale {
		t.Fatalf("key %s returned after its revocation committed", id)
	}
}

// Several gateways run the purge and the down-marking job at once: one works, the others
// return zero, and nothing is deleted twice or fails.
func TestJobsUnderRace(t *testing.T) {
	f := newFixture(t)
	d := f.enrollGPUs(f.user("owner"), 1)
	f.exec(`INSERT INTO challenges (device_id, nonce, difficulty, expires_at)
		SELECT $1, '\x00', 4, now() - interval '2 hours' FROM generate_series(1, 50)`, d.ID)
	const n = 4
	purged := make([]db.Purged, n)
	errs := make([]error, n)
	race(n, func(i int) { purged[i], errs[i] = f.store.Purge(f.ctx, db.Retention{}) })
	total := int64(0)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("purge %d: %v", i, errs[i])
		}
		total += purged[i].Challenges
	}
	if total != 50 {
		t.Fatalf("concurrent purges deleted %d challenges in all, want 50", total)
	}

	f.exec(`UPDATE devices SET status = 'UP', last_seen_at = now() - interval '1 hour' WHERE id = $1`, d.ID)
	marked := make([]int64, n)
	race(n, func(i int) { marked[i], errs[i] = f.store.MarkSilentDevicesDown(f.ctx, time.Minute) })
	sum := int64(0)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("mark down %d: %v", i, errs[i])
		}
		sum += marked[i]
	}
	if sum != 1 || f.row(d.ID).Status != db.StatusDown {
		t.Fatalf("concurrent runs marked %d in all, status %s", sum, f.row(d.ID).Status)
	}
}

// holdRows locks rows with query (a SELECT ... FOR UPDATE) in a transaction of its own and
// returns release, which waits until waiters sessions of the test's database are blocked on a
// lock and then commits, letting them all go at once.
func (f *fixture) holdRows(query string, waiters int) (release func()) {
	f.t.Helper()
	tx, err := f.x.BeginTxx(f.ctx, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := tx.ExecContext(f.ctx, query); err != nil {
		f.t.Fatal(err)
	}
	return func() {
		defer tx.Rollback()
		if f.waitBlocked(waiters) {
			if err := tx.Commit(); err != nil {
				f.t.Error(err)
			}
		}
	}
}

// waitBlocked waits until n sessions of the test's database are blocked on a lock; it reports
// false (after marking the test failed) when it cannot tell.
func (f *fixture) waitBlocked(n int) bool {
	for {
		var blocked int
		if err := f.x.GetContext(f.ctx, &blocked, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
			f.t.Error(err)
			return false
		}
		if blocked >= n {
			return true
		}
		time.Sleep(time.Millisecond)
	}
}

// The owner removes a device while its worker submits a proof, the removal reaching the device
// row first: both finish (the removal wins, the proof is not consumed), neither with a driver
// error. The statements are ordered through a lock on the device row held by the test.
func TestRemovalRacingAProof(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	c := f.challenge(d.ID)
	tx, err := f.x.BeginTxx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(f.ctx, `SELECT 1 FROM devices WHERE id = $1 FOR UPDATE`, d.ID); err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	go func() { removed <- f.store.RemoveDevice(f.ctx, d.ID, owner) }()
	f.waitBlocked(1) // the removal queues on the device row first
	type result struct {
		ok  bool
		err error
	}
	proved := make(chan result, 1)
	go func() {
		ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Snapshot: &d.Snapshot})
		proved <- result{ok, err}
	}()
	f.waitBlocked(2)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-removed; err != nil {
		t.Fatalf("remove: %v", err)
	}
	if r := <-proved; r.err != nil || r.ok {
		t.Fatalf("proof racing the removal: consumed=%v, %v; want not consumed, no error", r.ok, r.err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM attestations WHERE device_id = $1`, d.ID); n != 0 {
		t.Fatalf("%d verdicts stored for a device removed first", n)
	}
}

// One GPU's hardware identity presented by two devices whose proofs were both judged before
// either was stored (each judge read no binding): exactly one proof is stored ATTESTED and binds
// the hardware; the other is refused with ErrHardwareContended, writing nothing and leaving its
// challenge open, so it is judged again and then sees the binding. The same holds for one UUID
// presented with two hardware identities.
func TestHardwareBindingUnderRace(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	for round := range 4 {
		a, b := f.enrollGPUs(owner, 1), f.enrollGPUs(owner, 1)
		hw := fmt.Sprintf("hw-%d-%s", round, a.ID)
		recs := make([]db.ProofRecord, 2)
		for i, d := range []device{a, b} {
			snap := d.Snapshot
			uuid := snap.GPUs[0].UUID
			hwID := hw
			if round%2 == 1 { // the other side of the race: b claims a's UUID with other hardware
				uuid, hwID = a.Snapshot.GPUs[0].UUID, fmt.Sprintf("%s-%d", hw, i)
			}
			recs[i] = db.ProofRecord{DeviceID: d.ID, ChallengeID: f.challenge(d.ID).ID, Snapshot: &snap,
				ProofHash: []byte{byte(i)}, Level: db.LevelAttested,
				GPUs:     []db.GPUJudgement{{Index: 0, UUID: uuid, Level: db.LevelAttested, EvidenceSubmitted: true, Reasons: []string{}, CertificateSerials: []string{}}},
				Bindings: []db.HardwareBinding{{HardwareID: hwID, UUID: uuid}}}
		}
		errs := make([]error, 2)
		race(2, func(i int) { _, _, _, _, errs[i] = f.store.ConsumeAndRecord(f.ctx, recs[i]) })
		won, lost := -1, -1
		for i, err := range errs {
			switch {
			case err == nil:
				won = i
			case errors.Is(err, db.ErrHardwareContended):
				lost = i
			default:
				t.Fatalf("round %d proof %d: %v", round, i, err)
			}
		}
		if won < 0 || lost < 0 {
			t.Fatalf("round %d: both proofs stored with one hardware binding (errors %v)", round, errs)
		}
		if n := scalar[int](f, `SELECT count(*) FROM attestations WHERE challenge_id = $1`, recs[lost].ChallengeID); n != 0 {
			t.Fatalf("round %d: the refused proof stored %d verdicts", round, n)
		}
		if used := scalar[bool](f, `SELECT consumed_at IS NOT NULL FROM challenges WHERE id = $1`, recs[lost].ChallengeID); used {
			t.Fatalf("round %d: the refused proof consumed its challenge", round)
		}
		if lvl := scalar[string](f, `SELECT verification_level FROM devices WHERE id = $1`, recs[lost].DeviceID); lvl == "ATTESTED" {
			t.Fatalf("round %d: the refused proof's device is ATTESTED", round)
		}
	}
}
