// Package pglocal runs a private PostgreSQL cluster from the server binaries installed on the
// machine (initdb, postgres), for gpugate's zero-config mode and for tests.
//
// The cluster lives in Options.DataDir/pgdata, listens only on a unix socket (no TCP, so it can
// never clash with another PostgreSQL on port 5432), and trusts every local connection to that
// socket, whose directory and file are accessible to the cluster's OS user (and root) only.
// When the calling process is root, PostgreSQL (which refuses to run as root) runs as the
// `postgres` system user, or `nobody` when there is none.
package pglocal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
)

// ErrNoPostgres is the error (wrapped with %w) that FindBinDir and Start return when no
// PostgreSQL server binaries can be found. Its message says what to install.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, postgres) not found in PATH or /usr/lib/postgresql/*/bin: " +
	"install them with `sudo apt-get install -y postgresql` (Debian/Ubuntu), or pass --pg-bin-dir")

// DefaultPort is the port number of every cluster. PostgreSQL listens on no TCP port: the
// number only names the socket file (SocketDir()/.s.PGSQL.5432).
const DefaultPort = 5432

// superuser is the database role initdb creates; every local connection is trusted.
const superuser = "gpugate"

// debianBinGlob matches the server binary directories of Debian/Ubuntu's postgresql-NN packages.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// Options configures Start.
type Options struct {
	// DataDir is required. The cluster lives in DataDir/pgdata and is reused when
	// DataDir/pgdata/PG_VERSION exists; PostgreSQL's own output is appended to
	// DataDir/postgres.log.
	DataDir string
	// BinDir optionally names the directory holding initdb and postgres. When empty, the
	// directory of initdb in PATH is used, else the highest-version /usr/lib/postgresql/*/bin.
	BinDir string
	// Fast trades durability for speed (fsync, synchronous_commit and full_page_writes off;
	// initdb --no-sync): for tests and throwaway clusters only.
	Fast bool
	// Logger receives start and stop messages at Info; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a running cluster started by Start. Its methods are safe for concurrent use.
type Server struct {
	dataDir string // absolute, symlinks resolved
	pgdata  string
	binDir  string
	sockDir string
	port    int
	osUser  string // the OS user postgres runs as
	version string // server major version, e.g. "15"
	logPath string
	log     *slog.Logger

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the postgres process has exited
	waitErr error         // cmd.Wait's result; read only after exited is closed
	lock    *os.File      // holds the data directory lock until Stop
	logFile *os.File

	stopOnce sync.Once
	stopErr  error
}

// FindBinDir returns the directory holding the initdb and postgres executables: explicit when
// it is not empty, else the directory of initdb found in PATH (preferring that of its symlink
// target) when postgres sits beside it, else the highest-version /usr/lib/postgresql/*/bin that has both.
// When none qualifies it returns an error wrapping ErrNoPostgres; an explicit directory that
// lacks either executable is an error too (no fallback).
func FindBinDir(explicit string) (string, error) {
	if explicit != "" {
		abs, err := filepath.Abs(explicit)
		if err != nil {
			return "", fmt.Errorf("pglocal: PostgreSQL bin dir %s: %v: %w", explicit, err, ErrNoPostgres)
		}
		if err := checkBinDir(abs); err != nil {
			return "", fmt.Errorf("pglocal: PostgreSQL bin dir %s: %v: %w", explicit, err, ErrNoPostgres)
		}
		return abs, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		// Prefer the real directory of a symlinked initdb (/usr/local/bin/initdb ->
		// /usr/lib/postgresql/15/bin/initdb): it names the version and holds both executables.
		if real, err := filepath.EvalSymlinks(p); err == nil && checkBinDir(filepath.Dir(real)) == nil {
			return filepath.Dir(real), nil
		}
		if checkBinDir(filepath.Dir(p)) == nil {
			return filepath.Dir(p), nil
		}
	}
	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}
	return "", fmt.Errorf("pglocal: %w", ErrNoPostgres)
}

// newestDebianBinDir returns the /usr/lib/postgresql/<version>/bin with the highest version
// (compared numerically: 9.6 < 10 < 15) that holds both executables, or "".
func newestDebianBinDir() string {
	dirs, _ := filepath.Glob(debianBinGlob)
	type cand struct {
		dir string
		ver []int
	}
	var cands []cand
	for _, d := range dirs {
		if v, ok := parseVersion(filepath.Base(filepath.Dir(d))); ok {
			cands = append(cands, cand{d, v})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return compareVersions(b.ver, a.ver) })
	for _, c := range cands {
		if checkBinDir(c.dir) == nil {
			return c.dir
		}
	}
	return ""
}

// compareVersions compares dotted versions numerically: 9.6 < 10 < 15.
func compareVersions(a, b []int) int { return slices.Compare(a, b) }

// parseVersion parses a dotted numeric version ("15", "9.6").
func parseVersion(s string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, len(v) > 0
}

// checkBinDir reports why dir does not hold executable initdb and postgres files.
func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p) // #nosec G703 -- only stats the operator's --pg-bin-dir candidate
		if err != nil {
			return fmt.Errorf("no %s", p)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
	}
	return nil
}

// DSN returns a connection string for database dbname, usable with sql.Open("postgres", ...)
// (and with libpq tools such as psql): the cluster's superuser over its unix socket, sslmode
// disabled, for example postgres://gpugate@/dbname?host=%2Fdata%2Frun&port=5432&sslmode=disable.
// It does not check that the database exists.
func (s *Server) DSN(dbname string) string { return s.DSNAs(superuser, dbname) }

// DSNAs is DSN for role user instead of the superuser (the socket trusts every role; a role
// that does not exist or may not log in is refused when connecting).
func (s *Server) DSNAs(user, dbname string) string {
	q := url.Values{}
	q.Set("host", s.sockDir)
	q.Set("port", strconv.Itoa(s.port))
	q.Set("sslmode", "disable")
	u := url.URL{Scheme: "postgres", User: url.User(user), Path: "/" + dbname, RawQuery: q.Encode()}
	return u.String()
}

// SocketDir returns the directory holding the cluster's unix socket.
func (s *Server) SocketDir() string { return s.sockDir }

// Port returns the port number naming the socket file (SocketDir()/.s.PGSQL.<port>); nothing
// listens on TCP.
func (s *Server) Port() int { return s.port }

// User returns the database superuser role every DSN connects as ("gpugate"); connections over
// the socket need no password.
func (s *Server) User() string { return superuser }

// OSUser returns the name of the operating-system user the postgres process runs as.
func (s *Server) OSUser() string { return s.osUser }

// DataDir returns the absolute data directory (Options.DataDir with symlinks resolved).
func (s *Server) DataDir() string { return s.dataDir }

// Done returns a channel closed when the postgres process has exited, whether through Stop or
// not (a crash, or someone killing it).
func (s *Server) Done() <-chan struct{} { return s.exited }

// EnsureDatabase creates database name unless it exists. It returns an error when name does
// not match ^[a-z_][a-z0-9_]{0,62}$, or when the server cannot be reached or refuses.
func (s *Server) EnsureDatabase(ctx context.Context, name string) error {
	if !validDBName(name) {
		return fmt.Errorf("pglocal: invalid database name %q: want ^[a-z_][a-z0-9_]{0,62}$", name)
	}
	db, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pglocal: look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		if pq.As(err, pqerror.DuplicateDatabase) != nil {
			return nil // created concurrently
		}
		return fmt.Errorf("pglocal: create database %s: %w", name, err)
	}
	return nil
}

// validDBName reports whether name matches ^[a-z_][a-z0-9_]{0,62}$.
func validDBName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
