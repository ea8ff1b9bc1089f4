package db_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

func TestRecordAddressAndChurn(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	churn := db.AddressChurn{Limit: 3, Window: time.Hour}
	record := func(addr string) *db.AddressChurnFinding {
		t.Helper()
		fd, err := f.store.RecordAddress(f.ctx, d.ID, addr, churn)
		if err != nil {
			t.Fatalf("record %s: %v", addr, err)
		}
		return fd
	}
	// Unparsable addresses are ignored; a port is dropped; IPv6 addresses of one /64 are one network.
	if fd := record("not an address"); fd != nil {
		t.Fatal("finding for garbage")
	}
	for _, a := range []string{"192.0.2.1:5000", "192.0.2.1", "[2001:db8:1:1::1]:443", "2001:db8:1:1::2", "2001:db8:1:1::3"} {
		if fd := record(a); fd != nil {
			t.Fatalf("finding after %s: %+v (2 networks so far)", a, fd)
		}
	}
	if fd := record("192.0.2.2"); fd != nil {
		t.Fatalf("finding at 3 networks (limit 3): %+v", fd)
	}
	fd := record("192.0.2.3")
	if fd == nil || fd.Distinct != 4 {
		t.Fatalf("4th network: %+v, want Distinct 4", fd)
	}
	// Stored once per window, however often the rule is crossed again.
	record("192.0.2.4")
	report, err := f.store.AddressReport(f.ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Findings) != 1 || report.Findings[0].Reason != db.ReasonAddressChurn ||
		!strings.Contains(report.Findings[0].Detail, "4 distinct networks") {
		t.Fatalf("findings %+v", report.Findings)
	}
	var got []string
	for _, a := range report.Addresses {
		got = append(got, a.Address)
	}
	slices.Sort(got)
	want := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1::3"}
	if !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	// A repeat refreshes last_seen_at and keeps first_seen_at.
	f.exec(`UPDATE device_addresses SET first_seen_at = now() - interval '1 day', last_seen_at = now() - interval '1 day' WHERE address = '192.0.2.1'`)
	record("192.0.2.1")
	m, err := f.store.AddressesByDevice(f.ctx, []string{d.ID})
	if err != nil {
		t.Fatal(err)
	}
	first := m[d.ID][0]
	if first.Address != "192.0.2.1" || time.Since(first.LastSeenAt) > time.Minute || time.Since(first.FirstSeenAt) < 23*time.Hour {
		t.Fatalf("most recent address %+v", first)
	}
	_, err = f.store.AddressReport(f.ctx, "00000000-0000-4000-8000-000000000000")
	wantKind(t, "report of an unknown device", err, db.ErrNotFound)
}

func TestRecordAddressKeepsBoundedHistory(t *testing.T) {
	f := newFixture(t)
	d := f.enrollGPUs(f.user("owner"), 1)
	for i := range db.MaxAddressesPerDevice + 5 {
		if _, err := f.store.RecordAddress(f.ctx, d.ID, fmt.Sprintf("10.0.%d.1", i), db.AddressChurn{}); err != nil {
			t.Fatal(err)
		}
		f.exec(`UPDATE device_addresses SET last_seen_at = last_seen_at - make_interval(secs => 100 - $2) WHERE device_id = $1 AND address = $3`,
			d.ID, i, fmt.Sprintf("10.0.%d.1", i))
	}
	m, _ := f.store.AddressesByDevice(f.ctx, []string{d.ID})
	if len(m[d.ID]) != db.MaxAddressesPerDevice {
		t.Fatalf("%d addresses kept, want %d", len(m[d.ID]), db.MaxAddressesPerDevice)
	}
	for _, a := range m[d.ID] {
		if a.Address == "10.0.0.1" || a.Address == "10.0.4.1" {
			t.Fatalf("the least recently seen address %s was kept", a.Address)
		}
	}
	// The finding fires with the defaults too (6 networks in 24 h); the churn limit is kept
	// below the history bound.
	if c := (db.AddressChurn{Limit: 1000}).WithDefaults(); c.Limit != db.MaxAddressesPerDevice-1 || c.Window != 24*time.Hour {
		t.Fatalf("WithDefaults = %+v", c)
	}
	if c := (db.AddressChurn{}).WithDefaults(); c != db.DefaultAddressChurn() || c.Limit != 6 {
		t.Fatalf("zero rule = %+v, want the defaults %+v", c, db.DefaultAddressChurn())
	}
	if n := scalar[int](f, `SELECT count(*) FROM device_review_findings WHERE device_id = $1`, d.ID); n != 1 {
		t.Fatalf("%d findings with the default rule", n)
	}
}

// The coalescer: concurrent heartbeats of several devices become batches, each caller gets its
// own device's status, an unknown device gets NOT_FOUND and a bad row fails only its sender.
func TestHeartbeatsCoalescer(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	up, paused := f.enrollGPUs(owner, 1), f.enrollGPUs(owner, 1)
	if _, err := f.store.SetPaused(f.ctx, paused.ID, owner, true); err != nil {
		t.Fatal(err)
	}
	unknown := "00000000-0000-4000-8000-000000000000"
	for _, wait := range []time.Duration{0, 20 * time.Millisecond} {
		h := f.store.NewHeartbeats(wait, 4)
		type call struct {
			device   string
			readings string
			status   db.DeviceStatus
			kind     error
		}
		calls := []call{
			{up.ID, `{"n":1}`, db.StatusUp, nil}, {up.ID, `{"n":2}`, db.StatusUp, nil},
			{paused.ID, `{}`, db.StatusPaused, nil}, {unknown, `{}`, "", db.ErrNotFound},
			{up.ID, `not json`, "", db.ErrInvalid}, {paused.ID, `{}`, db.StatusPaused, nil},
			{up.ID, `{"n":3}`, db.StatusUp, nil},
		}
		var wg sync.WaitGroup
		for i, c := range calls {
			wg.Go(func() {
				st, err := h.Record(f.ctx, c.device, []byte(c.readings))
				if c.kind != nil {
					if !errors.Is(err, c.kind) {
						t.Errorf("wait %v call %d: %v, want %v", wait, i, err, c.kind)
					}
					return
				}
				if err != nil || st != c.status {
					t.Errorf("wait %v call %d (%s): %s, %v; want %s", wait, i, c.device, st, err, c.status)
				}
			})
		}
		wg.Wait()
		if got := scalar[string](f, `SELECT heartbeat::text FROM devices WHERE id = $1`, up.ID); !strings.HasPrefix(got, `{"n": `) {
			t.Fatalf("wait %v: stored readings %s", wait, got)
		}
	}
	// A malformed heartbeat followed by a good one from the same device in one batch: the batch
	// keeps the device's last readings, and the malformed one is still refused, not dropped.
	for _, bad := range []string{`not json`, `{"s":"\u0000"}`} {
		h := f.store.NewHeartbeats(300*time.Millisecond, 2)
		badErr := make(chan error, 1)
		go func() { _, err := h.Record(f.ctx, up.ID, []byte(bad)); badErr <- err }()
		time.Sleep(50 * time.Millisecond) // let the malformed one join the batch first
		if st, err := h.Record(f.ctx, up.ID, []byte(`{"n":4}`)); err != nil || st != db.StatusUp {
			t.Fatalf("good heartbeat after %q: %s, %v", bad, st, err)
		}
		if err := <-badErr; !errors.Is(err, db.ErrInvalid) {
			t.Fatalf("malformed heartbeat %q batched with a good one: %v, want invalid input", bad, err)
		}
	}
	// A caller that stops waiting gets its context's error.
	h := f.store.NewHeartbeats(time.Hour, 100)
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	if _, err := h.Record(ctx, up.ID, []byte(`{}`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNetworkStats(t *testing.T) {
	f := newFixture(t)
	if _, err := f.store.Seed(f.ctx, 80); err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE devices SET removed_at = now() WHERE id IN (SELECT id FROM devices ORDER BY id LIMIT 5)`)
	s, err := f.store.NetworkStats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Devices != 75 || s.GPUs != scalar[int](f, `SELECT sum(gpu_count)::int FROM devices WHERE removed_at IS NULL`) {
		t.Fatalf("totals %d devices %d GPUs", s.Devices, s.GPUs)
	}
	check := func(what string, got map[string][2]int, col string) {
		t.Helper()
		var rows []struct {
			K    string `db:"k"`
			N, G int
		}
		if err := f.x.SelectContext(f.ctx, &rows, `SELECT `+col+` AS k, count(*) AS n, sum(gpu_count)::int AS g FROM devices
			WHERE removed_at IS NULL GROUP BY 1`); err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(got) {
			t.Fatalf("%s: %d groups, SQL %d", what, len(got), len(rows))
		}
		for _, r := range rows {
			if got[r.K] != [2]int{r.N, r.G} {
				t.Fatalf("%s %s: %v, SQL %d/%d", what, r.K, got[r.K], r.N, r.G)
			}
		}
	}
	by := map[string][2]int{}
	for _, c := range s.ByStatus {
		by[string(c.Status)] = [2]int{c.Devices, c.GPUs}
	}
	check("status", by, "status")
	by = map[string][2]int{}
	for _, c := range s.ByGPUModel {
		by[c.Model] = [2]int{c.Devices, c.GPUs}
	}
	check("model", by, "gpu_model")
	by = map[string][2]int{}
	for _, c := range s.ByRegion {
		by[c.Region] = [2]int{c.Devices, c.GPUs}
	}
	check("region", by, "region")
	by = map[string][2]int{}
	for _, c := range s.ByVerification {
		by[string(c.Verification)] = [2]int{c.Devices, c.GPUs}
	}
	check("verification", by, "verification")
	if !slices.IsSortedFunc(s.ByRegion, func(a, b db.RegionCount) int { return b.Devices - a.Devices }) {
		t.Fatalf("regions not by device count: %+v", s.ByRegion)
	}

	// With a TTL, a result is reused until it expires; concurrent misses share one query.
	cached := db.New(f.x, db.Options{StatsTTL: time.Hour})
	first, err := cached.NetworkStats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE devices SET removed_at = now() WHERE id IN (SELECT id FROM devices WHERE removed_at IS NULL LIMIT 5)`)
	again, _ := cached.NetworkStats(f.ctx)
	if again.Devices != first.Devices || !again.ComputedAt.Equal(first.ComputedAt) {
		t.Fatalf("cached stats recomputed: %d -> %d", first.Devices, again.Devices)
	}
	if fresh, _ := f.store.NetworkStats(f.ctx); fresh.Devices != 70 {
		t.Fatalf("uncached stats: %d devices, want 70", fresh.Devices)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	if _, err := db.New(f.x, db.Options{StatsTTL: -1}).NetworkStats(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
}

func TestEmptyNetworkStats(t *testing.T) {
	f := newFixture(t)
	s, err := f.store.NetworkStats(f.ctx)
	if err != nil || s.Devices != 0 || s.GPUs != 0 || s.ByStatus == nil || s.ByRegion == nil || s.ByGPUModel == nil || s.ByVerification == nil {
		t.Fatalf("empty network: %+v, %v", s, err)
	}
}

func TestSeed(t *testing.T) {
	f := newFixture(t)
	_, err := f.store.Seed(f.ctx, 0)
	wantKind(t, "seed 0", err, db.ErrInvalid)
	ok, err := f.store.Seed(f.ctx, 25)
	if err != nil || !ok {
		t.Fatalf("seed: %v %v", ok, err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM devices`); n != 25 {
		t.Fatalf("%d devices", n)
	}
	// Every device's GPUs match its count and model; users: the demo users and the operators.
	if bad := scalar[int](f, `SELECT count(*) FROM devices d WHERE gpu_count <> (SELECT count(*) FROM gpus g WHERE g.device_id = d.id)
		OR EXISTS (SELECT 1 FROM gpus g WHERE g.device_id = d.id AND g.model <> d.gpu_model)`); bad != 0 {
		t.Fatalf("%d devices whose GPUs disagree with their row", bad)
	}
	if n := scalar[int](f, `SELECT count(*) FROM users`); n != len(db.DemoUsers)+1 {
		t.Fatalf("%d users", n)
	}
	// A second seed does nothing.
	ok, err = f.store.Seed(f.ctx, 10)
	if err != nil || ok {
		t.Fatalf("second seed: %v %v", ok, err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM devices`); n != 25 {
		t.Fatalf("second seed changed the devices: %d", n)
	}
}

func TestMigrateFromEmptyAndReady(t *testing.T) {
	f := newFixture(t)
	if err := f.store.Ready(f.ctx); err != nil {
		t.Fatalf("migrated clone not ready: %v", err)
	}
	if applied, err := db.Migrate(f.ctx, f.x.DB); err != nil || len(applied) != 0 {
		t.Fatalf("migrating a migrated database applied %v (%v)", applied, err)
	}
	// Forget the last migration: pending, not ready.
	last := scalar[int64](f, `SELECT max(version_id) FROM goose_db_version`)
	f.exec(`DELETE FROM goose_db_version WHERE version_id = $1`, last)
	if pending, err := db.MigrationsPending(f.ctx, f.x.DB); err != nil || !pending {
		t.Fatalf("pending = %v, %v", pending, err)
	}
	if err := f.store.Ready(f.ctx); !errors.Is(err, db.ErrMigrationsPending) {
		t.Fatalf("Ready with a pending migration: %v", err)
	}
	// From an empty schema, every migration applies, in order.
	f.exec(`DROP SCHEMA public CASCADE; CREATE SCHEMA public`)
	applied, err := db.Migrate(f.ctx, f.x.DB)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) < 5 || applied[0] != 1 || applied[len(applied)-1] != last || !slices.IsSorted(applied) {
		t.Fatalf("applied %v", applied)
	}
	if err := f.store.Ready(f.ctx); err != nil {
		t.Fatalf("after migrating: %v", err)
	}
	// The store works on the result.
	f.enrollGPUs(f.user("owner"), 1)
}

func TestOpen(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	store, err := db.Open(t.Context(), dbtest.DSN(t, x), db.Options{MaxOpenConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Ready(t.Context()); err != nil || store.SQL().Stats().MaxOpenConnections != 3 {
		t.Fatalf("opened store: %v, max conns %d", err, store.SQL().Stats().MaxOpenConnections)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := db.Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", db.Options{}); err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
}

func TestSnapshotBudgetAndProofHash(t *testing.T) {
	t.Parallel()
	if db.SnapshotBudget(0) != db.SnapshotBudget(1) || db.SnapshotBudget(1000) != db.MaxStoredSnapshotBytes ||
		db.SnapshotBudget(2) != db.SnapshotHostBytes+2*db.SnapshotBytesPerGPU {
		t.Fatal("SnapshotBudget bounds")
	}
	if err := db.CheckSnapshotSize(db.SnapshotBudget(8), 8); err != nil {
		t.Fatalf("at the budget: %v", err)
	}
	if err := db.CheckSnapshotSize(db.SnapshotBudget(8)+1, 8); !errors.Is(err, db.ErrInvalid) {
		t.Fatalf("over the budget: %v", err)
	}
	p := attest.Proof{ChallengeID: "c", Counter: 7, Signature: []byte("sig"), SnapshotHash: []byte("h"), Snapshot: snapshot("GPU-1")}
	h := db.ProofHash(p)
	if len(h) != 32 || !bytes.Equal(h, db.ProofHash(p)) {
		t.Fatal("ProofHash is not a stable SHA-256")
	}
	for what, q := range map[string]attest.Proof{
		"counter":   {ChallengeID: "c", Counter: 8, Signature: []byte("sig"), SnapshotHash: []byte("h"), Snapshot: p.Snapshot},
		"challenge": {ChallengeID: "d", Counter: 7, Signature: []byte("sig"), SnapshotHash: []byte("h"), Snapshot: p.Snapshot},
		"signature": {ChallengeID: "c", Counter: 7, Signature: []byte("sih"), SnapshotHash: []byte("h"), Snapshot: p.Snapshot},
		"snapshot":  {ChallengeID: "c", Counter: 7, Signature: []byte("sig"), SnapshotHash: []byte("h"), Snapshot: snapshot("GPU-2")},
		// Framing: moving a byte between fields changes the hash.
		"framing": {ChallengeID: "c", Counter: 7, Signature: []byte("si"), SnapshotHash: []byte("gh"), Snapshot: p.Snapshot},
	} {
		if bytes.Equal(db.ProofHash(q), h) {
			t.Fatalf("a different %s gives the same proof hash", what)
		}
	}
}

func TestErrorsAndEnums(t *testing.T) {
	t.Parallel()
	rl := &db.RateLimitError{Msg: "slow down", RetryAfter: 1500 * time.Millisecond}
	if !errors.Is(rl, db.ErrRateLimited) || rl.RetryAfterSeconds() != 2 || (&db.RateLimitError{}).RetryAfterSeconds() != 1 {
		t.Fatalf("RateLimitError: %v %d", rl, rl.RetryAfterSeconds())
	}
	for _, c := range []struct {
		err  error
		kind error
		msg  string
	}{
		{db.Invalidf("bad %d", 1), db.ErrInvalid, "bad 1"},
		{db.Forbiddenf("no"), db.ErrForbidden, "no"},
		{db.NotFoundf("gone"), db.ErrNotFound, "gone"},
	} {
		if !errors.Is(c.err, c.kind) || c.err.Error() != c.msg {
			t.Fatalf("%v: kind or message wrong", c.err)
		}
	}
	var s db.DeviceStatus
	if err := s.UnmarshalGQL("QUARANTINED"); err != nil || s != db.StatusQuarantined {
		t.Fatalf("status: %s %v", s, err)
	}
	for _, bad := range []any{"up", 3, strings.Repeat("X", 100)} {
		if err := s.UnmarshalGQL(bad); !errors.Is(err, db.ErrInvalid) || len(err.Error()) > 200 {
			t.Fatalf("UnmarshalGQL(%v): %v", bad, err)
		}
	}
	var buf bytes.Buffer
	db.VerificationFlagged.MarshalGQL(&buf)
	if buf.String() != `"FLAGGED"` {
		t.Fatalf("marshal: %s", buf.String())
	}
	var o db.DeviceOrderField
	var dir db.OrderDirection
	var v db.AttestationVerdict
	var vs db.VerificationState
	if o.UnmarshalGQL("NAME") != nil || dir.UnmarshalGQL("ASC") != nil || v.UnmarshalGQL("PASSED") != nil || vs.UnmarshalGQL("PENDING") != nil ||
		o.UnmarshalGQL("ID") == nil || dir.UnmarshalGQL("UP") == nil || v.UnmarshalGQL("OK") == nil || vs.UnmarshalGQL("DONE") == nil {
		t.Fatal("enum parsing")
	}
}

func TestRetentionDefaults(t *testing.T) {
	t.Parallel()
	d := db.DefaultRetention()
	if d.Challenges != time.Hour || d.EnrollmentTokens != 24*time.Hour || d.Attestations != 30*24*time.Hour || d.Addresses != 30*24*time.Hour {
		t.Fatalf("DefaultRetention = %+v", d)
	}
}
