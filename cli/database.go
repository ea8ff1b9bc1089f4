package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
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

// withDatabase runs a one-shot command against the database (the embedded one without
// DATABASE_URL), stopping on SIGINT/SIGTERM and closing everything afterwards.
func withDatabase(dbf dbFlags, level string, fn func(ctx context.Context, d *database) error) error {
	log, err := newLogger("text", level, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := openDatabase(ctx, dbf, 0, log)
	if err != nil {
		return err
	}
	defer d.close(log)
	return fn(ctx, d)
}
