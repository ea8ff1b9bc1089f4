package db_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
)

// storedVerdict returns the verdict stored for a challenge ("" when none) and how many rows.
func (f *fixture) storedVerdict(challengeID string) (string, int) {
	f.t.Helper()
	var rows []string
	if err := f.x.SelectContext(f.ctx, &rows, `SELECT verdict FROM attestations WHERE challenge_id = $1`, challengeID); err != nil {
		f.t.Fatal(err)
	}
	if len(rows) == 0 {
		return "", 0
	}
	return rows[0], len(rows)
}

// One batch holding every kind of proof: each is judged on its own challenge exactly as
// ConsumeAndRecord would, and one whose challenge was spent fails only itself.
func TestVerdictBatchConsumesEachChallengeOnce(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	a, b, other := f.enrollGPUs(owner, 2), f.enrollGPUs(owner, 1), f.enrollGPUs(owner, 1)
	flag := []attest.Finding{{Reason: attest.ReasonMemoryOutOfBand, GPU: "g"}}

	spent := f.challenge(a.ID)
	if ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: a.ID, ChallengeID: spent.ID,
		Snapshot: &a.Snapshot, ProofHash: []byte("first")}); err != nil || !ok {
		t.Fatalf("first use of the challenge: %v %v", ok, err)
	}
	expired := f.challenge(b.ID)
	f.exec(`UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)
	foreign := f.challenge(other.ID)
	a1, a2, b1, dup := f.challenge(a.ID), f.challenge(a.ID), f.challenge(b.ID), f.challenge(b.ID)

	rec := func(d device, c db.IssuedChallenge, findings []attest.Finding, hash string) db.ProofRecord {
		return db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Findings: findings, Snapshot: &d.Snapshot, ProofHash: []byte(hash),
			GPUs: []db.GPUJudgement{}}
	}
	recs := []db.ProofRecord{
		rec(a, a1, nil, "a1"),          // 0 passes
		rec(a, spent, nil, "replay"),   // 1 its challenge was consumed before the batch
		rec(b, b1, flag, "b1"),         // 2 flagged
		rec(b, expired, nil, "late"),   // 3 expired
		rec(a, foreign, nil, "theirs"), // 4 another device's challenge
		rec(b, dup, nil, "dup-1"),      // 5 and 6: one challenge twice in one batch
		rec(b, dup, flag, "dup-2"),     //
		rec(a, a2, flag, "a2"),         // 7 the device's last proof in the batch: flagged
	}
	v := f.store.NewVerdicts(64, 1)
	consumed, errs, err := db.WriteVerdictBatch(f.ctx, v, recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("record %d: %v", i, e)
		}
	}
	want := []bool{true, false, true, false, false, consumed[5], !consumed[5], true}
	if !slices.Equal(consumed, want) || consumed[5] == consumed[6] {
		t.Fatalf("consumed %v, want %v with exactly one of 5 and 6", consumed, want)
	}
	for i, w := range map[int]string{0: "PASSED", 2: "FLAGGED", 7: "FLAGGED"} {
		if got, n := f.storedVerdict(recs[i].ChallengeID); got != w || n != 1 {
			t.Fatalf("record %d: stored %q ×%d, want %s once", i, got, n, w)
		}
	}
	// The duplicate: one verdict, the one of the submission that consumed it.
	winner := 5
	if consumed[6] {
		winner = 6
	}
	if h := scalar[string](f, `SELECT proof_hash FROM attestations WHERE challenge_id = $1`, dup.ID); h != string(recs[winner].ProofHash) {
		t.Fatalf("duplicate challenge stored %q, consumed by %d", h, winner)
	}
	// Refused ones stored nothing and spent nothing; the spent one keeps its first verdict only.
	if got, n := f.storedVerdict(spent.ID); n != 1 || got != "PASSED" ||
		scalar[string](f, `SELECT proof_hash FROM attestations WHERE challenge_id = $1`, spent.ID) != "first" {
		t.Fatalf("spent challenge: %q ×%d", got, n)
	}
	for _, c := range []db.IssuedChallenge{expired, foreign} {
		if _, n := f.storedVerdict(c.ID); n != 0 {
			t.Fatalf("refused challenge %s stored a verdict", c.ID)
		}
	}
	if n := scalar[int](f, `SELECT count(*) FROM challenges WHERE consumed_at IS NOT NULL AND id IN ($1, $2)`, expired.ID, foreign.ID); n != 0 {
		t.Fatalf("%d refused challenges were spent", n)
	}
	// Each device ends with the state of its last consumed proof (a: flagged by 7 after 0
	// passed; b: 2 and the duplicate's winner, in batch order), and its GPUs take its level.
	if dev := f.row(a.ID); dev.Verification != db.VerificationFlagged || dev.DeviceLevel != db.LevelFlagged {
		t.Fatalf("device a: %s %s", dev.Verification, dev.DeviceLevel)
	}
	wantB := db.VerificationVerified
	if winner == 6 {
		wantB = db.VerificationFlagged
	}
	if dev := f.row(b.ID); dev.Verification != wantB {
		t.Fatalf("device b: %s, want %s", dev.Verification, wantB)
	}
	if n := scalar[int](f, `SELECT count(*) FROM gpus WHERE device_id = $1 AND verification_level <> 'FLAGGED'`, a.ID); n != 0 {
		t.Fatalf("%d GPUs of the flagged device keep another level", n)
	}
	if other := f.row(other.ID); other.Verification != db.VerificationPending {
		t.Fatalf("the other device's state changed to %s", other.Verification)
	}
}

// A batch whose statement fails stores nothing of it; each proof is then written alone, so the
// one bad record fails alone and every proof reported consumed has its verdict stored.
func TestVerdictBatchFailureLosesNoAcknowledgedVerdict(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	var recs []db.ProofRecord
	for i := range 6 {
		d := f.enrollGPUs(owner, 1)
		snap := d.Snapshot
		if i == 3 { // jsonb refuses the NUL escape: the batch's statement fails mid-way
			snap.GPUs = slices.Clone(snap.GPUs)
			snap.GPUs[0].Name = "bad\x00name"
		}
		recs = append(recs, db.ProofRecord{DeviceID: d.ID, ChallengeID: f.challenge(d.ID).ID, Snapshot: &snap, ProofHash: []byte{byte(i)}})
	}
	consumed, errs, err := db.WriteVerdictBatch(f.ctx, f.store.NewVerdicts(64, 1), recs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		_, n := f.storedVerdict(recs[i].ChallengeID)
		spent := scalar[bool](f, `SELECT consumed_at IS NOT NULL FROM challenges WHERE id = $1`, recs[i].ChallengeID)
		if i == 3 {
			if errs[i] == nil || consumed[i] || n != 0 || spent {
				t.Fatalf("bad record: consumed=%v err=%v stored=%d spent=%v", consumed[i], errs[i], n, spent)
			}
			continue
		}
		if errs[i] != nil || !consumed[i] || n != 1 || !spent {
			t.Fatalf("record %d: consumed=%v err=%v stored=%d spent=%v", i, consumed[i], errs[i], n, spent)
		}
	}
}

// N submissions of one challenge at once through the batching writer: exactly one accepted,
// one verdict stored.
func TestVerdictsOneVerdictUnderRace(t *testing.T) {
	f := newFixture(t)
	d := f.enrollGPUs(f.user("owner"), 1)
	v := f.store.NewVerdicts(8, 2)
	for round := range 5 {
		c := f.challenge(d.ID)
		const n = 12
		consumed := make([]bool, n)
		errs := make([]error, n)
		race(n, func(i int) {
			var findings []attest.Finding
			if i%2 == 1 {
				findings = []attest.Finding{{Reason: attest.ReasonMemoryOutOfBand}}
			}
			consumed[i], _, _, _, errs[i] = v.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID,
				Findings: findings, Snapshot: &d.Snapshot, ProofHash: []byte{byte(i)}})
		})
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d submission %d: %v", round, i, errs[i])
			}
			if consumed[i] {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d submissions consumed one challenge", round, winners)
		}
		if _, k := f.storedVerdict(c.ID); k != 1 {
			t.Fatalf("round %d: %d verdicts for one challenge", round, k)
		}
	}
}

// OpenChallengeClaims answers exactly what OpenChallenge and GPUClaims answer, in one round trip:
// claims by UUID, by serial and of a quarantined holder, and every reason a challenge is not open.
func TestOpenChallengeClaimsMatchesItsTwoReads(t *testing.T) {
	f := newFixture(t)
	alice, mallory := f.user("alice"), f.user("mallory")
	g1, g2 := gpuUUID(), gpuUUID()
	sa := snapshot(g1, g2)
	sa.GPUs[1].Serial = "1650123456789"
	holder := f.enroll(alice, sa)
	quarantined := f.enroll(alice, snapshot(gpuUUID()))
	sc := snapshot(g1, gpuUUID(), quarantined.Snapshot.GPUs[0].UUID)
	sc.GPUs[1].Serial = "1650123456789"
	claimant := f.enroll(mallory, sc)
	if _, err := f.store.SetQuarantine(f.ctx, true, quarantined.ID, true, "counterfeit"); err != nil {
		t.Fatal(err)
	}
	clean := f.enrollGPUs(mallory, 2)
	v := f.store.NewVerdicts(0, 0) // its prepared statement answers the same

	check := func(what string, d device, challengeID string) {
		t.Helper()
		wantCh, wantReason, err := f.store.OpenChallenge(f.ctx, d.ID, challengeID)
		if err != nil {
			t.Fatal(err)
		}
		ch, reason, claims, err := f.store.OpenChallengeClaims(f.ctx, d.ID, challengeID, d.Snapshot)
		if err != nil || reason != wantReason || ch.ID != wantCh.ID || !slices.Equal(ch.Nonce, wantCh.Nonce) || ch.Difficulty != wantCh.Difficulty {
			t.Fatalf("%s: challenge %+v %q %v, want %+v %q", what, ch, reason, err, wantCh, wantReason)
		}
		pch, preason, pclaims, err := v.OpenChallengeClaims(f.ctx, d.ID, challengeID, d.Snapshot)
		if err != nil || preason != reason || !reflect.DeepEqual(pch, ch) || !reflect.DeepEqual(pclaims, claims) {
			t.Fatalf("%s: prepared %+v %q %+v %v, want %+v %q %+v", what, pch, preason, pclaims, err, ch, reason, claims)
		}
		if reason != "" {
			if claims != nil {
				t.Fatalf("%s: claims read for a challenge that is not open", what)
			}
			return
		}
		findings, acc, err := f.store.GPUClaims(f.ctx, d.ID, d.Snapshot)
		if err != nil || claims == nil || !reflect.DeepEqual(claims.Findings, findings) || !reflect.DeepEqual(claims.Accomplices, acc) {
			t.Fatalf("%s: claims %+v, want %+v %+v", what, claims, findings, acc)
		}
	}
	cc := f.challenge(claimant.ID)
	check("claimant (UUID, serial, quarantined holder)", claimant, cc.ID)
	if _, _, claims, _ := f.store.OpenChallengeClaims(f.ctx, claimant.ID, cc.ID, claimant.Snapshot); len(claims.Findings) != 4 || len(claims.Accomplices) != 2 {
		t.Fatalf("claimant's claims: %+v", claims)
	}
	check("holder", holder, f.challenge(holder.ID).ID)
	check("clean device", clean, f.challenge(clean.ID).ID)
	check("another device's challenge", clean, cc.ID)
	check("unknown challenge", clean, "00000000-0000-4000-8000-000000000000")
	spent := f.challenge(clean.ID)
	if ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: clean.ID, ChallengeID: spent.ID, Snapshot: &clean.Snapshot}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	check("consumed", clean, spent.ID)
	expired := f.challenge(clean.ID)
	f.exec(`UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)
	check("expired", clean, expired.ID)
}

// A proof written alone whose write fails gets the error (and the writer keeps working).
func TestVerdictsLoneFailure(t *testing.T) {
	f := newFixture(t)
	d := f.enrollGPUs(f.user("owner"), 1)
	bad := d.Snapshot
	bad.GPUs = slices.Clone(bad.GPUs)
	bad.GPUs[0].Name = "bad\x00name" // jsonb refuses the NUL escape
	v := f.store.NewVerdicts(0, 0)
	c := f.challenge(d.ID)
	if ok, _, _, _, err := v.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Snapshot: &bad}); err == nil || ok {
		t.Fatalf("bad record: consumed=%v err=%v", ok, err)
	}
	if ok, _, _, _, err := v.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Snapshot: &d.Snapshot}); err != nil || !ok {
		t.Fatalf("the challenge the failed write left open: consumed=%v err=%v", ok, err)
	}
}
