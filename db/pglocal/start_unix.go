//go:build unix

package pglocal

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	readyTimeout = 30 * time.Second
	pollEvery    = 50 * time.Millisecond
	// killGrace is how long Stop waits after SIGQUIT before SIGKILL.
	killGrace = 5 * time.Second
	// maxSocketPath bounds len(socket dir + "/.s.PGSQL.<port>"): sun_path holds 108 bytes.
	maxSocketPath = 100
	logTailLines  = 20
)

// runAs is the OS identity initdb and postgres run as.
type runAs struct {
	name     string
	uid, gid uint32
	drop     bool // we are root: switch to uid/gid in the child
}

// Start initializes the cluster in o.DataDir/pgdata unless it exists, starts postgres as a
// child process and returns once it accepts connections. PostgreSQL's output goes to
// o.DataDir/postgres.log. On Linux the kernel sends postgres SIGTERM when this process dies,
// even by SIGKILL, so a crashed gateway does not leave PostgreSQL behind; call Stop for an
// orderly shutdown. Postgres runs in its own process group: a terminal's Ctrl-C reaches only
// the gateway, which decides when to Stop.
//
// It returns an error wrapping ErrNoPostgres when no binaries are found; an error naming the
// directory when (as root) the unprivileged user cannot reach o.DataDir; an error saying
// another PostgreSQL is already running when o.DataDir is in use; and otherwise an error that
// includes the last lines of postgres.log when initdb or postgres fail or postgres does not
// accept connections within 30s or before ctx is done. On error nothing is left running.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("pglocal: Options.DataDir is required")
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.Default()
	}
	binDir, err := FindBinDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: data dir %s: %w", o.DataDir, err)
	}
	ru, err := lookupRunUser(filepath.Join(dataDir, "pgdata"))
	if err != nil {
		return nil, err
	}
	if dataDir, err = prepareDataDir(dataDir, ru); err != nil {
		return nil, err
	}

	s := &Server{
		dataDir: dataDir,
		pgdata:  filepath.Join(dataDir, "pgdata"),
		binDir:  binDir,
		port:    DefaultPort,
		osUser:  ru.name,
		logPath: filepath.Join(dataDir, "postgres.log"),
		log:     lg,
		exited:  make(chan struct{}),
	}
	if s.lock, err = lockDataDir(dataDir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.closeFiles()
		}
	}()

	s.logFile, err = os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pglocal: open log: %w", err)
	}
	if err := chownIfRoot(s.logPath, ru); err != nil {
		return nil, err
	}
	if s.sockDir, err = socketDir(dataDir, s.port); err != nil {
		return nil, err
	}
	if err := ensureOwnedDir(s.sockDir, ru); err != nil {
		return nil, err
	}

	if s.version, err = s.checkVersion(ctx, o.BinDir != ""); err != nil {
		return nil, err
	}
	if err := s.initdb(ctx, ru, o.Fast); err != nil {
		return nil, err
	}
	if err := s.start(ctx, ru, o.Fast); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// lookupRunUser picks the OS user for postgres: the current user when not root; as root, the
// owner of an existing pgdata (so a cluster keeps working when the postgres user appears
// later), else the postgres system user, else nobody.
func lookupRunUser(pgdata string) (runAs, error) {
	if os.Geteuid() != 0 {
		// #nosec G115 -- Unix ids are never negative (Geteuid is -1 only on Windows)
		ru := runAs{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
		ru.name = strconv.Itoa(os.Geteuid())
		if u, err := user.Current(); err == nil {
			ru.name = u.Username
		}
		return ru, nil
	}
	if fi, err := os.Stat(pgdata); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			ru := runAs{name: "uid " + strconv.FormatUint(uint64(st.Uid), 10), uid: st.Uid, gid: st.Gid, drop: true}
			if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil {
				if ru2, err := fromUser(u); err == nil {
					return ru2, nil
				}
			}
			return ru, nil
		}
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		if ru, err := fromUser(u); err == nil && ru.uid != 0 {
			return ru, nil
		}
	}
	return runAs{}, errors.New("pglocal: PostgreSQL refuses to run as root and neither a `postgres` nor a `nobody` user exists: " +
		"create one (`sudo useradd --system postgres`) or run gpugate as a non-root user")
}

func fromUser(u *user.User) (runAs, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return runAs{}, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return runAs{}, err
	}
	return runAs{name: u.Username, uid: uint32(uid), gid: uint32(gid), drop: true}, nil
}

// prepareDataDir creates dataDir when missing and returns it with symlinks resolved. As
// root it hands dataDir to ru when we created it or it is empty (never a directory already
// holding other things, such as a home directory), and checks that ru can reach it.
func prepareDataDir(dataDir string, ru runAs) (string, error) {
	parentMode := os.FileMode(0o700)
	if ru.drop {
		parentMode = 0o755 // ru must be able to traverse the parents we create
	}
	if err := os.MkdirAll(filepath.Dir(dataDir), parentMode); err != nil {
		return "", fmt.Errorf("pglocal: create data dir: %w", err)
	}
	created := true
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("pglocal: create data dir: %w", err)
		}
		created = false
	}
	real, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return "", fmt.Errorf("pglocal: data dir: %w", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("pglocal: data dir: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("pglocal: data dir %s is not a directory", real)
	}
	if !ru.drop {
		return real, nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("pglocal: data dir %s: no ownership information", real)
	}
	if st.Uid != ru.uid && fi.Mode()&os.ModeSticky == 0 {
		empty := false
		if !created {
			entries, err := os.ReadDir(real)
			empty = err == nil && len(entries) == 0
		}
		if created || empty {
			if err := os.Chown(real, int(ru.uid), int(ru.gid)); err != nil {
				return "", fmt.Errorf("pglocal: hand data dir to user %s: %w", ru.name, err)
			}
		}
	}
	if err := checkReachable(real, ru); err != nil {
		return "", err
	}
	return real, nil
}

// checkReachable checks that every directory from dir up to / grants ru search permission,
// judged by the owner, group (ru's primary group) and other mode bits.
func checkReachable(dir string, ru runAs) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pglocal: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("pglocal: %s: no ownership information", d)
		}
		perm := fi.Mode().Perm()
		var can bool
		switch {
		case st.Uid == ru.uid:
			can = perm&0o100 != 0
		case st.Gid == ru.gid:
			can = perm&0o010 != 0
		default:
			can = perm&0o001 != 0
		}
		if !can {
			return fmt.Errorf("pglocal: PostgreSQL runs as user %s (it refuses to run as root), which cannot enter %s (mode %v, owner uid %d, group gid %d) on the way to data dir %s: "+
				"choose a --data-dir that user can reach, e.g. under /var/lib or /tmp", ru.name, d, perm, st.Uid, st.Gid, dir)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// lockDataDir takes an exclusive, non-blocking flock on dataDir/pglocal.lock, held until Stop,
// so two processes (or two Starts) never initialize or run the same cluster.
func lockDataDir(dataDir string) (*os.File, error) {
	p := filepath.Join(dataDir, "pglocal.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600) // #nosec G304 -- in the operator's --data-dir
	if err != nil {
		return nil, fmt.Errorf("pglocal: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close() // the lock was not taken: nothing to release; err is what matters
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("pglocal: another PostgreSQL is already running on %s (%s is locked by another gpugate): stop it or use a different --data-dir", dataDir, p)
		}
		return nil, fmt.Errorf("pglocal: lock data dir: %w", err)
	}
	return f, nil
}

// socketDir returns dataDir/run, or a short per-data-dir directory under the temp dir when
// that path would be too long for a unix socket address.
func socketDir(dataDir string, port int) (string, error) {
	suffix := len("/.s.PGSQL.") + len(strconv.Itoa(port))
	if d := filepath.Join(dataDir, "run"); len(d)+suffix < maxSocketPath {
		return d, nil
	}
	sum := sha256.Sum256([]byte(dataDir))
	name := "gpugate-" + hex.EncodeToString(sum[:4])
	for _, base := range []string{os.TempDir(), "/tmp"} {
		if d := filepath.Join(base, name); len(d)+suffix < maxSocketPath {
			return d, nil
		}
	}
	return "", fmt.Errorf("pglocal: no socket directory short enough for data dir %s", dataDir)
}

// ensureOwnedDir makes dir a real directory (not a symlink) owned by ru with mode 0700.
func ensureOwnedDir(dir string, ru runAs) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("pglocal: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("pglocal: %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("pglocal: %s: no ownership information", dir)
	}
	if st.Uid != ru.uid || st.Gid != ru.gid {
		if !ru.drop {
			if st.Uid != ru.uid {
				return fmt.Errorf("pglocal: %s belongs to uid %d, not to you (uid %d): remove it", dir, st.Uid, ru.uid)
			}
		} else if err := os.Lchown(dir, int(ru.uid), int(ru.gid)); err != nil {
			return fmt.Errorf("pglocal: %w", err)
		}
	}
	if fi.Mode().Perm() != 0o700 {
		// #nosec G302 -- a directory (it needs x); PostgreSQL refuses a data directory wider than 0700
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("pglocal: %w", err)
		}
	}
	return nil
}

func chownIfRoot(path string, ru runAs) error {
	if !ru.drop {
		return nil
	}
	if err := os.Lchown(path, int(ru.uid), int(ru.gid)); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	return nil
}

// env is the whole environment of initdb and postgres: nothing inherited (no PGDATABASE,
// PGOPTIONS, LC_*...), a HOME the unprivileged user can read.
func (s *Server) env() []string {
	return []string{
		"PATH=" + s.binDir + ":/usr/local/bin:/usr/bin:/bin",
		"LANG=C",
		"LC_ALL=C",
		"HOME=" + s.dataDir,
	}
}

func (s *Server) command(ru runAs, name string, args ...string) *exec.Cmd {
	// #nosec G204 -- runs initdb or postgres (name is a constant at every call) from the
	// PostgreSQL directory the operator chose (--pg-bin-dir) or found in /usr/lib/postgresql, with
	// arguments this package builds; no shell.
	cmd := exec.Command(filepath.Join(s.binDir, name), args...)
	cmd.Env = s.env()
	cmd.Dir = s.dataDir
	cmd.Stdout = s.logFile
	cmd.Stderr = s.logFile
	cmd.SysProcAttr = sysProcAttr(ru)
	return cmd
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// checkVersion returns the server's major version ("15"; "9.6" before 10). When the cluster
// exists and was made by another major version, it switches to the matching Debian bin dir if
// the bin dir was not explicit and that version is installed, else it fails.
func (s *Server) checkVersion(ctx context.Context, explicit bool) (string, error) {
	binVer, err := serverVersion(ctx, s.binDir, s.env())
	if err != nil {
		return "", err
	}
	raw, err := os.ReadFile(filepath.Join(s.pgdata, "PG_VERSION"))
	if err != nil {
		return binVer, nil // no cluster yet (initdb reports other problems)
	}
	dataVer := strings.TrimSpace(string(raw))
	if dataVer == binVer {
		return binVer, nil
	}
	alt := strings.Replace(debianBinGlob, "*", dataVer, 1)
	if !explicit && checkBinDir(alt) == nil {
		s.log.Info("pglocal: using the PostgreSQL version the cluster was created with", "data_dir", s.pgdata, "bin_dir", alt, "newest", s.binDir)
		s.binDir = alt
		return serverVersion(ctx, alt, s.env())
	}
	return "", fmt.Errorf("pglocal: cluster %s was created by PostgreSQL %s but %s holds PostgreSQL %s: "+
		"install PostgreSQL %s and pass --pg-bin-dir, or upgrade the cluster with pg_upgrade, or use a new --data-dir",
		s.pgdata, dataVer, s.binDir, binVer, dataVer)
}

func serverVersion(ctx context.Context, binDir string, env []string) (string, error) {
	// #nosec G204 -- postgres -V from the PostgreSQL directory the operator chose or was found; no shell
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "postgres"), "-V")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("pglocal: %s -V: %w", filepath.Join(binDir, "postgres"), err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("pglocal: %s -V: unexpected output %q", filepath.Join(binDir, "postgres"), out)
	}
	if major, _ := strconv.Atoi(m[1]); major < 10 && m[2] != "" {
		return m[1] + "." + m[2], nil
	}
	return m[1], nil
}

// initdb creates the cluster unless pgdata/PG_VERSION exists. It initializes pgdata.init and
// renames it to pgdata, so an interrupted initdb never leaves a half-made cluster behind.
func (s *Server) initdb(ctx context.Context, ru runAs, fast bool) error {
	if _, err := os.Stat(filepath.Join(s.pgdata, "PG_VERSION")); err == nil {
		return nil
	}
	if _, err := os.Lstat(s.pgdata); err == nil {
		if err := os.Remove(s.pgdata); err != nil { // only succeeds when empty
			return fmt.Errorf("pglocal: %s exists but is not a PostgreSQL data directory (no PG_VERSION): move it away", s.pgdata)
		}
	}
	tmp := s.pgdata + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pglocal: remove leftover %s: %w", tmp, err)
	}
	if err := ensureOwnedDir(tmp, ru); err != nil {
		return err
	}
	args := []string{"-D", tmp, "--username=" + superuser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if fast {
		args = append(args, "--no-sync")
	}
	s.log.Info("pglocal: creating PostgreSQL cluster", "data_dir", s.pgdata, "bin_dir", s.binDir, "os_user", ru.name)
	off := s.logOffset()
	cmd := s.command(ru, "initdb", args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pglocal: initdb: %w", err)
	}
	if err := waitOrKill(ctx, cmd); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("pglocal: initdb %s failed (%v); last lines of %s:\n%s", s.pgdata, err, s.logPath, s.logTail(off))
	}
	if err := os.Rename(tmp, s.pgdata); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	return nil
}

// start runs postgres and waits until it accepts connections.
func (s *Server) start(ctx context.Context, ru runAs, fast bool) error {
	begin := time.Now()
	args := []string{
		"-D", s.pgdata,
		"-k", s.sockDir,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=",
		"-c", "unix_socket_permissions=0700",
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
	}
	if fast {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	off := s.logOffset()
	s.cmd = s.command(ru, "postgres", args...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("pglocal: start postgres: %w", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	db, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		s.kill()
		return fmt.Errorf("pglocal: %w", err)
	}
	defer db.Close()
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		// The socket may belong to another postgres (one left running on this data dir, whose
		// lock makes ours exit): only ours, once it holds the data dir lock, counts.
		err := errors.New("postmaster.pid does not name our process yet")
		if s.ownsPidFile() {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = db.PingContext(pctx)
			cancel()
			if err == nil {
				break
			}
		}
		select {
		case <-s.exited:
			return s.exitError(off)
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("pglocal: postgres did not accept connections before the context ended (%w); last lines of %s:\n%s", ctx.Err(), s.logPath, s.logTail(off))
		case <-deadline.C:
			s.kill()
			return fmt.Errorf("pglocal: postgres did not accept connections within %v (last error: %v); last lines of %s:\n%s", readyTimeout, err, s.logPath, s.logTail(off))
		case <-tick.C:
		}
	}
	s.log.Info("pglocal: PostgreSQL started", "version", s.version, "data_dir", s.pgdata, "socket_dir", s.sockDir,
		"os_user", s.osUser, "pid", s.cmd.Process.Pid, "elapsed", time.Since(begin).Round(time.Millisecond))
	return nil
}

// ownsPidFile reports whether pgdata/postmaster.pid, whose first line is the PID of the
// postmaster holding the data directory, names our child.
func (s *Server) ownsPidFile() bool {
	b, err := os.ReadFile(filepath.Join(s.pgdata, "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first) == strconv.Itoa(s.cmd.Process.Pid)
}

// exitError explains why postgres exited before accepting connections.
func (s *Server) exitError(off int64) error {
	tail := s.logTail(off)
	if strings.Contains(tail, "lock file") && strings.Contains(tail, "already exists") {
		return fmt.Errorf("pglocal: another PostgreSQL is already running on %s: stop it or use a different --data-dir; last lines of %s:\n%s", s.dataDir, s.logPath, tail)
	}
	return fmt.Errorf("pglocal: postgres exited before accepting connections (%v); last lines of %s:\n%s", s.waitErr, s.logPath, tail)
}

// kill stops a postgres that failed to become ready: immediate shutdown, then SIGKILL.
func (s *Server) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(killGrace):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Stop shuts postgres down: SIGINT (fast shutdown: running transactions are rolled back), then
// waits for it to exit. If ctx ends first it sends SIGQUIT (immediate shutdown; crash recovery
// runs at next start), then SIGKILL after 5s, and returns an error wrapping ctx.Err(). It also
// returns an error when postgres had exited on its own or exited with a failure status. Stop
// is idempotent: later calls return the first call's result. A nil Server's Stop returns nil.
func (s *Server) Stop(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		s.stopErr = s.stop(ctx)
		s.closeFiles()
		if !strings.HasPrefix(s.sockDir, s.dataDir+string(filepath.Separator)) {
			_ = os.Remove(s.sockDir) // the short fallback under the temp dir, when empty
		}
	})
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	begin := time.Now()
	select {
	case <-s.exited:
		return fmt.Errorf("pglocal: postgres had already exited (%v); see %s", s.waitErr, s.logPath)
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pglocal: stop postgres: %w", err)
	}
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.kill()
		s.log.Info("pglocal: PostgreSQL killed", "data_dir", s.pgdata, "elapsed", time.Since(begin).Round(time.Millisecond))
		return fmt.Errorf("pglocal: postgres did not shut down in time, sent SIGQUIT: %w", ctx.Err())
	}
	s.log.Info("pglocal: PostgreSQL stopped", "data_dir", s.pgdata, "elapsed", time.Since(begin).Round(time.Millisecond))
	if s.waitErr != nil {
		return fmt.Errorf("pglocal: postgres exited with %v; see %s", s.waitErr, s.logPath)
	}
	return nil
}

func (s *Server) closeFiles() {
	// Errors ignored: both are only closed after postgres stopped (every write done), and a lock
	// file's close cannot fail in a way that keeps the flock.
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
	if s.lock != nil {
		_ = s.lock.Close() // releases the flock
	}
}

func (s *Server) logOffset() int64 {
	fi, err := s.logFile.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the last lines postgres.log gained since offset off.
func (s *Server) logTail(off int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-off > 64<<10 {
		off = fi.Size() - 64<<10
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return "(" + err.Error() + ")"
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

// waitOrKill waits for the started cmd to exit and returns its Wait error; when ctx ends first it
// kills cmd, waits for it, and returns ctx.Err().
func waitOrKill(ctx context.Context, cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}
