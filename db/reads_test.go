package db_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// publicGrant is every devices column a public read may touch: the public columns and the two
// its WHERE clauses use. No owner-only column.
const publicGrant = `GRANT SELECT (id, name, status, region, verification, verification_level, gpu_model,
	gpu_count, last_seen_at, created_at, removed_at, verification_rank) ON devices TO ` + db.RoleApp

// seeded marks the test parallel and returns a superuser pool on a fresh database with n demo
// devices.
func seeded(t *testing.T, n int) (*sqlx.DB, context.Context) {
	t.Helper()
	t.Parallel()
	x := dbtest.New(t)
	ctx := t.Context()
	if _, err := db.New(x, db.Options{}).Seed(ctx, n); err != nil {
		t.Fatal(err)
	}
	return x, ctx
}

// TestAnonymousReadsReadPublicColumnsOnly revokes the owner-only columns of devices from the
// app role, which then serves anonymous reads on the tables (no explorer pool): every public
// read, prepared or not, still answers, with the owner-only fields as the explorer views give
// them, while a signed-in read (which needs those columns) is refused.
func TestAnonymousReadsReadPublicColumnsOnly(t *testing.T) {
	x, ctx := seeded(t, 300)
	full := db.New(x, db.Options{StatsTTL: -1})
	if _, err := x.Exec(`REVOKE SELECT ON devices FROM ` + db.RoleApp + `; ` + publicGrant); err != nil {
		t.Fatal(err)
	}
	s := db.New(dbtest.AsRole(t, x, db.RoleApp), db.Options{StatsTTL: -1})
	anon := db.Anonymous(ctx)

	want, err := full.ListDevices(ctx, db.ListParams{First: 100})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]db.Device{}
	for _, d := range want.Devices {
		byID[d.ID] = d
	}
	check := func(what string, got db.Device) {
		t.Helper()
		w, ok := byID[got.ID]
		if !ok {
			var err error
			if w, err = full.Device(ctx, got.ID); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		pub := w
		pub.OwnerID, pub.UpdatedAt = "00000000-0000-0000-0000-000000000000", w.CreatedAt
		pub.Hostname, pub.IPAddress, pub.LabelList, pub.EnrolledAt = "", nil, nil, nil
		pub.Paused, pub.QuarantinedAt, pub.QuarantineReason = false, nil, ""
		if !equalDevices(got, pub) {
			t.Errorf("%s: anonymous read\n%+v\nwant\n%+v", what, got, pub)
		}
	}

	dev, err := s.Device(anon, want.Devices[3].ID)
	if err != nil {
		t.Fatalf("anonymous device: %v", err)
	}
	check("device", dev)
	up, model, region := db.StatusUp, db.DemoCatalogue[2].Model, db.DemoRegions[1]
	lists := []db.ListParams{
		{First: 50}, // prepared
		{First: 50, Filter: db.DeviceFilter{Status: &up}},                                                                    // prepared
		{First: 20, Order: db.DeviceOrder{Field: db.OrderName, Direction: db.Asc}, Filter: db.DeviceFilter{Region: &region}}, // unprepared
		{First: 20, Filter: db.DeviceFilter{Status: &up, GPUModel: &model}},                                                  // unprepared
	}
	for _, lp := range lists {
		page, err := s.ListDevices(anon, lp)
		if err != nil {
			t.Fatalf("anonymous list %+v: %v", lp, err)
		}
		if len(page.Devices) == 0 {
			t.Fatalf("anonymous list %+v: empty", lp)
		}
		for _, d := range page.Devices {
			check("list", d)
		}
		lp.After = *page.EndCursor()
		if _, err := s.ListDevices(anon, lp); err != nil {
			t.Fatalf("anonymous list %+v after a cursor: %v", lp, err)
		}
	}
	for _, q := range []string{want.Devices[5].Name[:4], want.Devices[5].ID[:6]} {
		page, err := s.SearchDevices(anon, q, 10, "")
		if err != nil {
			t.Fatalf("anonymous search %q: %v", q, err)
		}
		if len(page.Devices) == 0 {
			t.Fatalf("anonymous search %q: no match", q)
		}
		for _, d := range page.Devices {
			check("search", d)
		}
	}
	if _, err := s.GPUsByDevice(anon, []string{dev.ID}); err != nil {
		t.Fatalf("anonymous gpus: %v", err)
	}

	// The revocation bites: a signed-in read needs the owner-only columns.
	if _, err := s.Device(ctx, dev.ID); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("signed-in device read without the owner columns: %v, want permission denied", err)
	}
	if _, err := s.ListDevices(ctx, db.ListParams{First: 5}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("signed-in list without the owner columns: %v, want permission denied", err)
	}
}

func equalDevices(a, b db.Device) bool {
	if a.ID != b.ID || a.OwnerID != b.OwnerID || a.Name != b.Name || a.Status != b.Status || a.Region != b.Region ||
		a.Verification != b.Verification || a.DeviceLevel != b.DeviceLevel || a.GPUModel != b.GPUModel ||
		a.GPUCount != b.GPUCount || !a.CreatedAt.Equal(b.CreatedAt) || !a.UpdatedAt.Equal(b.UpdatedAt) ||
		a.Hostname != b.Hostname || a.Paused != b.Paused || a.QuarantineReason != b.QuarantineReason ||
		len(a.LabelList) != len(b.LabelList) || (a.LabelList == nil) != (b.LabelList == nil) {
		return false
	}
	for i := range a.LabelList {
		if a.LabelList[i] != b.LabelList[i] {
			return false
		}
	}
	if (a.IPAddress == nil) != (b.IPAddress == nil) || a.IPAddress != nil && *a.IPAddress != *b.IPAddress {
		return false
	}
	for _, p := range [][2]*time.Time{{a.LastSeenAt, b.LastSeenAt}, {a.EnrolledAt, b.EnrolledAt}, {a.QuarantinedAt, b.QuarantinedAt}} {
		if (p[0] == nil) != (p[1] == nil) || p[0] != nil && !p[0].Equal(*p[1]) {
			return false
		}
	}
	return true
}

// TestPreparedReadsSurviveTerminatedBackends terminates every backend of the store's pools
// after the prepared statements ran on them: the next reads, anonymous and signed in, answer at
// once (database/sql retries on a fresh connection and prepares the statements there).
func TestPreparedReadsSurviveTerminatedBackends(t *testing.T) {
	x, ctx := seeded(t, 200)
	s := dbtest.Store(t, x, db.Options{StatsTTL: -1, MaxOpenConns: 2})
	up := db.StatusUp
	reads := func(ctx context.Context) error {
		page, err := s.ListDevices(ctx, db.ListParams{First: 20, Filter: db.DeviceFilter{Status: &up}})
		if err != nil {
			return err
		}
		if _, err := s.Device(ctx, page.Devices[0].ID); err != nil {
			return err
		}
		_, err = s.GPUsByDevice(ctx, []string{page.Devices[0].ID, page.Devices[1].ID})
		return err
	}
	for _, c := range []context.Context{ctx, db.Anonymous(ctx)} {
		for range 8 { // past the fifth execution: generic plans where PostgreSQL picks them
			if err := reads(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	var killed int
	if err := x.Get(&killed, `SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename IN ($1, $2)`,
		db.RoleApp, db.RoleExplorer); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no backend to terminate")
	}
	for _, c := range []context.Context{ctx, db.Anonymous(ctx)} {
		if err := reads(c); err != nil {
			t.Fatalf("reads after %d backends were terminated: %v", killed, err)
		}
	}
}

// TestPreparedReadAfterResultTypeChange changes the type of a column a prepared statement
// returns (as a migration applied by another instance may): PostgreSQL refuses the cached plan,
// and the read prepares the statement again instead of failing.
func TestPreparedReadAfterResultTypeChange(t *testing.T) {
	x, ctx := seeded(t, 50)
	s := db.New(x, db.Options{StatsTTL: -1, MaxOpenConns: 1}) // one connection: the statement's
	page, err := s.ListDevices(ctx, db.ListParams{First: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := page.Devices[0].ID
	for range 3 {
		if _, err := s.Device(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	owner := dbtest.AsRole(t, x, db.RoleOwner)
	if _, err := owner.Exec(`ALTER TABLE devices ALTER COLUMN hostname TYPE varchar(300)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, id); err != nil {
		t.Fatalf("device after the column's type changed: %v", err)
	}
}

// TestGPUsByDeviceOrdersScatteredRows moves a device's first GPU row to the end of the table
// (an UPDATE writes a new row version), so the rows of that device no longer come together and
// in index order: GPUsByDevice still returns each device's GPUs complete and by index.
func TestGPUsByDeviceOrdersScatteredRows(t *testing.T) {
	x, ctx := seeded(t, 100)
	s := db.New(x, db.Options{StatsTTL: -1})
	var ids []string
	if err := x.Select(&ids, `SELECT device_id FROM gpus GROUP BY device_id HAVING count(*) >= 3
		ORDER BY device_id LIMIT 3`); err != nil {
		t.Fatal(err)
	}
	if len(ids) < 3 {
		t.Fatal("the seed has too few devices with 3 GPUs")
	}
	// ids[1]'s GPU 0 and ids[0]'s GPU 1 move to the end: both devices come in two runs.
	if _, err := x.Exec(`UPDATE gpus SET memory_mib = memory_mib WHERE (device_id, idx) IN (($1, 0), ($2, 1))`,
		ids[1], ids[0]); err != nil {
		t.Fatal(err)
	}
	var want []db.GPU
	if err := x.Select(&want, `SELECT device_id, idx, uuid, model, pci_device_id, memory_mib, architecture,
		compute_capability, verification_level FROM gpus WHERE device_id = ANY($1) ORDER BY device_id, idx`,
		pq.StringArray(ids)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GPUsByDevice(ctx, append(ids, "00000000-0000-4000-8000-000000000000"))
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := got["00000000-0000-4000-8000-000000000000"]; !ok || g == nil || len(g) != 0 {
		t.Errorf("a device without GPUs: %v, %v; want an empty list", g, ok)
	}
	var flat []db.GPU
	for _, id := range ids {
		flat = append(flat, got[id]...)
	}
	if len(flat) != len(want) {
		t.Fatalf("%d GPUs, want %d", len(flat), len(want))
	}
	for i := range want {
		if flat[i] != want[i] {
			t.Errorf("GPU %d: %+v, want %+v", i, flat[i], want[i])
		}
	}
}

// TestExplorerDSNSendsOneRoundTrip: the explorer pool's connections use lib/pq's
// binary_parameters, in both forms of connection string.
func TestExplorerDSNSendsOneRoundTrip(t *testing.T) {
	for _, dsn := range []string{"postgres://u@h/db?sslmode=disable&binary_parameters=no", "host=h dbname=db"} {
		got, err := db.ExplorerDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "binary_parameters=yes") || strings.Contains(got, "binary_parameters=no") {
			t.Errorf("ExplorerDSN(%q) = %q, want binary_parameters=yes", dsn, got)
		}
	}
}

// TestPreparedReadsSeeRevokes: privileges are checked at each execution of a prepared statement,
// so a REVOKE of the read's table stops it at once and a GRANT brings it back.
func TestPreparedReadsSeeRevokes(t *testing.T) {
	x, ctx := seeded(t, 20)
	s := db.New(dbtest.AsRole(t, x, db.RoleApp), db.Options{StatsTTL: -1, MaxOpenConns: 1})
	page, err := s.ListDevices(ctx, db.ListParams{First: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := page.Devices[0].ID
	for range 6 {
		if _, err := s.Device(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.Exec(`REVOKE SELECT ON devices FROM ` + db.RoleApp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, id); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("prepared read after REVOKE: %v, want permission denied", err)
	}
	if _, err := x.Exec(`GRANT SELECT ON devices TO ` + db.RoleApp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, id); err != nil {
		t.Fatalf("prepared read after GRANT: %v", err)
	}
}
