package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// The database roles (docs/postgresql.md, "Database roles"). Migration 00009 grants to the app
// and explorer roles; the owner is whichever role runs the migrations (this one in zero-config
// mode).
const (
	RoleOwner    = "gpugate_owner"    // owns the tables, runs migrations, seed and users import
	RoleApp      = "gpugate_app"      // the gateway: rows, but audit rows only INSERT and SELECT
	RoleExplorer = "gpugate_explorer" // anonymous reads: the views of ExplorerSchema only
	// ExplorerSchema holds views with the names and columns of the tables anonymous reads use,
	// owner-only columns replaced by constants; explorer connections search it first.
	ExplorerSchema = "explorer"
)

// ErrExplorerUnavailable is returned (wrapped) by OpenExplorer when the explorer connection cannot
// read the explorer views.
var ErrExplorerUnavailable = errors.New("the explorer connection cannot read the explorer views")

type anonymousKey struct{}

// Anonymous returns ctx marked as a request that carries no verified credential (no user token,
// no device signature): the public read methods then use the explorer pool, if one is set.
func Anonymous(ctx context.Context) context.Context {
	return context.WithValue(ctx, anonymousKey{}, true)
}

// IsAnonymous reports whether ctx was marked by Anonymous.
func IsAnonymous(ctx context.Context) bool {
	v, _ := ctx.Value(anonymousKey{}).(bool)
	return v
}

// reader is the pool the public read methods (Device, ListDevices, SearchDevices,
// GPUsByDevice, NetworkStats) query: for an anonymous request a read replica that is up
// (replicas.go), else the explorer pool when one is set, else the app pool. Everything else
// (writes, signed-in reads, authorization checks) uses d.x, the primary.
func (d *DB) reader(ctx context.Context) sqlx.QueryerContext {
	if d.replicas != nil && IsAnonymous(ctx) {
		if r := d.replicas.pick(); r != nil {
			return r.q
		}
	}
	x, _ := d.primaryReadPool(ctx)
	return x
}

// readPool is reader with the statements prepared on that pool.
func (d *DB) readPool(ctx context.Context) (queryer, *stmtCache) {
	if d.replicas != nil && IsAnonymous(ctx) {
		if r := d.replicas.pick(); r != nil {
			return r.q, r.stmts
		}
	}
	return d.primaryReadPool(ctx)
}

// primaryReadPool is readPool without replicas: the primary's explorer pool for an anonymous
// request when one is set, else the app pool.
func (d *DB) primaryReadPool(ctx context.Context) (*sqlx.DB, *stmtCache) {
	if d.explorer != nil && IsAnonymous(ctx) {
		return d.explorer, d.explorerStmts
	}
	return d.x, d.appStmts
}

// SetExplorer makes x (from OpenExplorer) the pool of anonymous reads; Close closes it. Call it
// before serving.
func (d *DB) SetExplorer(x *sqlx.DB) {
	d.explorer = x
	d.explorerStmts = d.newStmtCache(x.DB)
}

// ExplorerDSN returns dsn (a URL or key=value connection string) with search_path set to
// ExplorerSchema, so unqualified table names resolve to the explorer views, and lib/pq's
// binary_parameters on: the explorer's statements that are not prepared (listings with several
// filters, search) then take one round trip instead of two (parse, then bind and execute);
// none of its parameters is a []byte, the one kind that option sends differently. It returns an
// error for a malformed URL.
func ExplorerDSN(dsn string) (string, error) {
	return withParams(dsn, "explorer database URL", "search_path", ExplorerSchema, "binary_parameters", "yes")
}

// PoolerDSN returns dsn with lib/pq's binary_parameters on, for an explorer connection through
// a transaction-pooling PgBouncer: without it lib/pq sends a statement with parameters in two
// exchanges (parse and describe, sync; then bind and execute), and the pooler may hand the
// second to another server connection, which does not know the statement ("unnamed prepared
// statement does not exist"). The explorer's statements pass no []byte, the one kind that
// option sends differently (see pooler.go for the app pool). It returns an error for a
// malformed URL.
func PoolerDSN(dsn string) (string, error) {
	return withParams(dsn, "database URL", "binary_parameters", "yes")
}

// explorerDSN is the DSN of an anonymous-read pool of this store: ExplorerDSN, or behind a
// transaction pooler PoolerDSN alone, since PgBouncer refuses a connection that sets a startup
// parameter it does not track (search_path): the explorer role then needs its search_path set
// on the server (ALTER ROLE ... SET search_path, done by PrepareLocalRoles), which OpenExplorer
// and the replica checks verify.
func (d *DB) explorerDSN(dsn string) (string, error) {
	if d.noPrepare {
		return PoolerDSN(dsn)
	}
	return ExplorerDSN(dsn)
}

// withParams returns dsn with the key/value pairs kv set (replacing the same keys).
func withParams(dsn, what string, kv ...string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// lib/pq turns the URL's query parameters into keys (its deprecated ParseURL, which
		// this used to call, does the same); Set replaces a value the URL had.
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		q := u.Query()
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	// lib/pq sends unknown keys as run-time parameters; a later key overrides an earlier one.
	out := dsn
	for i := 0; i+1 < len(kv); i += 2 {
		out += " " + kv[i] + "=" + kv[i+1]
	}
	return strings.TrimSpace(out), nil
}

// ExplorerCheck is what OpenExplorer found about its connection.
type ExplorerCheck struct {
	User string // the role the connection runs as
	// LeastPrivilege: the role can read no table outside the explorer schema that the views
	// read (devices, gpus); false when it also reads them directly, as the app role does.
	LeastPrivilege bool
}

// OpenExplorer opens the pool of anonymous reads at dsn (search_path forced to ExplorerSchema,
// see ExplorerDSN), with at most maxConns connections, and checks that it reads the explorer
// views. It returns an error wrapping ErrExplorerUnavailable when it does not (the views are
// missing or the role may not read them), or the connection's error.
func OpenExplorer(ctx context.Context, dsn string, maxConns int) (*sqlx.DB, ExplorerCheck, error) {
	edsn, err := ExplorerDSN(dsn)
	if err != nil {
		return nil, ExplorerCheck{}, err
	}
	return openExplorer(ctx, edsn, maxConns)
}

// OpenExplorer is the package's OpenExplorer for this store: behind a transaction pooler
// (Options.TransactionPooler) the connection string sets no search_path (see explorerDSN), so
// the explorer role must have it set on the server; the checks and errors are the same.
func (d *DB) OpenExplorer(ctx context.Context, dsn string, maxConns int) (*sqlx.DB, ExplorerCheck, error) {
	edsn, err := d.explorerDSN(dsn)
	if err != nil {
		return nil, ExplorerCheck{}, err
	}
	return openExplorer(ctx, edsn, maxConns)
}

func openExplorer(ctx context.Context, edsn string, maxConns int) (*sqlx.DB, ExplorerCheck, error) {
	var c ExplorerCheck
	x, err := sqlx.Open("postgres", edsn)
	if err != nil {
		return nil, c, fmt.Errorf("open explorer database: %w", err)
	}
	if maxConns <= 0 {
		maxConns = 10
	}
	x.SetMaxOpenConns(maxConns)
	x.SetMaxIdleConns(maxConns)
	x.SetConnMaxIdleTime(5 * time.Minute) // as New
	var probe struct {
		User    string         `db:"usr"`
		Current sql.NullString `db:"cur"`
		Direct  bool           `db:"direct"`
	}
	// current_schema() skips schemas the role may not use: it is the explorer schema only when
	// the views resolve first. has_any_column_privilege also sees column grants.
	err = x.GetContext(ctx, &probe, `SELECT current_user AS usr, current_schema() AS cur,
		EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		        WHERE n.nspname <> $1 AND c.relname IN ('devices', 'gpus') AND c.relkind IN ('r', 'p')
		          AND has_any_column_privilege(c.oid, 'SELECT')) AS direct`, ExplorerSchema)
	if err == nil && probe.Current.String != ExplorerSchema {
		err = fmt.Errorf("%w: role %s has no usage on schema %s (apply the migrations, then the grants of docs/postgresql.md)",
			ErrExplorerUnavailable, probe.User, ExplorerSchema)
	}
	if err == nil {
		// Every view the public reads use.
		_, err = x.ExecContext(ctx, `SELECT FROM devices LIMIT 0; SELECT FROM gpus LIMIT 0`)
		if err != nil {
			err = fmt.Errorf("%w: role %s: %v", ErrExplorerUnavailable, probe.User, err)
		}
	}
	if err != nil {
		_ = x.Close()
		return nil, c, fmt.Errorf("explorer database: %w", err)
	}
	return x, ExplorerCheck{User: probe.User, LeastPrivilege: !probe.Direct}, nil
}

// PrepareLocalRoles runs as the superuser of a cluster gpugate runs itself (zero-config mode and
// tests; trusted unix socket, no passwords) on the database super is connected to: it creates
// the three roles as login roles when absent, makes RoleOwner the owner of the database and of
// every table, view, sequence, function and schema of schemas public and explorer that another
// role owns (a data directory migrated as the superuser before the roles existed), and returns
// nil. Objects of extensions keep their owner. An error says which step failed.
func PrepareLocalRoles(ctx context.Context, super *sql.DB) error {
	if _, err := super.ExecContext(ctx, prepareLocalRolesSQL); err != nil {
		return fmt.Errorf("prepare database roles: %w", err)
	}
	return nil
}

const prepareLocalRolesSQL = `DO $prepare$
DECLARE
    r text;
    o record;
BEGIN
    FOREACH r IN ARRAY ARRAY['` + RoleOwner + `', '` + RoleApp + `', '` + RoleExplorer + `'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        ELSE
            EXECUTE format('ALTER ROLE %I LOGIN', r);
        END IF;
    END LOOP;
    -- The explorer's search_path on the server too, for connections that cannot set it at
    -- start (a transaction-pooling PgBouncer refuses the startup parameter: docs/postgresql.md,
    -- "PgBouncer"). Its other connections set the same value themselves.
    ALTER ROLE ` + RoleExplorer + ` SET search_path = ` + ExplorerSchema + `;
    EXECUTE format('ALTER DATABASE %I OWNER TO ` + RoleOwner + `', current_database());
    -- PostgreSQL 15 gives schema public to the database owner (pg_database_owner); earlier
    -- versions to the bootstrap superuser.
    IF NOT EXISTS (SELECT FROM pg_namespace n JOIN pg_roles a ON a.oid = n.nspowner
                   WHERE n.nspname = 'public' AND a.rolname IN ('pg_database_owner', '` + RoleOwner + `')) THEN
        ALTER SCHEMA public OWNER TO ` + RoleOwner + `;
    END IF;
    FOR o IN SELECT n.nspname FROM pg_namespace n WHERE n.nspname = 'explorer'
               AND n.nspowner <> '` + RoleOwner + `'::regrole LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO ` + RoleOwner + `', o.nspname);
    END LOOP;
    -- Tables (their indexes, triggers and owned sequences follow), views, free sequences.
    FOR o IN SELECT c.oid::regclass AS name,
                    CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                   WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                   ELSE 'TABLE' END AS kind
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'explorer') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND c.relowner <> '` + RoleOwner + `'::regrole
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i')) LOOP
        EXECUTE format('ALTER %s %s OWNER TO ` + RoleOwner + `', o.kind, o.name);
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure AS name, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END AS kind
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN ('public', 'explorer') AND p.prokind IN ('f', 'p')
               AND p.proowner <> '` + RoleOwner + `'::regrole
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                               AND d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE format('ALTER %s %s OWNER TO ` + RoleOwner + `', o.kind, o.name);
    END LOOP;
END
$prepare$`
