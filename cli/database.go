package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
)

// database is an open store and, in zero-config mode, the PostgreSQL the gateway started.
type database struct {
	store    *db.DB
	local    *pglocal.Server
	embedded bool
	dsn      string   // for connections outside the pool (the kill switches' listener): the direct URL
	direct   string   // --database-direct-url, else the database URL (cli/replicas.go)
	roles    roleDSNs // the owner's and the explorer's connections (roles.go)
}

func (d *database) close(log *slog.Logger) {
	if d.store != nil {
		_ = d.store.Close()
	}
	if d.local != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.local.Stop(ctx); err != nil {
			log.Error("stopping PostgreSQL", "err", err)
		}
	}
}

func openDatabase(ctx context.Context, f dbFlags, o db.Options, log *slog.Logger) (*database, error) {
	out := &database{}
	dsn := *f.url
	if dsn == "" {
		out.embedded = true
		log.Info("no DATABASE_URL: starting the gateway's own PostgreSQL", "data_dir", *f.dataDir)
		if err := checkDataDir(*f.dataDir); err != nil {
			return nil, err
		}
		srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: *f.dataDir, BinDir: *f.pgBin, Logger: log})
		if err != nil {
			return nil, err
		}
		out.local = srv
		if err := srv.EnsureDatabase(ctx, "gpugate"); err != nil {
			out.close(log)
			return nil, err
		}
		if dsn, err = out.localRoles(ctx, srv, "gpugate", f.roles); err != nil {
			out.close(log)
			return nil, err
		}
	} else {
		out.urlRoles(f.roles)
	}
	out.roles.app = dsn
	opts := db.Options{MaxOpenConns: *f.maxConns, StatsTTL: o.StatsTTL, MaxOpenChallenges: o.MaxOpenChallenges}
	dsn, err := out.poolerSetup(f.roles.pool, dsn, &opts) // --database-pooler (cli/replicas.go)
	if err != nil {
		out.close(log)
		return nil, err
	}
	store, err := db.Open(ctx, dsn, opts)
	if err != nil {
		out.close(log)
		return nil, err
	}
	out.store, out.dsn = store, out.direct
	if err := out.attachSession(ctx); err != nil {
		out.close(log)
		return nil, err
	}
	return out, nil
}

// oneShot is the database half of a one-shot command (migrate, seed, users import): Run opens
// the database (the embedded one without DATABASE_URL), Close closes it.
type oneShot struct {
	dbf dbFlags
	log *slog.Logger
	d   *database
}

// open opens the database, logging at level; it returns the error of the logger or of opening.
func (c *oneShot) open(ctx context.Context, level string) (*database, error) {
	log, err := newLogger("text", level, os.Stderr)
	if err != nil {
		return nil, err
	}
	c.log = log
	d, err := openDatabase(ctx, c.dbf, db.Options{}, log)
	if err != nil {
		return nil, err
	}
	c.d = d
	return d, nil
}

// Close closes the database and stops the embedded PostgreSQL, if open was called; it
// returns nil (failures to stop are logged).
func (c *oneShot) Close() error {
	if c.d != nil {
		c.d.close(c.log)
		c.d = nil
	}
	return nil
}

// checkDataDir creates dir (as PostgreSQL's data directory is created: 0700) and checks that
// this user can write in it, so that a data dir this user cannot use fails with what to do
// instead of PostgreSQL's own error. Root is not checked: it can write anywhere, and pglocal
// hands the directory to PostgreSQL's unprivileged user. It returns an error naming the
// directory, the permission problem, and the flag and variable to choose another.
func checkDataDir(dir string) error {
	if os.Geteuid() == 0 {
		return nil
	}
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".write-test-*"); err == nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return nil
		}
	}
	who := "this user"
	if u, uerr := user.Current(); uerr == nil {
		who = "user " + u.Username
	}
	// Name the directory that refuses, with its owner and mode.
	blame := ""
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if fi, serr := os.Stat(d); serr == nil {
			blame = fmt.Sprintf(" (%s has mode %v)", d, fi.Mode())
			break
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return fmt.Errorf("data dir %s: %w: %s cannot create or write it%s; "+
		"choose a directory %s can write with --data-dir or GPUGATE_DATA_DIR (default for a user other than root: %s), "+
		"or set DATABASE_URL to use an existing PostgreSQL", dir, err, who, blame, who, defaultDataDir())
}
