package db_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
)

func TestCreateEnrollmentTokenStoresOnlyItsHash(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	tok, expires, err := f.store.CreateEnrollmentToken(f.ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "gpe_") || len(tok) != 4+43 {
		t.Fatalf("token %q: want gpe_ and 32 bytes of base64url", tok)
	}
	if ttl := time.Until(expires); ttl < db.EnrollmentTokenTTL-time.Minute || ttl > db.EnrollmentTokenTTL+time.Minute {
		t.Fatalf("token expires in %v, want about %v", ttl, db.EnrollmentTokenTTL)
	}
	sum := sha256.Sum256([]byte(tok))
	if n := scalar[int](f, `SELECT count(*) FROM enrollment_tokens WHERE token_hash = $1 AND owner_id = $2 AND used_at IS NULL`, sum[:], owner); n != 1 {
		t.Fatalf("%d rows hold the token's hash", n)
	}
	if n := scalar[int](f, `SELECT count(*) FROM enrollment_tokens WHERE position($1::bytea in token_hash) > 0`, []byte(tok)); n != 0 {
		t.Fatal("the token itself is stored")
	}
	if other, _, _ := f.store.CreateEnrollmentToken(f.ctx, owner); other == tok {
		t.Fatal("two tokens are equal")
	}
}

func TestEnroll(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	pub, _ := newKey(t)
	snap := snapshot(gpuUUID(), gpuUUID())
	good := db.Enrollment{Token: f.token(owner), PublicKey: pub, Region: " us-east ", Hostname: "secret-host.corp", IP: "2001:db8::1", Snapshot: snap}

	bad := func(what string, mutate func(e *db.Enrollment), kind error) {
		t.Helper()
		e := good
		mutate(&e)
		_, _, err := f.store.Enroll(f.ctx, e)
		wantKind(t, what, err, kind)
	}
	bad("short key", func(e *db.Enrollment) { e.PublicKey = pub[:31] }, db.ErrInvalid)
	bad("empty region", func(e *db.Enrollment) { e.Region = " " }, db.ErrInvalid)
	bad("long hostname", func(e *db.Enrollment) { e.Hostname = strings.Repeat("h", db.MaxHostnameLen+1) }, db.ErrInvalid)
	bad("control in name", func(e *db.Enrollment) { e.Name = "a\nb" }, db.ErrInvalid)
	bad("no GPUs", func(e *db.Enrollment) { e.Snapshot = attest.Snapshot{} }, db.ErrInvalid)
	bad("unknown token", func(e *db.Enrollment) { e.Token = "gpe_nope" }, db.ErrInvalid)
	// None of those consumed the token.
	if n := scalar[int](f, `SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL`); n != 0 {
		t.Fatalf("refused enrollments used %d tokens", n)
	}

	id, cred, err := f.store.Enroll(f.ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	dev := f.row(id)
	// No name: a random public name, never the hostname.
	if !strings.HasPrefix(dev.Name, "gpu-") || strings.Contains(dev.Name, "secret") || dev.Region != "us-east" ||
		dev.Hostname != "secret-host.corp" || *dev.IPAddress != "2001:db8::1" || dev.Verification != db.VerificationPending || dev.Status != db.StatusDown {
		t.Fatalf("enrolled: %+v", dev)
	}
	if keys, err := f.store.DeviceKeys(f.ctx, id); err != nil || len(keys) != 1 || keys[0].CredentialID != cred || !ed25519.PublicKey(keys[0].PublicKey).Equal(pub) {
		t.Fatalf("keys after enrollment: %+v, %v", keys, err)
	}
	if got, ok, err := f.store.EnrollmentSnapshot(f.ctx, id); err != nil || !ok || !reflect.DeepEqual(got, snap) {
		t.Fatalf("enrollment snapshot: ok=%v err=%v equal=%v", ok, err, reflect.DeepEqual(got, snap))
	}
	sum := sha256.Sum256([]byte(good.Token))
	if linked := scalar[string](f, `SELECT coalesce(device_id::text, '') FROM enrollment_tokens WHERE token_hash = $1 AND used_at IS NOT NULL`, sum[:]); linked != id {
		t.Fatalf("token records device %q, want %s", linked, id)
	}
	// The token is spent. The same enrollment again (a worker that lost the answer) gets the same
	// device and key back and creates nothing; with another key it is refused.
	if id2, cred2, err := f.store.Enroll(f.ctx, good); err != nil || id2 != id || cred2 != cred {
		t.Fatalf("the enrollment retried: %s %s %v, want %s %s", id2, cred2, err, id, cred)
	}
	if n := scalar[int](f, `SELECT count(*) FROM device_credentials WHERE fingerprint = $1`, db.Fingerprint(pub)); n != 1 {
		t.Fatalf("%d credentials of the key after a retried enrollment", n)
	}
	anotherKey, _ := newKey(t)
	bad("used token", func(e *db.Enrollment) { e.PublicKey = anotherKey }, db.ErrInvalid)
	// A fresh token with the same key conflicts and is not spent either.
	again := f.token(owner)
	bad("same key again", func(e *db.Enrollment) { e.Token = again; e.Snapshot = snapshot(gpuUUID()) }, db.ErrConflict)
	other, _ := newKey(t)
	if _, _, err := f.store.Enroll(f.ctx, db.Enrollment{Token: again, PublicKey: other, Region: "r", Snapshot: snapshot(gpuUUID())}); err != nil {
		t.Fatalf("the token a conflicting enrollment tried is still usable: %v", err)
	}
	// An expired token enrolls nothing.
	expired := f.token(owner)
	esum := sha256.Sum256([]byte(expired))
	f.exec(`UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, esum[:])
	k3, _ := newKey(t)
	_, _, err = f.store.Enroll(f.ctx, db.Enrollment{Token: expired, PublicKey: k3, Region: "r", Snapshot: snapshot(gpuUUID())})
	wantKind(t, "expired token", err, db.ErrInvalid)
}

func TestRandomDeviceName(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 50 {
		n, err := db.RandomDeviceName()
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(n, "-")
		if len(parts) != 4 || parts[0] != "gpu" || len(parts[3]) != 4 || len(n) > db.MaxNameLen {
			t.Fatalf("name %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 45 {
		t.Fatalf("only %d distinct names of 50", len(seen))
	}
}

// GPU identity rules at enrollment (docs/attestation.md, "GPU identity lifecycle").
func TestEnrollGPUClaimRules(t *testing.T) {
	f := newFixture(t)
	alice, mallory := f.user("alice"), f.user("mallory")
	g1, g2 := gpuUUID(), gpuUUID()
	first := f.enroll(alice, snapshot(g1, g2))

	// Rule 2: another owner reporting the same UUIDs gets none of them; a conflict is recorded
	// and its public count is what it was allowed to claim.
	fake := f.enroll(mallory, snapshot(g1, gpuUUID()))
	if f.holder(g1) != first.ID {
		t.Fatal("another owner took a claimed GPU")
	}
	if dev := f.row(fake.ID); dev.GPUCount != 1 {
		t.Fatalf("claimant gpu_count %d, want 1", dev.GPUCount)
	}
	conflicts, err := f.store.GPUConflicts(f.ctx, true, 10)
	if err != nil || len(conflicts) != 1 {
		t.Fatalf("conflicts: %+v, %v", conflicts, err)
	}
	c := conflicts[0]
	if c.UUID != g1 || c.ClaimantID != fake.ID || c.HolderID != first.ID || c.SameOwner || c.HolderRemoved || c.HolderQuarantined ||
		c.Claimant.ID != fake.ID || c.Holder.ID != first.ID {
		t.Fatalf("conflict %+v", c)
	}
	// GPUClaims names the holder for the verdict.
	findings, acc, err := f.store.GPUClaims(f.ctx, fake.ID, fake.Snapshot)
	if err != nil || len(findings) != 1 || findings[0].Reason != attest.ReasonUUIDOnAnotherDevice || findings[0].GPU != g1 ||
		len(acc) != 1 || acc[0] != (db.Accomplice{DeviceID: first.ID, Reason: attest.ReasonUUIDOnAnotherDevice}) {
		t.Fatalf("GPUClaims: %+v %+v %v", findings, acc, err)
	}

	// Rule 3: the same owner's removed device hands its claims to the new one (logged).
	if err := f.store.RemoveDevice(f.ctx, first.ID, alice); err != nil {
		t.Fatal(err)
	}
	successor := f.enroll(alice, snapshot(g2, g1))
	if f.holder(g1) != successor.ID || f.holder(g2) != successor.ID {
		t.Fatalf("successor holds %q/%q", f.holder(g1), f.holder(g2))
	}
	if idx := scalar[int](f, `SELECT idx FROM gpus WHERE uuid = $1`, g1); idx != 1 {
		t.Fatalf("moved GPU index %d, want its position in the new snapshot (1)", idx)
	}
	if n := scalar[int](f, `SELECT count(*) FROM gpu_claim_transfers WHERE from_device_id = $1 AND to_device_id = $2 AND rule = 'SAME_OWNER'`,
		first.ID, successor.ID); n != 2 {
		t.Fatalf("%d SAME_OWNER transfers logged, want 2", n)
	}
	if dev := f.row(successor.ID); dev.GPUCount != 2 {
		t.Fatalf("successor gpu_count %d", dev.GPUCount)
	}
	// The conflict over g1 is closed for the fake (the holder is now the successor, still
	// another device): it stays open, naming the new holder.
	conflicts, _ = f.store.GPUConflicts(f.ctx, true, 10)
	if len(conflicts) != 1 || conflicts[0].HolderID != successor.ID || !slices.Contains([]string{g1}, conflicts[0].UUID) {
		t.Fatalf("conflicts after succession: %+v", conflicts)
	}

	// Rule 4: a live device of the same owner keeps its claims.
	twin := f.enroll(alice, snapshot(g1))
	if f.holder(g1) != successor.ID {
		t.Fatal("a live device lost its GPU to a sibling")
	}
	conflicts, _ = f.store.GPUConflicts(f.ctx, true, 10)
	if len(conflicts) != 2 || conflicts[0].ClaimantID != twin.ID || !conflicts[0].SameOwner {
		t.Fatalf("conflicts newest first: %+v", conflicts)
	}

	// Rule 5: reporting a GPU held by a quarantined device quarantines the newcomer, and a
	// quarantined removed holder keeps its claim even against its own owner.
	if _, err := f.store.SetQuarantine(f.ctx, true, successor.ID, true, "counterfeit"); err != nil {
		t.Fatal(err)
	}
	if err := f.store.RemoveDevice(f.ctx, successor.ID, alice); err != nil {
		t.Fatal(err)
	}
	heir := f.enroll(alice, snapshot(g2))
	dev := f.row(heir.ID)
	if f.holder(g2) != successor.ID || dev.Status != db.StatusQuarantined || !strings.HasPrefix(dev.QuarantineReason, "GPU_QUARANTINED") {
		t.Fatalf("enrolled beside a quarantined GPU: holder %s, status %s, reason %q", f.holder(g2), dev.Status, dev.QuarantineReason)
	}
	findings, _, _ = f.store.GPUClaims(f.ctx, heir.ID, heir.Snapshot)
	if !slices.ContainsFunc(findings, func(x attest.Finding) bool { return x.Reason == attest.ReasonGPUQuarantined && x.GPU == g2 }) {
		t.Fatalf("GPUClaims of the heir: %+v, want GPU_QUARANTINED", findings)
	}
}

func TestGPUClaimsBySerial(t *testing.T) {
	f := newFixture(t)
	a, b := f.user("a"), f.user("b")
	sa := snapshot(gpuUUID())
	sa.GPUs[0].Serial = "1650123456789"
	holder := f.enroll(a, sa)
	sb := snapshot(gpuUUID(), gpuUUID())
	sb.GPUs[0].Serial = " 1650123456789 "
	sb.GPUs[1].Serial = "0000000000000" // a placeholder: never an identity
	claimant := f.enroll(b, sb)
	findings, acc, err := f.store.GPUClaims(f.ctx, claimant.ID, sb)
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 1 || findings[0].Reason != attest.ReasonSerialOnAnotherDevice ||
		len(acc) != 1 || acc[0] != (db.Accomplice{DeviceID: holder.ID, Reason: attest.ReasonSerialOnAnotherDevice}) {
		t.Fatalf("serial claims: %+v %+v", findings, acc)
	}
}

// A serial is a GPU identity like a UUID: the device that enrolled it first keeps it, and a
// later claimant reporting it must not turn the holder's next proof FLAGGED (for UUIDs the
// unique index guarantees this; "a newcomer listing public UUIDs must not be able to flag other
// owners' devices", db.ProofRecord).
func TestSerialClaimDoesNotFlagTheHolder(t *testing.T) {
	f := newFixture(t)
	a, b := f.user("a"), f.user("b")
	sa := snapshot(gpuUUID())
	sa.GPUs[0].Serial = "1650123456789"
	holder := f.enroll(a, sa)
	sb := snapshot(gpuUUID())
	sb.GPUs[0].Serial = "1650123456789"
	f.enroll(b, sb)
	if findings, acc, err := f.store.GPUClaims(f.ctx, holder.ID, sa); err != nil || len(findings) != 0 || len(acc) != 0 {
		t.Fatalf("the holder's own snapshot, after a claimant reported its serial: %+v %+v %v", findings, acc, err)
	}
}

func TestReassignGPU(t *testing.T) {
	f := newFixture(t)
	alice, bob := f.user("alice"), f.user("bob")
	g, free := gpuUUID(), gpuUUID()
	holder := f.enroll(alice, snapshot(g, gpuUUID()))
	claimant := f.enroll(bob, snapshot(gpuUUID(), g))
	// free was reported by claimant-2 at enrollment but its row is gone (deleted by hand, as if
	// never claimed): reassigning inserts it.
	c2 := f.enroll(bob, snapshot(free))
	f.exec(`DELETE FROM gpus WHERE uuid = $1`, free)

	_, err := f.store.ReassignGPU(f.ctx, false, "admin", g, claimant.ID)
	wantKind(t, "without admin", err, db.ErrForbidden)
	_, err = f.store.ReassignGPU(f.ctx, true, "admin", gpuUUID(), claimant.ID)
	wantKind(t, "a GPU the device never reported", err, db.ErrInvalid)
	_, err = f.store.ReassignGPU(f.ctx, true, "admin", "", claimant.ID)
	wantKind(t, "empty uuid", err, db.ErrInvalid)
	_, err = f.store.ReassignGPU(f.ctx, true, "admin", g, "00000000-0000-4000-8000-000000000000")
	wantKind(t, "unknown device", err, db.ErrNotFound)

	dev, err := f.store.ReassignGPU(f.ctx, true, "admin:carol", g, claimant.ID)
	if err != nil {
		t.Fatal(err)
	}
	if f.holder(g) != claimant.ID || dev.GPUCount != 2 || f.row(holder.ID).GPUCount != 1 {
		t.Fatalf("after reassign: holder %s, claimant count %d, old holder count %d", f.holder(g), dev.GPUCount, f.row(holder.ID).GPUCount)
	}
	if idx := scalar[int](f, `SELECT idx FROM gpus WHERE uuid = $1`, g); idx != 1 {
		t.Fatalf("reassigned GPU index %d, want 1", idx)
	}
	if n := scalar[int](f, `SELECT count(*) FROM gpu_claim_transfers WHERE uuid = $1 AND from_device_id = $2 AND to_device_id = $3
		AND rule = 'ADMIN' AND actor = 'admin:carol'`, g, holder.ID, claimant.ID); n != 1 {
		t.Fatalf("%d ADMIN transfers logged", n)
	}
	if conflicts, _ := f.store.GPUConflicts(f.ctx, true, 10); len(conflicts) != 0 {
		t.Fatalf("the reassignment left conflicts open: %+v", conflicts)
	}
	// Again: nothing changes, nothing is logged.
	before := f.row(claimant.ID).UpdatedAt
	if dev, err = f.store.ReassignGPU(f.ctx, true, "admin", g, claimant.ID); err != nil || !dev.UpdatedAt.Equal(before) {
		t.Fatalf("idempotent reassign: %v (updated %v -> %v)", err, before, dev.UpdatedAt)
	}
	if n := scalar[int](f, `SELECT count(*) FROM gpu_claim_transfers`); n != 1 {
		t.Fatalf("%d transfers after a no-op reassign", n)
	}
	// Nobody holds it: claimed as at enrollment.
	if dev, err = f.store.ReassignGPU(f.ctx, true, "admin", free, c2.ID); err != nil || f.holder(free) != c2.ID || dev.GPUCount != 1 {
		t.Fatalf("reassign an unheld GPU: %v, holder %q, count %d", err, f.holder(free), dev.GPUCount)
	}
	// A removed device cannot receive a GPU.
	if err := f.store.RemoveDevice(f.ctx, c2.ID, bob); err != nil {
		t.Fatal(err)
	}
	_, err = f.store.ReassignGPU(f.ctx, true, "admin", free, c2.ID)
	wantKind(t, "to a removed device", err, db.ErrNotFound)
}

func TestGPUConflictsArguments(t *testing.T) {
	f := newFixture(t)
	_, err := f.store.GPUConflicts(f.ctx, false, 10)
	wantKind(t, "without admin", err, db.ErrForbidden)
	for _, first := range []int{0, db.MaxPageSize + 1} {
		_, err := f.store.GPUConflicts(f.ctx, true, first)
		wantKind(t, "first out of range", err, db.ErrInvalid)
	}
	if c, err := f.store.GPUConflicts(f.ctx, true, 1); err != nil || c == nil || len(c) != 0 {
		t.Fatalf("no conflicts: %#v, %v; want an empty list", c, err)
	}
	// A removed claimant's conflict is closed; first bounds the list.
	a, b := f.user("a"), f.user("b")
	g := gpuUUID()
	f.enroll(a, snapshot(g))
	c1 := f.enroll(b, snapshot(g))
	f.enroll(b, snapshot(g))
	if c, _ := f.store.GPUConflicts(f.ctx, true, 1); len(c) != 1 {
		t.Fatalf("first=1 returned %d", len(c))
	}
	if err := f.store.RemoveDevice(f.ctx, c1.ID, b); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.store.GPUConflicts(f.ctx, true, 10); len(c) != 1 || c[0].ClaimantID == c1.ID {
		t.Fatalf("conflicts after the claimant's removal: %+v", c)
	}
}

func TestReclaimGPUs(t *testing.T) {
	f := newFixture(t)
	alice := f.user("alice")
	g, kept := gpuUUID(), gpuUUID()
	old := f.enroll(alice, snapshot(g))
	heir := f.enroll(alice, snapshot(kept, g)) // g conflicts with the live old device
	if f.holder(g) != old.ID {
		t.Fatal("setup: g moved at enrollment")
	}
	if err := f.store.RemoveDevice(f.ctx, old.ID, alice); err != nil {
		t.Fatal(err)
	}
	// A proof that no longer reports g claims nothing.
	if err := f.store.ReclaimGPUs(f.ctx, heir.ID, heir.Snapshot, []string{kept}); err != nil || f.holder(g) != old.ID {
		t.Fatalf("reclaim without g: %v, holder %s", err, f.holder(g))
	}
	// A GPU never in the enrollment snapshot is never claimed, even if reported.
	later := gpuUUID()
	if err := f.store.ReclaimGPUs(f.ctx, heir.ID, heir.Snapshot, []string{kept, g, later}); err != nil {
		t.Fatal(err)
	}
	if f.holder(g) != heir.ID || f.holder(later) != "" {
		t.Fatalf("after reclaim: g held by %q, later by %q", f.holder(g), f.holder(later))
	}
	if dev := f.row(heir.ID); dev.GPUCount != 2 {
		t.Fatalf("heir gpu_count %d", dev.GPUCount)
	}
	if n := scalar[int](f, `SELECT count(*) FROM gpu_claim_transfers WHERE uuid = $1 AND rule = 'SAME_OWNER'`, g); n != 1 {
		t.Fatalf("%d transfers", n)
	}
	if err := f.store.RemoveDevice(f.ctx, heir.ID, alice); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "reclaim for a removed device", f.store.ReclaimGPUs(f.ctx, heir.ID, heir.Snapshot, []string{kept}), db.ErrNotFound)
}

func TestDeviceKeys(t *testing.T) {
	f := newFixture(t)
	owner, other := f.user("owner"), f.user("other")
	d := f.enrollGPUs(owner, 1)
	unknown := "00000000-0000-4000-8000-000000000000"
	k2, _ := newKey(t)

	_, err := f.store.AddDeviceKey(f.ctx, d.ID, owner, k2[:16])
	wantKind(t, "short key", err, db.ErrInvalid)
	_, err = f.store.AddDeviceKey(f.ctx, d.ID, other, k2)
	wantKind(t, "another's device", err, db.ErrForbidden)
	_, err = f.store.AddDeviceKey(f.ctx, unknown, owner, k2)
	wantKind(t, "unknown device", err, db.ErrNotFound)
	// The device's own live key again (a retry whose answer was lost): that credential, nothing new.
	same, err := f.store.AddDeviceKey(f.ctx, d.ID, owner, d.Pub)
	if err != nil || same.DeviceID != d.ID || same.RevokedAt != nil || same.Fingerprint != db.Fingerprint(d.Pub) {
		t.Fatalf("the enrolled key again: %+v %v", same, err)
	}
	_, err = f.store.AddDeviceKey(f.ctx, d.ID, other, d.Pub)
	wantKind(t, "the enrolled key again, by another user", err, db.ErrForbidden)

	c2, err := f.store.AddDeviceKey(f.ctx, d.ID, owner, k2)
	if err != nil || c2.DeviceID != d.ID || c2.Fingerprint != db.Fingerprint(k2) || c2.RevokedAt != nil {
		t.Fatalf("add key: %+v, %v", c2, err)
	}
	keyIDs := func() []string {
		t.Helper()
		keys, err := f.store.DeviceKeys(f.ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range keys {
			ids = append(ids, k.CredentialID)
		}
		slices.Sort(ids)
		return ids
	}
	want := []string{d.Credential, c2.ID}
	slices.Sort(want)
	if got := keyIDs(); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}

	_, err = f.store.RevokeDeviceKey(f.ctx, d.ID, other, c2.ID)
	wantKind(t, "revoke on another's device", err, db.ErrNotFound)
	_, err = f.store.RevokeDeviceKey(f.ctx, d.ID, owner, unknown)
	wantKind(t, "revoke an unknown key", err, db.ErrNotFound)
	_, err = f.store.RevokeDeviceKey(f.ctx, unknown, owner, c2.ID)
	wantKind(t, "revoke on an unknown device", err, db.ErrNotFound)
	// Another device's credential through this device: not found.
	d2 := f.enrollGPUs(owner, 1)
	_, err = f.store.RevokeDeviceKey(f.ctx, d.ID, owner, d2.Credential)
	wantKind(t, "revoke another device's key", err, db.ErrNotFound)
	if n := scalar[int](f, `SELECT count(*) FROM device_credentials WHERE revoked_at IS NOT NULL`); n != 0 {
		t.Fatalf("refused revocations revoked %d keys", n)
	}

	r, err := f.store.RevokeDeviceKey(f.ctx, d.ID, owner, c2.ID)
	if err != nil || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	if got := keyIDs(); !slices.Equal(got, []string{d.Credential}) {
		t.Fatalf("keys after revoking: %v", got)
	}
	f.exec(`UPDATE device_credentials SET revoked_at = revoked_at - interval '1 hour' WHERE id = $1`, c2.ID)
	first := scalar[time.Time](f, `SELECT revoked_at FROM device_credentials WHERE id = $1`, c2.ID)
	if again, err := f.store.RevokeDeviceKey(f.ctx, d.ID, owner, c2.ID); err != nil || !again.RevokedAt.Equal(first) {
		t.Fatalf("revoking twice moved the time: %v -> %v (%v)", first, again.RevokedAt, err)
	}
	// A revoked key stays registered: it cannot be added again.
	_, err = f.store.AddDeviceKey(f.ctx, d.ID, owner, k2)
	wantKind(t, "re-add a revoked key", err, db.ErrConflict)

	if keys, err := f.store.DeviceKeys(f.ctx, unknown); err != nil || len(keys) != 0 {
		t.Fatalf("unknown device keys: %v %v", keys, err)
	}

	if err := f.store.TouchCredentials(f.ctx, []string{d.Credential}); err != nil {
		t.Fatal(err)
	}
	creds, _ := f.store.CredentialsByDevice(f.ctx, []string{d.ID})
	for _, c := range creds[d.ID] {
		if (c.ID == d.Credential) != (c.LastUsedAt != nil) {
			t.Fatalf("credential %s last used %v", c.ID, c.LastUsedAt)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	pub, _, _ := ed25519.GenerateKey(nil)
	for _, enc := range []string{
		base64.StdEncoding.EncodeToString(pub), base64.RawStdEncoding.EncodeToString(pub),
		base64.URLEncoding.EncodeToString(pub), " " + base64.RawURLEncoding.EncodeToString(pub) + "\n",
	} {
		got, err := db.ParsePublicKey(enc)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("ParsePublicKey(%q) = %x, %v", enc, got, err)
		}
	}
	for _, bad := range []string{"", "abc", base64.StdEncoding.EncodeToString(pub[:31]), base64.StdEncoding.EncodeToString(append(pub, 0)), "!!!!"} {
		if _, err := db.ParsePublicKey(bad); !errors.Is(err, db.ErrInvalid) {
			t.Fatalf("ParsePublicKey(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestChallenges(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d, other := f.enrollGPUs(owner, 1), f.enrollGPUs(owner, 1)
	c, err := f.store.CreateChallenge(f.ctx, d.ID, 12, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != d.ID || len(c.Nonce) != 32 || c.Difficulty != 12 || c.ExpiresAt.Sub(c.CreatedAt) != time.Minute {
		t.Fatalf("challenge %+v", c)
	}
	got, reason, err := f.store.OpenChallenge(f.ctx, d.ID, c.ID)
	if err != nil || reason != "" || got.ID != c.ID || !slices.Equal(got.Nonce, c.Nonce) {
		t.Fatalf("open challenge: %+v %q %v", got, reason, err)
	}
	for what, args := range map[string][2]string{
		"another device's": {other.ID, c.ID},
		"unknown":          {d.ID, "00000000-0000-4000-8000-000000000000"},
	} {
		if _, reason, err := f.store.OpenChallenge(f.ctx, args[0], args[1]); err != nil || reason != attest.ReasonChallengeForeign {
			t.Fatalf("%s challenge: %q %v; want CHALLENGE_FOREIGN", what, reason, err)
		}
	}
	expired := f.challenge(d.ID)
	f.exec(`UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)
	if _, reason, _ := f.store.OpenChallenge(f.ctx, d.ID, expired.ID); reason != attest.ReasonChallengeExpired {
		t.Fatalf("expired: %q", reason)
	}
	ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID})
	if err != nil || !ok {
		t.Fatalf("consume: %v %v", ok, err)
	}
	if _, reason, _ := f.store.OpenChallenge(f.ctx, d.ID, c.ID); reason != attest.ReasonChallengeReplayed {
		t.Fatalf("consumed: %q", reason)
	}

	// The open-challenge cap: MaxOpenChallenges, then a RateLimitError until one expires.
	fresh := f.enrollGPUs(owner, 1)
	for range db.MaxOpenChallenges {
		f.challenge(fresh.ID)
	}
	_, err = f.store.CreateChallenge(f.ctx, fresh.ID, 4, time.Minute)
	var rl *db.RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, db.ErrRateLimited) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Minute {
		t.Fatalf("over the cap: %v (%+v)", err, rl)
	}
	f.exec(`UPDATE challenges SET expires_at = now() WHERE id = (SELECT id FROM challenges WHERE device_id = $1 ORDER BY created_at LIMIT 1)`, fresh.ID)
	if _, err := f.store.CreateChallenge(f.ctx, fresh.ID, 4, time.Minute); err != nil {
		t.Fatalf("after one expired: %v", err)
	}

	_, err = f.store.CreateChallenge(f.ctx, "00000000-0000-4000-8000-000000000000", 4, time.Minute)
	wantKind(t, "unknown device", err, db.ErrNotFound)
	_, err = f.store.CreateChallenge(f.ctx, d.ID, 65, time.Minute)
	wantKind(t, "difficulty over 64", err, db.ErrInvalid)
	if err := f.store.RemoveDevice(f.ctx, other.ID, owner); err != nil {
		t.Fatal(err)
	}
	_, err = f.store.CreateChallenge(f.ctx, other.ID, 4, time.Minute)
	wantKind(t, "removed device", err, db.ErrNotFound)
}

func TestConsumeAndRecord(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	// Without an enrollment snapshot (as seeded devices have), the first passing proof sets it.
	f.exec(`UPDATE devices SET enrollment_snapshot = NULL WHERE id = $1`, d.ID)
	flag := []attest.Finding{{Reason: attest.ReasonMemoryOutOfBand, GPU: "g"}, {Reason: attest.ReasonMemoryOutOfBand, GPU: "h"},
		{Reason: attest.ReasonUnknownModel}}
	c := f.challenge(d.ID)
	ok, verdict, reasons, state, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Findings: flag,
		Snapshot: &d.Snapshot, ProofHash: []byte("h1")})
	if err != nil || !ok || verdict != db.VerdictFlagged || state != db.VerificationFlagged ||
		!slices.Equal(reasons, []string{"MEMORY_OUT_OF_BAND", "UNKNOWN_MODEL"}) {
		t.Fatalf("flagged proof: %v %s %v %s %v", ok, verdict, reasons, state, err)
	}
	if _, has, _ := f.store.EnrollmentSnapshot(f.ctx, d.ID); has {
		t.Fatal("a FLAGGED proof set the enrollment snapshot")
	}
	// Replaying the consumed challenge stores nothing.
	ok, _, _, _, err = f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID})
	if err != nil || ok {
		t.Fatalf("second consume: %v %v", ok, err)
	}
	// UNKNOWN_MODEL alone does not flag.
	c2 := f.challenge(d.ID)
	ok, verdict, reasons, state, err = f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c2.ID,
		Findings: []attest.Finding{{Reason: attest.ReasonUnknownModel}}, Snapshot: &d.Snapshot, ProofHash: []byte("h2")})
	if err != nil || !ok || verdict != db.VerdictPassed || state != db.VerificationVerified || !slices.Equal(reasons, []string{"UNKNOWN_MODEL"}) {
		t.Fatalf("passing proof: %v %s %v %s %v", ok, verdict, reasons, state, err)
	}
	if dev := f.row(d.ID); dev.Verification != db.VerificationVerified {
		t.Fatalf("device verification %s", dev.Verification)
	}
	if got, has, _ := f.store.EnrollmentSnapshot(f.ctx, d.ID); !has || !reflect.DeepEqual(got, d.Snapshot) {
		t.Fatal("the first passing proof did not set the enrollment snapshot")
	}
	if n := scalar[int](f, `SELECT count(*) FROM attestations WHERE device_id = $1 AND snapshot IS NOT NULL`, d.ID); n != 2 {
		t.Fatalf("%d attestations with evidence, want 2", n)
	}
	// PriorVerdict finds a submission by challenge and hash, and only that one.
	v, rs, st, found, err := f.store.PriorVerdict(f.ctx, d.ID, c.ID, []byte("h1"))
	if err != nil || !found || v != db.VerdictFlagged || !slices.Equal(rs, []string{"MEMORY_OUT_OF_BAND", "UNKNOWN_MODEL"}) || st != db.VerificationVerified {
		t.Fatalf("prior verdict: %s %v %s %v %v (state is the device's current one)", v, rs, st, found, err)
	}
	for what, args := range map[string][3]any{
		"other hash":      {d.ID, c.ID, []byte("h2")},
		"other challenge": {d.ID, c2.ID, []byte("h1")},
		"other device":    {f.enrollGPUs(owner, 1).ID, c.ID, []byte("h1")},
	} {
		if _, _, _, found, err := f.store.PriorVerdict(f.ctx, args[0].(string), args[1].(string), args[2].([]byte)); err != nil || found {
			t.Fatalf("prior verdict, %s: found=%v %v", what, found, err)
		}
	}

	// Not consumed: an expired challenge, another device's, a removed device's.
	expired := f.challenge(d.ID)
	f.exec(`UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)
	other := f.enrollGPUs(owner, 1)
	foreign := f.challenge(other.ID)
	for what, p := range map[string]db.ProofRecord{
		"expired":          {DeviceID: d.ID, ChallengeID: expired.ID},
		"another device's": {DeviceID: d.ID, ChallengeID: foreign.ID},
	} {
		if ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, p); err != nil || ok {
			t.Fatalf("%s challenge consumed=%v %v", what, ok, err)
		}
	}
	if n := scalar[int](f, `SELECT count(*) FROM challenges WHERE consumed_at IS NOT NULL AND id IN ($1, $2)`, expired.ID, foreign.ID); n != 0 {
		t.Fatalf("%d refused challenges were spent", n)
	}
	before := scalar[int](f, `SELECT count(*) FROM attestations`)
	removed := f.enrollGPUs(owner, 1)
	rc := f.challenge(removed.ID)
	if err := f.store.RemoveDevice(f.ctx, removed.ID, owner); err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE challenges SET expires_at = now() + interval '1 minute' WHERE id = $1`, rc.ID) // as if removal had not expired it
	if ok, _, _, _, err := f.store.ConsumeAndRecord(f.ctx, db.ProofRecord{DeviceID: removed.ID, ChallengeID: rc.ID}); err != nil || ok {
		t.Fatalf("removed device's proof consumed=%v %v", ok, err)
	}
	if after := scalar[int](f, `SELECT count(*) FROM attestations`); after != before {
		t.Fatalf("refused proofs stored %d attestations", after-before)
	}
}

func TestRecordProof(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	v, reasons, state, err := f.store.RecordProof(f.ctx, db.ProofRecord{DeviceID: d.ID,
		Findings: []attest.Finding{{Reason: attest.ReasonBadSignature}}, ProofHash: []byte("p")})
	if err != nil || v != db.VerdictFlagged || state != db.VerificationFlagged || !slices.Equal(reasons, []string{"BAD_SIGNATURE"}) {
		t.Fatalf("record: %s %v %s %v", v, reasons, state, err)
	}
	if dev := f.row(d.ID); dev.Verification != db.VerificationFlagged {
		t.Fatalf("verification %s", dev.Verification)
	}
	if n := scalar[int](f, `SELECT count(*) FROM attestations WHERE device_id = $1 AND challenge_id IS NULL AND snapshot IS NULL AND proof_hash = 'p'`, d.ID); n != 1 {
		t.Fatalf("%d stored verdicts without challenge or snapshot", n)
	}
	c := f.challenge(d.ID)
	if _, _, _, err := f.store.RecordProof(f.ctx, db.ProofRecord{DeviceID: d.ID, ChallengeID: c.ID, Snapshot: &d.Snapshot}); err != nil {
		t.Fatal(err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM attestations WHERE challenge_id = $1 AND snapshot IS NOT NULL AND verdict = 'PASSED'`, c.ID); n != 1 {
		t.Fatal("verdict with challenge and snapshot not stored")
	}
	if err := f.store.RemoveDevice(f.ctx, d.ID, owner); err != nil {
		t.Fatal(err)
	}
	before := scalar[int](f, `SELECT count(*) FROM attestations`)
	_, _, _, err = f.store.RecordProof(f.ctx, db.ProofRecord{DeviceID: d.ID})
	wantKind(t, "removed device", err, db.ErrNotFound)
	if after := scalar[int](f, `SELECT count(*) FROM attestations`); after != before {
		t.Fatal("a removed device's verdict was stored")
	}
}

func TestHeartbeatAndMarkDown(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	st, err := f.store.Heartbeat(f.ctx, d.ID, []byte(`{"temp":60}`))
	if err != nil || st != db.StatusUp {
		t.Fatalf("heartbeat: %s %v", st, err)
	}
	if dev := f.row(d.ID); dev.LastSeenAt == nil || time.Since(*dev.LastSeenAt) > time.Minute || dev.Status != db.StatusUp {
		t.Fatalf("after heartbeat: %+v", dev)
	}
	if got := scalar[string](f, `SELECT heartbeat::text FROM devices WHERE id = $1`, d.ID); got != `{"temp": 60}` {
		t.Fatalf("readings stored as %s", got)
	}
	_, err = f.store.Heartbeat(f.ctx, d.ID, []byte(`not json`))
	wantKind(t, "readings that are not JSON", err, db.ErrInvalid)
	_, err = f.store.Heartbeat(f.ctx, "00000000-0000-4000-8000-000000000000", nil)
	wantKind(t, "unknown device", err, db.ErrNotFound)

	// MarkSilentDevicesDown: an UP device with a key whose heartbeat is old goes DOWN; a fresh
	// one stays UP; a device without keys (imported, demo) keeps its status.
	fresh := f.enrollGPUs(owner, 1)
	f.store.Heartbeat(f.ctx, fresh.ID, nil)
	keyless := f.enrollGPUs(owner, 1)
	f.exec(`DELETE FROM device_credentials WHERE device_id = $1`, keyless.ID)
	f.exec(`UPDATE devices SET status = 'UP', last_seen_at = now() - interval '1 hour' WHERE id IN ($1, $2)`, d.ID, keyless.ID)
	n, err := f.store.MarkSilentDevicesDown(f.ctx, db.HeartbeatWindow)
	if err != nil || n != 1 {
		t.Fatalf("marked %d down, %v; want 1", n, err)
	}
	for id, want := range map[string]db.DeviceStatus{d.ID: db.StatusDown, fresh.ID: db.StatusUp, keyless.ID: db.StatusUp} {
		if got := f.row(id).Status; got != want {
			t.Fatalf("device %s is %s, want %s", id, got, want)
		}
	}
	if n, _ := f.store.MarkSilentDevicesDown(f.ctx, db.HeartbeatWindow); n != 0 {
		t.Fatalf("second run changed %d", n)
	}

	if err := f.store.RemoveDevice(f.ctx, fresh.ID, owner); err != nil {
		t.Fatal(err)
	}
	_, err = f.store.Heartbeat(f.ctx, fresh.ID, nil)
	wantKind(t, "removed device", err, db.ErrNotFound)
	if st := scalar[string](f, `SELECT status FROM devices WHERE id = $1`, fresh.ID); st != "DOWN" {
		t.Fatalf("a heartbeat after removal left status %s", st)
	}
}
