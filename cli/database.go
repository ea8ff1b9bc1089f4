package cli

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
)

// database is an open store and, in zero-config mode, the PostgreSQL the gateway started.
type database struct {
	store    *db.DB
	local    *pglocal.Server
	embedded bool
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

func openDatabase(ctx context.Context, f dbFlags, statsTTL time.Duration, log *slog.Logger) (*database, error) {
	out := &database{}
	dsn := *f.url
	if dsn == "" {
		out.embedded = true
		log.Info("no DATABASE_URL: starting the gateway's own PostgreSQL", "data_dir", *f.dataDir)
		srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: *f.dataDir, BinDir: *f.pgBin, Logger: log})
		if err != nil {
			return nil, err
		}
		out.local = srv
		if err := srv.EnsureDatabase(ctx, "gpugate"); err != nil {
			out.close(log)
			return nil, err
		}
		dsn = srv.DSN("gpugate")
	}
	store, err := db.Open(ctx, dsn, db.Options{MaxOpenConns: *f.maxConns, StatsTTL: statsTTL})
	if err != nil {
		out.close(log)
		return nil, err
	}
	out.store = store
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
	d, err := openDatabase(ctx, c.dbf, 0, log)
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
