package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
)

// roleFlags name the connections of the database roles other than the gateway's own
// (docs/postgresql.md, "Database roles"); DATABASE_URL stays the app role's.
type roleFlags struct {
	explorerURL, migrationURL *string
	explorerConns             *int
	pool                      poolFlags // replicas and pooler (cli/replicas.go)
}

func addRoleFlags(f *envFlags) roleFlags {
	return roleFlags{
		explorerURL: f.String("explorer-database-url", "GPUGATE_EXPLORER_DATABASE_URL", "",
			"PostgreSQL URL of the role anonymous reads run as (gpugate_explorer: the explorer views only); "+
				"empty with DATABASE_URL: the app role reads through the explorer views (zero-config: gpugate_explorer)"),
		migrationURL: f.String("migration-database-url", "GPUGATE_MIGRATION_DATABASE_URL", "",
			"PostgreSQL URL of the owner role that runs migrations, seed and users import (empty: DATABASE_URL; zero-config: gpugate_owner)"),
		explorerConns: f.Int("explorer-db-max-conns", "GPUGATE_EXPLORER_DB_MAX_CONNS", 10,
			"maximum open connections of the anonymous-read pool (and of each read replica's), besides --db-max-conns"),
		pool: addPoolFlags(f),
	}
}

// roleDSNs are the connection strings the process uses besides the app's.
type roleDSNs struct {
	owner    string // migrations, seed, users import; "" = the app's
	explorer string // anonymous reads; "" = the app's, through the explorer views
	// explicit: the explorer connection was configured (zero-config or the flag): failing to
	// open it stops the gateway instead of degrading.
	explicit bool
	conns    int
	app      string // the app role's (DATABASE_URL)
}

// localRoles prepares the roles of the gateway's own PostgreSQL (as its superuser) and returns
// the app role's DSN for database dbname; the owner's and explorer's go to d.roles. It returns
// the error of connecting or of preparing the roles.
func (d *database) localRoles(ctx context.Context, srv *pglocal.Server, dbname string, f roleFlags) (string, error) {
	super, err := sql.Open("postgres", srv.DSN(dbname))
	if err != nil {
		return "", err
	}
	defer super.Close()
	if err := db.PrepareLocalRoles(ctx, super); err != nil {
		return "", err
	}
	d.roles = roleDSNs{owner: srv.DSNAs(db.RoleOwner, dbname), explorer: srv.DSNAs(db.RoleExplorer, dbname),
		explicit: true, conns: *f.explorerConns}
	return srv.DSNAs(db.RoleApp, dbname), nil
}

// urlRoles takes the roles' connections from the flags (DATABASE_URL set).
func (d *database) urlRoles(f roleFlags) {
	d.roles = roleDSNs{owner: *f.migrationURL, explorer: *f.explorerURL, explicit: *f.explorerURL != "", conns: *f.explorerConns}
}

// asOwner runs fn with a store connected as the owner role (the app's store when no owner URL is
// configured) and closes it; it returns the error of connecting or fn's.
func (d *database) asOwner(ctx context.Context, fn func(owner *db.DB) error) error {
	if d.roles.owner == "" {
		return fn(d.store)
	}
	owner, err := db.Open(ctx, d.roles.owner, db.Options{MaxOpenConns: 2})
	if err != nil {
		return fmt.Errorf("owner role: %w", err)
	}
	defer owner.Close()
	return fn(owner)
}

// attachExplorer opens the pool of anonymous reads and gives it to the store, logging which mode
// is in effect. The app role through the explorer views, when the explorer role is not configured
// and that fails, degrades with a warning to the app pool (the tables); a configured explorer
// role that fails is an error. Call it after migrating.
func (d *database) attachExplorer(ctx context.Context, log *slog.Logger) error {
	dsn := d.roles.explorer
	if dsn == "" {
		dsn = d.roles.app
	}
	x, check, err := d.store.OpenExplorer(ctx, dsn, d.roles.conns)
	switch {
	case err != nil && d.roles.explicit:
		return err
	case err != nil:
		if !errors.Is(err, db.ErrExplorerUnavailable) {
			return err
		}
		log.Warn("anonymous reads use the app role on the tables: grant it the explorer views, "+
			"or set --explorer-database-url (docs/postgresql.md, \"Database roles\")", "err", err)
		return nil
	}
	d.store.SetExplorer(x)
	mode := "explorer role"
	if !d.roles.explicit {
		mode = "app role through the explorer views"
	}
	if check.LeastPrivilege {
		log.Info("anonymous reads: explorer views only", "mode", mode, "role", check.User)
	} else {
		log.Warn("anonymous reads: explorer views, but the role can also read the tables; "+
			"set --explorer-database-url to a role that cannot (docs/postgresql.md, \"Database roles\")", "mode", mode, "role", check.User)
	}
	return nil
}

// warnAuditPrivileges logs a warning when the gateway's own role can delete or rewrite audit
// rows (it owns the table, typically because one DATABASE_URL both migrates and serves): the
// audit log is then append-only only by convention. It never fails the start: the check is
// advice, and a database that cannot answer it has already failed elsewhere.
func (d *database) warnAuditPrivileges(ctx context.Context, log *slog.Logger) {
	var canErase bool
	err := d.store.SQL().GetContext(ctx, &canErase, `SELECT to_regclass('audit_events') IS NOT NULL
		AND (has_table_privilege(current_user, 'audit_events', 'DELETE')
		  OR has_table_privilege(current_user, 'audit_events', 'TRUNCATE'))`)
	if err == nil && canErase {
		log.Warn("the gateway's database role can delete audit rows: migrate as a separate owner role " +
			"(--migration-database-url) so the gateway can only append (docs/postgresql.md, \"Database roles\")")
	}
}
