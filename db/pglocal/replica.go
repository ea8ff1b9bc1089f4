//go:build unix

package pglocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// StartReplica starts a streaming replica (a hot standby) of primary in o.DataDir/pgdata and
// returns it once it accepts connections. A new data directory is filled by pg_basebackup -R
// (the server binaries' own, run as the cluster's OS user) over the primary's unix socket:
// it copies the primary and writes standby.signal and primary_conninfo, so the standby then
// follows the primary's WAL as it is written. A data directory that already holds a cluster
// (a replica stopped earlier) is started as it is and resumes streaming. The replica listens
// on its own socket (o.DataDir/run), like any cluster Start runs.
//
// It returns an error when primary is not running, when pg_basebackup fails (with the last
// lines of o.DataDir/postgres.log), or any error of Start.
func StartReplica(ctx context.Context, primary *Server, o Options) (*Server, error) {
	if primary == nil {
		return nil, errors.New("pglocal: StartReplica needs a running primary")
	}
	select {
	case <-primary.Done():
		return nil, errors.New("pglocal: the primary has exited")
	default:
	}
	if o.DataDir == "" {
		return nil, errors.New("pglocal: Options.DataDir is required")
	}
	if o.BinDir == "" {
		o.BinDir = primary.binDir // the same major version, whatever PATH holds
	}
	if o.Logger == nil {
		o.Logger = primary.log
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: data dir %s: %w", o.DataDir, err)
	}
	pgdata := filepath.Join(dataDir, "pgdata")
	if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); err != nil {
		if err := baseBackup(ctx, primary, dataDir, o.Fast); err != nil {
			return nil, err
		}
	}
	return Start(ctx, o)
}

// baseBackup copies primary into dataDir/pgdata with pg_basebackup -R, through
// dataDir/pgdata.init so an interrupted copy never looks like a cluster.
func baseBackup(ctx context.Context, primary *Server, dataDir string, fast bool) error {
	ru, err := lookupRunUser(filepath.Join(dataDir, "pgdata"))
	if err != nil {
		return err
	}
	if dataDir, err = prepareDataDir(dataDir, ru); err != nil {
		return err
	}
	s := &Server{dataDir: dataDir, pgdata: filepath.Join(dataDir, "pgdata"), binDir: primary.binDir,
		logPath: filepath.Join(dataDir, "postgres.log"), log: primary.log}
	if s.logFile, err = os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
		return fmt.Errorf("pglocal: open log: %w", err)
	}
	defer s.logFile.Close()
	if err := chownIfRoot(s.logPath, ru); err != nil {
		return err
	}
	tmp := s.pgdata + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pglocal: remove leftover %s: %w", tmp, err)
	}
	if err := ensureOwnedDir(tmp, ru); err != nil {
		return err
	}
	args := []string{"-D", tmp, "-R", "-X", "stream", "-c", "fast",
		"-h", primary.sockDir, "-p", strconv.Itoa(primary.port), "-U", superuser, "-w"}
	if fast {
		args = append(args, "--no-sync")
	}
	s.log.Info("pglocal: copying the primary for a replica", "primary", primary.pgdata, "data_dir", s.pgdata)
	off := s.logOffset()
	cmd := s.command(ru, "pg_basebackup", args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pglocal: pg_basebackup: %w", err)
	}
	if err := waitOrKill(ctx, cmd); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("pglocal: pg_basebackup into %s failed (%v); last lines of %s:\n%s", s.pgdata, err, s.logPath, s.logTail(off))
	}
	if err := os.Rename(tmp, s.pgdata); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	return nil
}
