package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/internal/testutil"
)

// TestMain removes the gpugate binary the tests built (27 MB per run otherwise left in /tmp).
func TestMain(m *testing.M) {
	code := dbtest.Main(m)
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string // removed by TestMain
	binPath   string
	buildErr  error
)

// binary builds gpugate once per test run: these tests drive the real command.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpugate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "gpugate")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a running gpugate.
type process struct {
	cmd  *exec.Cmd
	addr string
	out  *testutil.SyncBuffer
	done chan error
}

func start(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	g := &process{addr: freeAddr(t), out: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	g.cmd = exec.Command(binary(t), append([]string{"serve", "--listen", g.addr}, args...)...)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			_ = g.cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + g.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case err := <-g.done:
			t.Fatalf("gpugate exited (%v) before it was ready:\n%s", err, g.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gpugate not ready after 90s:\n%s", g.out.String())
		}
	}
}

func (g *process) query(t *testing.T, q string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": q})
	resp, err := http.Post("http://"+g.addr+"/graphql", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out["errors"] != nil {
		t.Fatalf("query %s: %v %v", q, err, out)
	}
	return out["data"].(map[string]any)
}

func (g *process) stop(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("gpugate exited with %v after SIGTERM:\n%s", err, g.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gpugate did not stop within 30s of SIGTERM")
	}
}

func deviceCount(t *testing.T, g *process) int {
	t.Helper()
	stats := g.query(t, `{ networkStats { devices } }`)["networkStats"].(map[string]any)
	return int(stats["devices"].(float64))
}

func TestZeroConfigStartsPostgresSeedsAndReusesItsData(t *testing.T) {
	t.Parallel()
	// Like `mktemp -d`: a root-only directory right under /tmp, which the gateway hands to the
	// unprivileged user PostgreSQL runs as.
	dataDir, err := os.MkdirTemp("", "gpugate-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	g := start(t, []string{"DATABASE_URL="}, "--data-dir", dataDir, "--seed", "150")
	if n := deviceCount(t, g); n != 150 {
		t.Fatalf("demo devices: %d", n)
	}
	page, err := http.Get("http://" + g.addr + "/")
	if err == nil {
		page.Body.Close()
	}
	if err != nil || page.StatusCode != http.StatusOK {
		t.Fatalf("GraphiQL in dev mode: %v %v", err, page)
	}
	// Introspection is on in dev mode.
	g.query(t, `{ __schema { queryType { name } } }`)
	g.stop(t)
	if !strings.Contains(g.out.String(), "stopped") {
		t.Fatalf("no clean stop in the log:\n%s", g.out.String())
	}

	// Second start: same cluster, same data, no second seed (a different size would show).
	g2 := start(t, []string{"DATABASE_URL="}, "--data-dir", dataDir, "--seed", "99")
	if n := deviceCount(t, g2); n != 150 {
		t.Fatalf("after restart: %d devices, want the 150 of the first start", n)
	}
	if strings.Contains(g2.out.String(), "creating PostgreSQL cluster") {
		t.Fatal("the second start created a new cluster instead of reusing the data dir")
	}
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	g := start(t, []string{"DATABASE_URL=" + dsn}, "--seed", "20", "--log-level", "info")
	// Hold a lock so a request is in flight when SIGTERM arrives.
	tx, err := x.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		body   string
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+g.addr+"/graphql", "application/json",
			strings.NewReader(`{"query":"{ devices(first: 3) { edges { node { id } } } }"}`))
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, func() bool {
		var n int
		_ = x.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT id, %FROM devices%'`)
		return n > 0
	})
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once shutdown began, while the old request still waits.
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", g.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	r := <-inflight
	if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"edges"`) {
		t.Fatalf("in-flight request during shutdown: %+v", r)
	}
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, g.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after draining")
	}
}

func TestDatabaseURLNeverSeedsUnlessAsked(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	g := start(t, []string{"DATABASE_URL=" + dsn})
	if n := deviceCount(t, g); n != 0 {
		t.Fatalf("a DATABASE_URL gateway seeded %d devices", n)
	}
	// Not dev mode: no GraphiQL, no introspection.
	resp, err := http.Get("http://" + g.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GraphiQL outside dev mode: HTTP %d", resp.StatusCode)
	}
	var users int
	if err := x.Get(&users, `SELECT count(*) FROM users`); err != nil || users != 0 {
		t.Fatalf("users: %d %v", users, err)
	}
}

func TestMissingPostgresSaysWhatToInstall(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary(t), "serve", "--listen", freeAddr(t), "--data-dir", t.TempDir(),
		"--pg-bin-dir", filepath.Join(t.TempDir(), "nothing-here"))
	cmd.Env = append(os.Environ(), "DATABASE_URL=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("gpugate started without PostgreSQL binaries")
	}
	if !strings.Contains(string(out), "apt-get install -y postgresql") {
		t.Fatalf("the error does not say what to install:\n%s", out)
	}
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	_, dsn := dbtest.NewWithDSN(t)
	out, err := exec.Command(binary(t), "migrate", "--database-url", dsn).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "already current") {
		t.Fatalf("migrate on a migrated database: %v\n%s", err, out)
	}
	// A fresh, empty database is migrated from scratch.
	sqldb, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	if _, err := sqldb.ExecContext(context.Background(), `DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(binary(t), "migrate", "--database-url", dsn).CombinedOutput()
	if err != nil || !regexp.MustCompile(`migrations applied: \[1 2( \d+)*\]`).Match(out) {
		t.Fatalf("migrate on an empty database: %v\n%s", err, out)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	t.Parallel()
	out, _ := exec.Command(binary(t), "serve", "--help").CombinedOutput()
	for _, flagName := range []string{"-listen", "-data-dir", "-database-url", "-dev", "-seed", "-request-timeout",
		"-max-depth", "-shutdown-timeout", "GPUGATE_LISTEN", "DATABASE_URL"} {
		if !strings.Contains(string(out), flagName) {
			t.Fatalf("serve --help lacks %s:\n%s", flagName, out)
		}
	}
	top, _ := exec.Command(binary(t), "--help").CombinedOutput()
	sc := bufio.NewScanner(bytes.NewReader(top))
	var cmds []string
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == "gpugate" {
			cmds = append(cmds, f[1])
		}
	}
	if len(cmds) < 3 {
		t.Fatalf("--help lists no commands:\n%s", top)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Help is the command's output: it goes to stdout and the exit status is 0, for every command
// and every way of asking (a shell pipes it into less; scripts check the status).
func TestHelpGoesToStdoutAndExitsZero(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"help"}, {"serve", "--help"}, {"serve", "-h"}, {"migrate", "--help"},
		{"seed", "--help"}, {"worker", "--help"}, {"users", "import", "--help"}, {"users", "--help"},
		{"dev", "token", "--help"}, {"dev", "--help"}, {"version", "--help"}, {"help", "serve"}, {"help", "dev"}, {"help", "users"}} {
		cmd := exec.Command(binary(t), args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("gpugate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			continue
		}
		if !strings.Contains(stdout.String(), "Usage") || stderr.Len() != 0 {
			t.Errorf("gpugate %s: want the usage on stdout and nothing on stderr; stdout:\n%s\nstderr:\n%s",
				strings.Join(args, " "), stdout.String(), stderr.String())
		}
	}
	// A mistake is not help: its usage goes to stderr, with a failing status.
	cmd := exec.Command(binary(t), "serve", "--no-such-flag")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil || stdout.Len() != 0 || !strings.Contains(stderr.String(), "no-such-flag") {
		t.Fatalf("serve --no-such-flag: %v; stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
}

// gpugate version reports what the Go toolchain stamped into the binary (go version -m): the
// commit when the build had version control information, and the Go version always.
func TestVersionCommandMatchesTheBinary(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary(t), "version").Output()
	if err != nil {
		t.Fatalf("gpugate version: %v", err)
	}
	stamped, err := exec.Command("go", "version", "-m", binary(t)).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := []string{"go:        " + strings.Fields(strings.SplitN(string(stamped), ":", 2)[1])[0]}
	revision := regexp.MustCompile(`(?m)^\s+build\s+vcs\.revision=(\w+)$`).FindSubmatch(stamped)
	if revision != nil {
		want = append(want, "commit:    "+string(revision[1]))
	} else {
		want = append(want, "commit:    unknown")
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("gpugate version lacks %q:\n%s\n(go version -m:\n%s)", w, out, stamped)
		}
	}
}

// A dev token is good for its hour, not until the next restart: in zero-config mode the dev
// issuer keeps its signing key (0600) and its port in the data directory.
func TestDevTokenSurvivesAGatewayRestart(t *testing.T) {
	t.Parallel()
	dataDir, err := os.MkdirTemp("", "gpugate-data-") // reachable by PostgreSQL's user, as above
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	g := start(t, []string{"DATABASE_URL="}, "--data-dir", dataDir, "--seed", "20")
	out, err := exec.Command(binary(t), "dev", "token", "--server", "http://"+g.addr, "alice").Output()
	if err != nil {
		t.Fatalf("dev token: %v\n%s", err, g.out.String())
	}
	token := strings.TrimSpace(string(out))
	if email := viewerEmail(t, g, token); email != "alice@example.com" {
		t.Fatalf("viewer before the restart: %q", email)
	}
	g.stop(t)

	g2 := start(t, []string{"DATABASE_URL="}, "--data-dir", dataDir)
	if email := viewerEmail(t, g2, token); email != "alice@example.com" {
		t.Fatalf("viewer after the restart: %q\n%s", email, g2.out.String())
	}
	fi, err := os.Stat(filepath.Join(dataDir, "dev-issuer.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the dev issuer's key in the data dir: %v %v", fi, err)
	}
}

// viewerEmail returns the viewer's email for token, or "" with the errors logged.
func viewerEmail(t *testing.T, g *process, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+g.addr+"/graphql", strings.NewReader(`{"query":"{ viewer { email } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Viewer struct{ Email string }
		}
		Errors []any
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if len(out.Errors) > 0 {
		t.Logf("viewer: HTTP %d %v", resp.StatusCode, out.Errors)
	}
	return out.Data.Viewer.Email
}

// users import says what is missing before it opens anything: without DATABASE_URL, opening
// the database would create and start a PostgreSQL cluster (and print an empty summary).
func TestUsersImportWithMissingFlagsOpensNothing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "issuer is required"},
		{[]string{"--issuer", "https://idp.example.com/"}, "legacy accounts"},
		{[]string{"--issuer", "https://idp.example.com/", "--legacy-table", "legacy_users"}, "identities CSV"},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		cmd := exec.Command(binary(t), append([]string{"users", "import", "--data-dir", dataDir}, c.args...)...)
		cmd.Env = append(os.Environ(), "DATABASE_URL=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err == nil || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("users import %v: %v, want an error saying %q; stderr:\n%s", c.args, err, c.want, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("users import %v printed a summary before saying what is missing:\n%s", c.args, stdout.String())
		}
		if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("users import %v created the data dir (a PostgreSQL cluster): %v", c.args, err)
		}
	}
}

// A data dir the user cannot write gets a hint: which directory, the permission problem, and
// the flag and variable that choose another (as root, the test runs the gateway as nobody).
func TestUnwritableDataDirSaysWhatToDo(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	if err := os.Chmod(parent, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(parent, 0o755) })
	dataDir := filepath.Join(parent, "data")
	bin := binary(t)
	cmd := exec.Command(bin, "serve", "--listen", freeAddr(t), "--data-dir", dataDir)
	cmd.Env = append(os.Environ(), "DATABASE_URL=")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Skipf("running as root and no user nobody to run the gateway as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// nobody must reach the binary; the build directory is root's 0700.
		if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("gpugate started with a data dir it cannot write:\n%s", out)
	}
	for _, want := range []string{dataDir, "permission denied", "--data-dir", "GPUGATE_DATA_DIR"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the error lacks %q:\n%s", want, out)
		}
	}
}

// Ctrl-C on `make run` (SIGINT to the terminal's whole process group) ends with the gateway's
// clean shutdown and no "make: *** ... Error 1": make runs the built binary, not `go run`,
// which exits 1 whenever it was interrupted.
func TestMakeRunCtrlCEndsWithoutAnError(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		if os.Getenv("GPUGATE_CI") != "" { // .ci/run installs it
			t.Fatal("no make on PATH, although CI installs it")
		}
		t.Skip("no make on this machine")
	}
	dataDir, err := os.MkdirTemp("", "gpugate-data-") // reachable by PostgreSQL's user, as above
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	addr := freeAddr(t)
	cmd := exec.Command("make", "--no-print-directory", "run", "BIN="+filepath.Join(t.TempDir(), "gpugate"),
		"ARGS=--listen "+addr+" --data-dir "+dataDir+" --seed 20")
	cmd.Env = append(os.Environ(), "DATABASE_URL=")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's process group
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when make has exited
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	deadline := time.Now().Add(3 * time.Minute) // make builds the binary first
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("make run exited (%v) before the gateway was ready:\n%s", waitErr, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run: no gateway after 3 minutes:\n%s", out.String())
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done: // make itself was interrupted too: it exits by SIGINT, as any program would
	case <-time.After(60 * time.Second):
		t.Fatalf("make run still running 60s after Ctrl-C:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "msg=stopped") {
		t.Fatalf("no clean shutdown:\n%s", out.String())
	}
	if strings.Contains(out.String(), "make: ***") {
		t.Fatalf("Ctrl-C after a clean shutdown reported an error:\n%s", out.String())
	}
}
