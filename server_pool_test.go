package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
)

// poolPrimary starts a PostgreSQL cluster of its own with database gpugate and the gateway's
// roles (as zero-config mode prepares them), unmigrated: the gateway migrates it.
func poolPrimary(t *testing.T) (*pglocal.Server, string) {
	t.Helper()
	// Under /tmp, 0755: postgres (and pgbouncer) run as another user when the tests run as root.
	base, err := os.MkdirTemp("", "gpugate-pool-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(base, "primary"), Fast: true, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	if err := srv.EnsureDatabase(ctx, "gpugate"); err != nil {
		t.Fatal(err)
	}
	super, err := sql.Open("postgres", srv.DSN("gpugate"))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close()
	if err := db.PrepareLocalRoles(ctx, super); err != nil {
		t.Fatal(err)
	}
	return srv, base
}

// poolGraphQL posts query with variables (and a bearer token unless empty) and returns the
// decoded response.
func poolGraphQL(t *testing.T, g *process, token, query string, vars map[string]any) (data map[string]any, errs []any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, "http://"+g.addr+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil, []any{err.Error()}
	}
	defer resp.Body.Close()
	var out struct {
		Data   map[string]any `json:"data"`
		Errors []any          `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Errorf("decode: %v (HTTP %d)", err, resp.StatusCode)
		return nil, []any{err.Error()}
	}
	return out.Data, out.Errors
}

// poolMust is poolGraphQL that fails the test on errors.
func poolMust(t *testing.T, g *process, token, query string, vars map[string]any) map[string]any {
	t.Helper()
	data, errs := poolGraphQL(t, g, token, query, vars)
	if len(errs) > 0 {
		t.Fatalf("%s: %v\n%s", query, errs, g.out.String())
	}
	return data
}

func poolDevToken(t *testing.T, g *process, name string) string {
	t.Helper()
	out, err := exec.Command(binary(t), "dev", "token", "--server", "http://"+g.addr, name).Output()
	if err != nil {
		t.Fatalf("dev token %s: %v\n%s", name, err, g.out.String())
	}
	return strings.TrimSpace(string(out))
}

// poolPgBouncer starts pgbouncer in transaction pooling mode in front of srv's database
// gpugate, with server pools of two connections, as srv's OS user (pgbouncer, like postgres,
// refuses to run as root, and that user can reach srv's socket). It returns its TCP address.
func poolPgBouncer(t *testing.T, srv *pglocal.Server, base string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("GPUGATE_CI") != "" {
			t.Fatal("pgbouncer is missing: scripts/ensure-pgbouncer installs it")
		}
		t.Skip("pgbouncer is not installed (scripts/ensure-pgbouncer)")
	}
	dir := filepath.Join(base, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	// trust: the users must still be listed. The superuser may read the admin console (SHOW).
	users := fmt.Sprintf("%q \"\"\n%q \"\"\n%q \"\"\n", db.RoleApp, db.RoleExplorer, srv.User())
	ini := fmt.Sprintf(`[databases]
gpugate = host=%s port=%d dbname=gpugate
[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = 2
reserve_pool_size = 0
max_client_conn = 200
server_reset_query =
logfile = %s
`, srv.SocketDir(), srv.Port(), host, port, filepath.Join(dir, "users.txt"), srv.User(), filepath.Join(dir, "pgbouncer.log"))
	for name, body := range map[string]string{"users.txt": users, "pgbouncer.ini": ini} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if os.Geteuid() == 0 {
		u, err := user.Lookup(srv.OSUser())
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		if err := os.Chown(dir, int(uid), int(gid)); err != nil { // its log file
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			return addr
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer exited: %s\n%s", out.String(), log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer does not listen on %s", addr)
		}
	}
}

// poolBouncerStats returns the transactions pgbouncer has pooled for database gpugate.
func poolBouncerStats(t *testing.T, addr, admin string) int64 {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	x, err := sql.Open("postgres", fmt.Sprintf("host=%s port=%s user=%s dbname=pgbouncer sslmode=disable", host, port, admin))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rows, err := x.Query("SHOW STATS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		if string(vals[0]) != "gpugate" {
			continue
		}
		for i, c := range cols {
			if c == "total_xact_count" {
				n, _ := strconv.ParseInt(string(vals[i]), 10, 64)
				return n
			}
		}
	}
	return 0
}

// The gateway runs through PgBouncer 1.18 in transaction pooling mode with two server
// connections per pool (docs/postgresql.md, "PgBouncer"): concurrent explorer reads, owner
// mutations, workers enrolling, proving and heartbeating, and a kill switch flipped by an
// admin all work while their transactions hop between the server connections.
func TestPoolGatewayThroughPgBouncerTransactionMode(t *testing.T) {
	srv, base := poolPrimary(t)
	addr := poolPgBouncer(t, srv, base)
	host, port, _ := net.SplitHostPort(addr)
	viaBouncer := func(role string) string {
		return fmt.Sprintf("postgres://%s@%s:%s/gpugate?sslmode=disable", role, host, port)
	}
	g := start(t, []string{"DATABASE_URL=" + viaBouncer(db.RoleApp)},
		"--dev", "--seed", "40", "--log-level", "warn",
		"--database-pooler", "transaction",
		"--database-direct-url", srv.DSNAs(db.RoleApp, "gpugate"),
		"--migration-database-url", srv.DSNAs(db.RoleOwner, "gpugate"),
		"--explorer-database-url", viaBouncer(db.RoleExplorer),
		"--db-max-conns", "8", "--explorer-db-max-conns", "8",
		"--public-cache-ttl", "0", "--switch-reread", "1h")
	before := poolBouncerStats(t, addr, srv.User())

	// Explorer reads, many at once: far more client connections than server connections.
	const readers, reads = 8, 15
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < reads; j++ {
				_, errs := poolGraphQL(t, g, "", `query($n: Int!) { devices(first: $n) { edges { node { id name gpus { uuid } } } }
					networkStats { devices } searchDevices(query: "dev", first: 3) { edges { node { id } } } }`,
					map[string]any{"n": 5 + (i+j)%20})
				if len(errs) > 0 {
					t.Errorf("explorer read: %v", errs)
					return
				}
			}
		}(i)
	}

	alice, admin := poolDevToken(t, g, "alice"), poolDevToken(t, g, "admin")
	// Workers enroll, prove and heartbeat (--once), three at a time, while the reads run.
	const workers = 3
	for i := 0; i < workers; i++ {
		wg.Add(1)
		tok := poolMust(t, g, alice, `mutation { createEnrollmentToken { token } }`, nil)["createEnrollmentToken"].(map[string]any)["token"].(string)
		go func(i int, tok string) {
			defer wg.Done()
			keyFile := filepath.Join(t.TempDir(), "worker.json")
			cmd := exec.Command(binary(t), "worker", "--server", "http://"+g.addr, "--enroll", tok,
				"--simulate", "dgxh100", "--once", "--key-file", keyFile, "--name", fmt.Sprintf("pool-worker-%d", i), "--give-up-after", "1m")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("worker %d: %v\n%s", i, err, out)
			}
		}(i, tok)
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("gateway log:\n%s", g.out.String())
	}

	// Owner mutations, read back at once by the owner.
	mine := poolMust(t, g, alice, `{ viewer { devices(first: 100) { edges { node { id name verification } } } } }`, nil)
	var nodes []map[string]any
	for _, e := range mine["viewer"].(map[string]any)["devices"].(map[string]any)["edges"].([]any) {
		if node := e.(map[string]any)["node"].(map[string]any); strings.HasPrefix(node["name"].(string), "pool-worker-") {
			nodes = append(nodes, node)
		}
	}
	if len(nodes) != workers {
		t.Fatalf("alice owns %d worker devices after %d workers enrolled: %v", len(nodes), workers, nodes)
	}
	for _, node := range nodes {
		if node["verification"] != "VERIFIED" {
			t.Errorf("device %v after its proof: verification %v", node["id"], node["verification"])
		}
		id := node["id"].(string)
		poolMust(t, g, alice, `mutation($id: ID!) { updateDevice(id: $id, input: {name: "pool-renamed"}) { id } }`, map[string]any{"id": id})
		got := poolMust(t, g, alice, `query($id: ID!) { device(id: $id) { name } }`, map[string]any{"id": id})
		if name := got["device"].(map[string]any)["name"]; name != "pool-renamed" {
			t.Errorf("owner reads %v after renaming", name)
		}
	}

	// The kill switch: the admin's change reaches the gateway through LISTEN on the direct URL
	// (the re-read is an hour away), and is lifted the same way.
	poolMust(t, g, admin, `mutation { disableWrites(class: ENROLLMENT, reason: "pool test") { enabled } }`, nil)
	waitFor(t, func() bool {
		_, errs := poolGraphQL(t, g, alice, `mutation { createEnrollmentToken { token } }`, nil)
		return len(errs) > 0 && strings.Contains(fmt.Sprint(errs), "DISABLED")
	})
	poolMust(t, g, admin, `mutation { enableWrites(class: ENROLLMENT) { enabled } }`, nil)
	waitFor(t, func() bool {
		_, errs := poolGraphQL(t, g, alice, `mutation { createEnrollmentToken { token } }`, nil)
		return len(errs) == 0
	})

	if after := poolBouncerStats(t, addr, srv.User()); after-before < readers*reads {
		t.Fatalf("pgbouncer pooled %d transactions for the test; want at least %d (is the gateway going through it?)", after-before, readers*reads)
	}
	for _, bad := range []string{"prepared statement", "unsupported startup parameter", "panic"} {
		if strings.Contains(g.out.String(), bad) {
			t.Fatalf("the gateway logged %q:\n%s", bad, g.out.String())
		}
	}
}

// poolMetric returns the value of the series line starting with series in g's /metrics, or ""
// when there is none.
func poolMetric(t *testing.T, g *process, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + g.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// A gateway with a read replica: /metrics shows it up, then down once it is stopped, while
// /readyz stays ready and anonymous reads keep answering (from the primary); it is used again
// once it is back.
func TestPoolReplicaGateway(t *testing.T) {
	srv, base := poolPrimary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	replicaDir := filepath.Join(base, "replica")
	rep, err := pglocal.StartReplica(ctx, srv, pglocal.Options{DataDir: replicaDir, Fast: true, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rep.Stop(context.Background()) })
	g := start(t, []string{"DATABASE_URL=" + srv.DSNAs(db.RoleApp, "gpugate")},
		"--dev", "--seed", "20", "--metrics-public",
		"--migration-database-url", srv.DSNAs(db.RoleOwner, "gpugate"),
		"--explorer-database-url", srv.DSNAs(db.RoleExplorer, "gpugate"),
		"--database-replica-urls", rep.DSNAs(db.RoleExplorer, "gpugate"),
		"--replica-max-lag", "2s", "--public-cache-ttl", "0", "--stats-ttl", "1ms")
	up := `gpugate_db_replica_up{replica="0"}`
	waitFor(t, func() bool { return poolMetric(t, g, up) == "1" })
	if lag := poolMetric(t, g, `gpugate_db_replica_lag_seconds{replica="0"}`); lag == "" {
		t.Fatal("no lag series for an up replica")
	}
	// The seed ran after the replica was made: its devices streamed to the replica.
	if n := deviceCount(t, g); n != 20 {
		t.Fatalf("networkStats.devices = %d; want 20", n)
	}

	if err := rep.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if n := deviceCount(t, g); n != 20 {
			t.Fatalf("with the replica stopped: networkStats.devices = %d; want 20", n)
		}
	}
	waitFor(t, func() bool { return poolMetric(t, g, up) == "0" })
	resp, err := http.Get("http://" + g.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with the replica down: HTTP %d; want 200 (the primary serves)", resp.StatusCode)
	}

	rep2, err := pglocal.StartReplica(ctx, srv, pglocal.Options{DataDir: replicaDir, Fast: true, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rep2.Stop(context.Background()) })
	waitFor(t, func() bool { return poolMetric(t, g, up) == "1" })
	if strings.Contains(g.out.String(), "panic") {
		t.Fatalf("the gateway logged a panic:\n%s", g.out.String())
	}
}
