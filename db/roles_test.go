package db_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// wantDenied fails unless err is PostgreSQL's insufficient_privilege (42501).
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) || pqErr.Code != "42501" {
		t.Errorf("%s: %v; want permission denied (42501)", what, err)
	}
}

// The explorer role reads the explorer views only: every table is refused, the owner-only
// columns of the views are empty, removed devices are absent, and nothing can be written.
func TestExplorerRoleReadsOnlyPublicColumns(t *testing.T) {
	f := newFixture(t)
	owner := f.user("alice")
	dev := f.enrollGPUs(owner, 2)
	f.exec(`UPDATE devices SET labels = '{rack-7}', paused = true, quarantine_reason = 'x' WHERE id = $1`, dev.ID)
	gone := f.enrollGPUs(owner, 1)
	if err := f.store.RemoveDevice(f.ctx, gone.ID, owner); err != nil {
		t.Fatal(err)
	}
	ex := dbtest.AsRole(t, f.x, db.RoleExplorer)

	for _, table := range []string{"devices", "gpus", "users", "user_identities", "device_credentials",
		"attestations", "enrollment_tokens", "challenges", "device_addresses", "device_review_findings",
		"gpu_claim_conflicts", "gpu_claim_transfers", "gpu_hardware", "audit_events", "goose_db_version"} {
		_, err := ex.ExecContext(f.ctx, `SELECT * FROM public.`+table+` LIMIT 1`)
		wantDenied(t, "explorer reads public."+table, err)
	}
	_, err := ex.ExecContext(f.ctx, `SELECT owner_id FROM public.devices`)
	wantDenied(t, "explorer reads public.devices.owner_id", err)

	var row struct {
		Owner      string         `db:"owner_id"`
		Name       string         `db:"name"`
		Hostname   string         `db:"hostname"`
		IP         sql.NullString `db:"ip_address"`
		Labels     pq.StringArray `db:"labels"`
		Enrolled   *time.Time     `db:"enrolled_at"`
		Paused     bool           `db:"paused"`
		Reason     string         `db:"quarantine_reason"`
		Snapshot   sql.NullString `db:"enrollment_snapshot"`
		Heartbeat  sql.NullString `db:"heartbeat"`
		Quarantine *time.Time     `db:"quarantined_at"`
	}
	// Unqualified, as the gateway's SQL is: search_path resolves devices to the view.
	if err := ex.GetContext(f.ctx, &row, `SELECT owner_id, name, hostname, host(ip_address) AS ip_address, labels,
		enrolled_at, paused, quarantine_reason, enrollment_snapshot::text AS enrollment_snapshot,
		heartbeat::text AS heartbeat, quarantined_at FROM devices WHERE id = $1`, dev.ID); err != nil {
		t.Fatal(err)
	}
	if row.Name != f.row(dev.ID).Name || row.Owner != "00000000-0000-0000-0000-000000000000" || row.Hostname != "" ||
		row.IP.Valid || row.Labels != nil || row.Enrolled != nil || row.Paused || row.Reason != "" ||
		row.Snapshot.Valid || row.Heartbeat.Valid || row.Quarantine != nil {
		t.Fatalf("explorer view of the device = %+v; want its public columns only", row)
	}
	var serials []sql.NullString
	if err := ex.SelectContext(f.ctx, &serials, `SELECT serial FROM gpus WHERE device_id = $1`, dev.ID); err != nil || len(serials) != 2 {
		t.Fatalf("explorer gpus: %v, %v", serials, err)
	}
	for _, s := range serials {
		if s.Valid {
			t.Fatalf("explorer reads a GPU serial %q", s.String)
		}
	}
	var n int
	if err := ex.GetContext(f.ctx, &n, `SELECT count(*) FROM devices WHERE id = $1`, gone.ID); err != nil || n != 0 {
		t.Fatalf("explorer sees %d rows of a removed device (%v)", n, err)
	}
	_, err = ex.ExecContext(f.ctx, `UPDATE devices SET name = 'pwned' WHERE id = $1`, dev.ID)
	wantDenied(t, "explorer updates the devices view", err)
	_, err = ex.ExecContext(f.ctx, `DELETE FROM gpus`)
	wantDenied(t, "explorer deletes from the gpus view", err)
	_, err = ex.ExecContext(f.ctx, `CREATE TABLE explorer.x (i int)`)
	wantDenied(t, "explorer creates a table", err)
}

// A store with an explorer pool answers every public read of an anonymous request from it, with
// the same public data as the app pool and nothing owner-only; other requests use the app pool.
func TestAnonymousReadsUseTheExplorerPool(t *testing.T) {
	f := newFixture(t)
	owner := f.user("alice")
	dev := f.enrollGPUs(owner, 2)
	f.enrollGPUs(f.user("bob"), 1)
	s := dbtest.Store(t, f.x, db.Options{StatsTTL: -1})
	anon := db.Anonymous(f.ctx)

	signed, err := s.Device(f.ctx, dev.ID)
	if err != nil || signed.Hostname != "node-1.internal" || signed.OwnerID != owner {
		t.Fatalf("signed-in read: %+v, %v", signed, err)
	}
	pub, err := s.Device(anon, dev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pub.Hostname != "" || pub.IPAddress != nil || pub.OwnerID == owner || pub.EnrolledAt != nil {
		t.Fatalf("anonymous read has owner data: %+v", pub)
	}
	if pub.Name != signed.Name || pub.Status != signed.Status || pub.Region != signed.Region ||
		pub.DeviceLevel != signed.DeviceLevel || pub.GPUCount != signed.GPUCount || !pub.CreatedAt.Equal(signed.CreatedAt) {
		t.Fatalf("anonymous read %+v differs from %+v in public columns", pub, signed)
	}

	// Every order and filter, and search, return the same devices on both pools.
	model, region := signed.GPUModel, signed.Region
	level := signed.DeviceLevel
	params := []db.ListParams{{First: 10}, {First: 10, Filter: db.DeviceFilter{GPUModel: &model, Region: &region}},
		{First: 10, Filter: db.DeviceFilter{Status: &signed.Status, Verification: &signed.Verification, Level: &level}}}
	for _, o := range []db.DeviceOrder{{Field: db.OrderCreatedAt, Direction: db.Asc}, {Field: db.OrderCreatedAt, Direction: db.Desc},
		{Field: db.OrderName, Direction: db.Asc}, {Field: db.OrderName, Direction: db.Desc},
		{Field: db.OrderVerificationLevel, Direction: db.Asc}, {Field: db.OrderVerificationLevel, Direction: db.Desc}} {
		params = append(params, db.ListParams{First: 1, Order: o})
	}
	for _, p := range params {
		a, err := s.ListDevices(anon, p)
		if err != nil {
			t.Fatalf("anonymous list %+v: %v", p, err)
		}
		b, err := s.ListDevices(f.ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ids(a), ids(b)) || len(a.Devices) == 0 || a.HasNext != b.HasNext {
			t.Fatalf("list %+v: anonymous %v, signed in %v", p, ids(a), ids(b))
		}
		if p.First == 1 && a.HasNext { // the next page through the cursor
			n, err := s.ListDevices(anon, db.ListParams{First: 1, Order: p.Order, After: a.Cursor(0)})
			if err != nil || len(n.Devices) != 1 {
				t.Fatalf("anonymous next page %+v: %v", p.Order, err)
			}
		}
		for _, d := range a.Devices {
			if d.Hostname != "" || d.OwnerID == owner {
				t.Fatalf("anonymous list has owner data: %+v", d)
			}
		}
	}
	for _, q := range []string{signed.Name[:4], strings.ReplaceAll(dev.ID, "-", "")[:8]} {
		a, err := s.SearchDevices(anon, q, 10, "")
		if err != nil || len(a.Devices) == 0 || a.Devices[0].Hostname != "" {
			t.Fatalf("anonymous search %q: %v, %v", q, ids(a), err)
		}
	}
	sa, err := s.NetworkStats(anon)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := s.NetworkStats(f.ctx)
	if sa.Devices != 2 || sa.GPUs != 3 || sa.Devices != sb.Devices || len(sa.ByRegion) != len(sb.ByRegion) {
		t.Fatalf("anonymous stats %+v, signed in %+v", sa, sb)
	}
	ga, err := s.GPUsByDevice(anon, []string{dev.ID})
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := s.GPUsByDevice(f.ctx, []string{dev.ID})
	if len(ga[dev.ID]) != 2 || !reflect.DeepEqual(ga, gb) {
		t.Fatalf("anonymous gpus %+v, signed in %+v", ga, gb)
	}

	// Proof of routing: take the explorer's access away; anonymous reads fail, others work.
	f.exec(`REVOKE SELECT ON explorer.devices FROM ` + db.RoleExplorer)
	if _, err := s.Device(anon, dev.ID); err == nil {
		t.Fatal("an anonymous read succeeded without the explorer's grant: it did not use the explorer pool")
	}
	if _, err := s.Device(f.ctx, dev.ID); err != nil {
		t.Fatalf("a signed-in read failed with the explorer's grant revoked: %v", err)
	}
}

func ids(p db.Page) []string {
	out := make([]string, len(p.Devices))
	for i, d := range p.Devices {
		out[i] = d.ID
	}
	return out
}

// The app role appends audit rows and reads them, purges old ones only through the function, and
// can neither change nor remove them, nor record migrations, nor change the schema.
func TestAppRoleCannotRewriteAudit(t *testing.T) {
	f := newFixture(t)
	app := dbtest.AsRole(t, f.x, db.RoleApp)
	ctx := f.ctx
	if _, err := app.ExecContext(ctx, `INSERT INTO audit_events (at, principal, operation, outcome)
		VALUES (now() - interval '40 days', 'user:mallory', 'updateDevice', 'DENIED'),
		       (now(), 'user:mallory', 'updateDevice', 'DENIED')`); err != nil {
		t.Fatalf("app inserts audit rows: %v", err)
	}
	var n int
	if err := app.GetContext(ctx, &n, `SELECT count(*) FROM audit_events`); err != nil || n != 2 {
		t.Fatalf("app reads %d audit rows (%v)", n, err)
	}
	for _, q := range []string{
		`UPDATE audit_events SET outcome = 'SUCCEEDED'`,
		`DELETE FROM audit_events`,
		`TRUNCATE audit_events`,
		`INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`,
		`DELETE FROM goose_db_version`,
		`CREATE TABLE public.x (i int)`,
		`ALTER TABLE devices ADD COLUMN x int`,
		`DROP VIEW explorer.devices`,
		`UPDATE audit_policy SET min_retention = interval '1 day'`, // the owner's floor on purges
		`DELETE FROM audit_policy`,
	} {
		_, err := app.ExecContext(ctx, q)
		wantDenied(t, "app: "+q, err)
	}
	s := db.New(app, db.Options{})
	purged, err := s.PurgeAudit(ctx, time.Now())
	if err != nil || purged != 1 {
		t.Fatalf("app purges through gpugate_purge_audit: %d, %v; want the one row older than the 30-day floor", purged, err)
	}
	// Rows everywhere else: the gateway's own writes work under the role.
	if _, err := s.UserForIdentity(ctx, db.Identity{Issuer: "https://issuer.test", Subject: "app-role"}); err != nil {
		t.Fatalf("app provisions a user: %v", err)
	}
}

// Migrations run as the owner role: every object they create belongs to it (dbtest migrates as
// db.RoleOwner, as zero-config mode does).
func TestMigrationsRunAsOwner(t *testing.T) {
	f := newFixture(t)
	var others []string
	if err := f.x.SelectContext(f.ctx, &others, `SELECT c.oid::regclass::text || ' owned by ' || pg_get_userbyid(c.relowner)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('public', 'explorer') AND c.relowner <> $1::regrole
		  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`,
		db.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if len(others) > 0 {
		t.Fatalf("objects not owned by %s: %v", db.RoleOwner, others)
	}
	if v := scalar[int](f, `SELECT max(version_id) FROM goose_db_version`); v < 9 {
		t.Fatalf("migrated to %d", v)
	}
}

// A role that may not create roles and is not gpugate_owner migrates a database of its own: the
// roles, which exist in the cluster, get their grants on its tables.
func TestRolesMigrationByAnotherOwner(t *testing.T) {
	t.Parallel()
	role := appRole(t)
	dsn := emptyDatabase(t, role, role)
	if _, err := db.Migrate(context.Background(), open(t, dsn)); err != nil {
		t.Fatalf("migrate as %s: %v", role, err)
	}
	explorerDSN := strings.Replace(dsn, role+"@", db.RoleExplorer+"@", 1)
	ex, _, err := db.OpenExplorer(context.Background(), explorerDSN, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	_, err = ex.Exec(`SELECT FROM public.devices`)
	wantDenied(t, "explorer reads public.devices", err)
	app, err := sqlx.Open("postgres", strings.Replace(dsn, role+"@", db.RoleApp+"@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, err := app.Exec(`INSERT INTO users (email) VALUES ('a@example.test')`); err != nil {
		t.Fatalf("app writes a table migrated by %s: %v", role, err)
	}
	_, err = app.Exec(`DELETE FROM audit_events`)
	wantDenied(t, "app deletes audit rows", err)
}

// A zero-config data directory migrated as the superuser before the roles existed: preparing the
// roles hands every object to the owner, who then migrates, and the app and explorer roles work.
func TestPrepareLocalRolesAdoptsASuperuserSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := emptyDatabase(t, "", "")
	super := open(t, dsn)
	if _, err := db.Migrate(ctx, super); err != nil {
		t.Fatal(err)
	}
	// Back to before migration 00009, as an earlier binary left it (00010 and 00011 undone too).
	if _, err := super.ExecContext(ctx, `DROP SCHEMA explorer CASCADE; DROP TABLE audit_policy;
		DROP TABLE device_replays; DROP FUNCTION gpugate_retire_replays(), gpugate_replay_slot(timestamptz);
		DROP FUNCTION gpugate_notify_device_keys() CASCADE; DELETE FROM goose_db_version WHERE version_id >= 9;
		REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gpugate_app, gpugate_explorer`); err != nil {
		t.Fatal(err)
	}
	if err := db.PrepareLocalRoles(ctx, super); err != nil {
		t.Fatal(err)
	}
	as := func(role string) string { return strings.Replace(dsn, "gpugate@", role+"@", 1) }
	if applied, err := db.Migrate(ctx, open(t, as(db.RoleOwner))); err != nil || len(applied) != 3 {
		t.Fatalf("owner migrates: %v, %v", applied, err)
	}
	var others int
	if err := super.QueryRowContext(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('public', 'explorer') AND c.relowner <> $1::regrole
		  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')`, db.RoleOwner).Scan(&others); err != nil || others != 0 {
		t.Fatalf("%d objects not owned by %s (%v)", others, db.RoleOwner, err)
	}
	if _, err := open(t, as(db.RoleApp)).ExecContext(ctx, `INSERT INTO users (email) VALUES ('a@example.test')`); err != nil {
		t.Fatalf("app writes: %v", err)
	}
	ex, check, err := db.OpenExplorer(ctx, as(db.RoleExplorer), 1)
	if err != nil || !check.LeastPrivilege || check.User != db.RoleExplorer {
		t.Fatalf("explorer: %+v, %v", check, err)
	}
	ex.Close()
}

// The SQL docs/postgresql.md ("Database roles") gives an operator of a managed PostgreSQL, run as
// it says: the database part as an administrator, migrations as the owner, and the grants by hand
// as the owner (for roles created after the migration ran).
const (
	docsDatabaseSQL = `REVOKE ALL ON DATABASE %[1]s FROM PUBLIC;
GRANT CONNECT ON DATABASE %[1]s TO gpugate_app, gpugate_explorer;`
	docsSchemaSQL = `REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO gpugate_app;`
	docsGrantsSQL = `GRANT USAGE ON SCHEMA public TO gpugate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO gpugate_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO gpugate_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gpugate_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO gpugate_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON goose_db_version FROM gpugate_app;
REVOKE ALL ON audit_events FROM gpugate_app;
GRANT SELECT, INSERT ON audit_events TO gpugate_app;
GRANT EXECUTE ON FUNCTION gpugate_purge_audit(timestamptz, integer) TO gpugate_app;
GRANT USAGE ON SCHEMA explorer TO gpugate_app, gpugate_explorer;
GRANT SELECT ON ALL TABLES IN SCHEMA explorer TO gpugate_app, gpugate_explorer;
ALTER DEFAULT PRIVILEGES IN SCHEMA explorer GRANT SELECT ON TABLES TO gpugate_app, gpugate_explorer;`
)

func TestDocumentedManagedPostgresSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := emptyDatabase(t, db.RoleOwner, "")
	u, _ := url.Parse(dsn)
	name := strings.TrimPrefix(u.Path, "/")
	super := open(t, dsn)
	if _, err := super.ExecContext(ctx, fmt.Sprintf(docsDatabaseSQL, name)+docsSchemaSQL); err != nil {
		t.Fatal(err)
	}
	as := func(role string) string { return strings.Replace(dsn, "gpugate@", role+"@", 1) }
	owner := open(t, as(db.RoleOwner))
	if _, err := db.Migrate(ctx, owner); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		app := open(t, as(db.RoleApp))
		if _, err := app.ExecContext(ctx, `INSERT INTO users (email) VALUES ('a@example.test');
			INSERT INTO audit_events (at, principal, operation, outcome) VALUES (now(), 'anonymous', 'x', 'DENIED')`); err != nil {
			t.Fatalf("%s: app writes: %v", when, err)
		}
		_, err := app.ExecContext(ctx, `DELETE FROM audit_events`)
		wantDenied(t, when+": app deletes audit rows", err)
		ex, c, err := db.OpenExplorer(ctx, as(db.RoleExplorer), 1)
		if err != nil || !c.LeastPrivilege {
			t.Fatalf("%s: explorer: %+v, %v", when, c, err)
		}
		ex.Close()
		ax, _, err := db.OpenExplorer(ctx, as(db.RoleApp), 1)
		if err != nil {
			t.Fatalf("%s: app through the explorer views: %v", when, err)
		}
		ax.Close()
	}
	check("after migrating")
	// Roles that got no grants (created after the migration): the owner grants by hand.
	if _, err := owner.ExecContext(ctx, `REVOKE ALL ON ALL TABLES IN SCHEMA public, explorer FROM gpugate_app, gpugate_explorer;
		REVOKE ALL ON SCHEMA explorer FROM gpugate_app, gpugate_explorer`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.OpenExplorer(ctx, as(db.RoleExplorer), 1); !errors.Is(err, db.ErrExplorerUnavailable) {
		t.Fatalf("explorer without grants: %v; want ErrExplorerUnavailable", err)
	}
	if _, err := owner.ExecContext(ctx, docsGrantsSQL); err != nil {
		t.Fatal(err)
	}
	check("after the manual grants")
}
