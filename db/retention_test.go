package db_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// The purge rules on real PostgreSQL: what goes (expired challenges and tokens, old PASSED
// verdicts, stale addresses and findings) and what stays (each device's latest verdict, every
// FLAGGED verdict with its evidence, everything recent).
func TestPurgeKeepsLatestAndFlaggedEvidence(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	ctx := context.Background()
	if _, err := store.Seed(ctx, 3); err != nil {
		t.Fatal(err)
	}
	var devs []string
	if err := x.Select(&devs, `SELECT id FROM devices ORDER BY id`); err != nil || len(devs) < 2 {
		t.Fatalf("devices: %v %v", devs, err)
	}
	a, b := devs[0], devs[1]
	var owner string
	if err := x.Get(&owner, `SELECT owner_id FROM devices WHERE id = $1`, a); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := x.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Attestations, named by what the purge must do with them.
	for _, r := range []struct{ name, device, verdict, age string }{
		{"old-passed", a, "PASSED", "40 days"},
		{"old-flagged", a, "FLAGGED", "50 days"},
		{"recent-passed", a, "PASSED", "1 day"},
		{"newest-a", a, "PASSED", "10 minutes"},
		{"old-passed-b", b, "PASSED", "45 days"},
		{"latest-b-old", b, "PASSED", "40 days"}, // b's latest verdict, however old
	} {
		exec(`INSERT INTO attestations (device_id, verdict, reasons, snapshot, created_at)
			VALUES ($1, $2, ARRAY[$3], '{"gpus":[]}', now() - $4::interval)`, r.device, r.verdict, r.name, r.age)
	}
	// Challenges: expired long ago (consumed or not), expired a moment ago, open.
	for _, c := range []struct{ name, expires, consumed string }{
		{"expired-2h", "-2 hours", ""}, {"consumed-2h", "-2 hours", "yes"}, {"expired-10m", "-10 minutes", ""}, {"open", "+2 minutes", ""},
	} {
		exec(`INSERT INTO challenges (device_id, nonce, difficulty, expires_at, consumed_at)
			VALUES ($1, $2::bytea, 8, now() + $3::interval, CASE WHEN $4 = 'yes' THEN now() - interval '3 hours' END)`,
			a, c.name, c.expires, c.consumed)
	}
	// Enrollment tokens: expired two days ago (used and unused), fresh.
	for _, tk := range []struct{ name, expires, used string }{
		{"used-old", "-2 days", "yes"}, {"unused-old", "-2 days", ""}, {"fresh", "+15 minutes", ""},
	} {
		exec(`INSERT INTO enrollment_tokens (token_hash, owner_id, expires_at, used_at)
			VALUES ($1::bytea, $2, now() + $3::interval, CASE WHEN $4 = 'yes' THEN now() - interval '2 days' END)`,
			tk.name, owner, tk.expires, tk.used)
	}
	exec(`INSERT INTO device_addresses (device_id, address, first_seen_at, last_seen_at) VALUES
		($1, '192.0.2.1', now() - interval '60 days', now() - interval '40 days'),
		($1, '192.0.2.2', now() - interval '60 days', now() - interval '1 hour')`, a)
	exec(`INSERT INTO device_review_findings (device_id, reason, created_at) VALUES
		($1, 'ADDRESS_CHURN', now() - interval '40 days'), ($1, 'ADDRESS_CHURN', now())`, a)

	n, err := store.Purge(ctx, db.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	want := db.Purged{Challenges: 2, EnrollmentTokens: 2, Attestations: 2, Addresses: 1, Findings: 1}
	if n != want {
		t.Fatalf("purged %+v, want %+v", n, want)
	}
	left := func(q string) string {
		t.Helper()
		var s []string
		if err := x.Select(&s, q); err != nil {
			t.Fatal(err)
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	}
	if got := left(`SELECT reasons[1] FROM attestations WHERE reasons[1] IS NOT NULL`); got != "latest-b-old,newest-a,old-flagged,recent-passed" {
		t.Fatalf("attestations kept: %s", got)
	}
	if got := left(`SELECT convert_from(nonce, 'UTF8') FROM challenges`); got != "expired-10m,open" {
		t.Fatalf("challenges kept: %s", got)
	}
	if got := left(`SELECT convert_from(token_hash, 'UTF8') FROM enrollment_tokens`); got != "fresh" {
		t.Fatalf("tokens kept: %s", got)
	}
	if got := left(`SELECT host(address) FROM device_addresses`); got != "192.0.2.2" {
		t.Fatalf("addresses kept: %s", got)
	}
	var flaggedSnapshot bool
	if err := x.Get(&flaggedSnapshot, `SELECT snapshot IS NOT NULL FROM attestations WHERE reasons[1] = 'old-flagged'`); err != nil || !flaggedSnapshot {
		t.Fatalf("the FLAGGED verdict lost its evidence (%v)", err)
	}

	// A shorter retention is honoured; the rules stay.
	n, err = store.Purge(ctx, db.Retention{Attestations: time.Hour})
	if err != nil || n.Attestations != 1 {
		t.Fatalf("second purge: %+v, %v", n, err)
	}
	if got := left(`SELECT reasons[1] FROM attestations WHERE reasons[1] IS NOT NULL`); got != "latest-b-old,newest-a,old-flagged" {
		t.Fatalf("attestations kept with a 1 h retention: %s", got)
	}
}
