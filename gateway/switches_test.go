package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/testutil"
)

// replica is one gateway of a test's cluster: its own pool, its own kill switches with their
// listener, on the database the others use.
type replica struct {
	*owners
	switches *guard.Switches
}

// replicaOpts tune newReplicas.
type replicaOpts struct {
	reread time.Duration // the switches' periodic re-read (default: an hour, so only NOTIFY propagates)
	// listenDSN, when set, is the listener's connection string for replica i (a dead address
	// leaves that replica with the periodic re-read alone).
	listenDSN func(i int, dsn string) string
}

// newReplicas starts n gateways on one fresh database seeded with 40 demo devices, each with
// its own pool and kill switches kept current by their Run (a LISTEN connection), and the
// identities of alice, bob and admin at one test IdP.
func newReplicas(t *testing.T, n int, cfg gateway.Config, opts replicaOpts) []*replica {
	t.Helper()
	p := newIDP(t)
	cfg.Verifier, cfg.RoleNames = p.verifier, map[model.Role]string{model.RoleAdmin: "ADMIN"}
	if cfg.Workers.Difficulty == 0 {
		cfg.Workers.Difficulty = 8
	}
	if opts.reread == 0 {
		opts.reread = time.Hour
	}
	x0, dsn := dbtest.NewWithDSN(t)
	out := make([]*replica, n)
	for i := range n {
		x := x0
		if i > 0 {
			var err error
			if x, err = sqlx.Open("postgres", dsn); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { x.Close() })
		}
		store := db.New(x, db.Options{StatsTTL: -1})
		if i == 0 {
			if _, err := store.Seed(context.Background(), 40); err != nil {
				t.Fatal(err)
			}
		}
		logs := &testutil.SyncBuffer{}
		log := slog.New(slog.NewTextHandler(logs, nil))
		sw := guard.NewSwitches(store, log, opts.reread)
		listen := dsn
		if opts.listenDSN != nil {
			listen = opts.listenDSN(i, dsn)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { sw.Run(ctx, listen); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		c := cfg
		c.Switches = sw
		srv := httptest.NewServer(gateway.New(c, store, log))
		t.Cleanup(srv.Close)
		o := &owners{env: &env{t: t, x: x, db: store, url: srv.URL, log: logs}, idp: p}
		out[i] = &replica{owners: o, switches: sw}
	}
	a := out[0]
	for _, u := range []struct {
		name string
		id   *string
	}{{"alice", &a.alice}, {"bob", &a.bob}, {"admin", &a.admin}} {
		if err := a.db.LinkIdentity(context.Background(), db.Identity{Issuer: p.url, Subject: u.name}, u.name+"@example.com", "mapping"); err != nil {
			t.Fatal(err)
		}
		if err := a.x.Get(u.id, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, p.url, u.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.x.Get(&a.aliceDevice, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, a.alice); err != nil {
		t.Fatal(err)
	}
	if err := a.x.Get(&a.bobDevic, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, a.bob); err != nil {
		t.Fatal(err)
	}
	for _, r := range out[1:] {
		r.alice, r.bob, r.admin, r.aliceDevice, r.bobDevic = a.alice, a.bob, a.admin, a.aliceDevice, a.bobDevic
	}
	return out
}

const (
	renameMutation  = `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id name } }`
	disableMutation = `mutation($c: WriteClass!, $r: String!) { disableWrites(class: $c, reason: $r) { class enabled reason changedAt changedBy } }`
	enableMutation  = `mutation($c: WriteClass!) { enableWrites(class: $c) { class enabled reason changedAt changedBy } }`
	switchesQuery   = `{ writeSwitches { class enabled reason changedAt changedBy } }`
)

// pollUntil calls try until it returns true or the deadline passes (then the test fails with
// what). Propagation is asserted by the deadline, never by a fixed sleep.
func pollUntil(t *testing.T, deadline time.Duration, what string, try func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if try() {
			return time.Since(start)
		}
		if time.Since(start) > deadline {
			t.Fatalf("%s: not within %s", what, deadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errorCode is the first error's code of r, or "" for none.
func errorCode(r response) string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Code()
}

// The acceptance check across two replicas: an admin disables DEVICE_METADATA on A; within a
// second updateDevice on B fails with DISABLED and the reason, and changes nothing, while reads,
// sign-in and admin moderation keep working; enabling on B restores writes on A within a second.
func TestKillSwitchReachesTheOtherReplica(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{}, replicaOpts{})
	a, b := rs[0], rs[1]
	alice, admin := a.user("alice"), a.user("admin", "ADMIN")
	vars := func(name string) map[string]any { return map[string]any{"id": a.aliceDevice, "n": name} }
	b.as(alice, renameMutation, vars("before")).Decode(t, &struct{}{}) // B has read the switches: all on

	var sw struct{ DisableWrites model.WriteSwitch }
	a.as(admin, disableMutation, map[string]any{"c": "DEVICE_METADATA", "r": "metadata vandalism in progress"}).Decode(t, &sw)
	if s := sw.DisableWrites; s.Enabled || s.Reason == nil || *s.Reason != "metadata vandalism in progress" ||
		s.ChangedBy == nil || *s.ChangedBy != "user:"+a.admin || s.ChangedAt == nil {
		t.Fatalf("disableWrites returned %+v", s)
	}
	took := pollUntil(t, time.Second, "DISABLED on replica B", func() bool {
		return errorCode(b.as(alice, renameMutation, vars("during"))) == "DISABLED"
	})
	t.Logf("replica B refused writes %s after the switch", took)
	before := b.snapshot(a.aliceDevice) // a poll before the switch arrived may have renamed it
	e := b.as(alice, renameMutation, vars("during")).WantError(t, "DISABLED", "metadata vandalism in progress")
	if !strings.Contains(e.Message, "DEVICE_METADATA") {
		t.Fatalf("message %q does not name the class", e.Message)
	}
	for _, op := range []string{`mutation($id: ID!) { pauseDevice(id: $id) { id } }`, `mutation($id: ID!) { removeDevice(id: $id) { id } }`} {
		b.as(alice, op, map[string]any{"id": a.aliceDevice}).WantError(t, "DISABLED", "")
	}
	if after := b.snapshot(a.aliceDevice); after != before {
		t.Fatalf("a disabled write changed the device:\n%s\n%s", before, after)
	}
	// An anonymous caller is still told to sign in (authentication comes first), another user
	// is still FORBIDDEN: the switch hides nothing about authorization.
	b.as(nil, renameMutation, vars("anon")).WantError(t, "UNAUTHENTICATED", "")
	b.as(b.user("bob"), renameMutation, vars("bob")).WantError(t, "FORBIDDEN", "")
	// Reads, the explorer, sign-in, other classes and admin moderation keep working.
	var list struct {
		Devices struct {
			Edges []struct{ Node struct{ ID string } }
		}
	}
	b.as(nil, `{ devices(first: 5) { edges { node { id name status } } } }`, nil).Decode(t, &list)
	if len(list.Devices.Edges) != 5 {
		t.Fatalf("devices answered %d edges", len(list.Devices.Edges))
	}
	b.as(alice, `{ viewer { id devices(first: 2) { edges { node { id } } } } }`, nil).Decode(t, &struct{}{})
	b.as(alice, `mutation { createEnrollmentToken { token } }`, nil).Decode(t, &struct{}{})
	b.as(admin, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "review") { id status } }`, map[string]any{"id": a.bobDevic}).Decode(t, &struct{}{})
	b.as(admin, `mutation($id: ID!) { releaseDevice(id: $id) { id } }`, map[string]any{"id": a.bobDevic}).Decode(t, &struct{}{})
	if !strings.Contains(b.log.String(), "reason=DISABLED") {
		t.Fatal("the refusal is not in B's audit log")
	}

	b.as(admin, enableMutation, map[string]any{"c": "DEVICE_METADATA"}).Decode(t, &struct{}{})
	pollUntil(t, time.Second, "writes again on replica A", func() bool {
		return errorCode(a.as(alice, renameMutation, vars("after"))) == ""
	})
	var got string
	if err := a.x.Get(&got, `SELECT name FROM devices WHERE id = $1`, a.aliceDevice); err != nil || got != "after" {
		t.Fatalf("name %q (%v)", got, err)
	}
}

// Every worker class stops on the other replica too: HEARTBEATS refuses heartbeats (and only
// them: proofs go on), ENROLLMENT refuses enrollments.
func TestWorkerClassesSwitchOff(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{}, replicaOpts{})
	a, b := rs[0], rs[1]
	admin := a.user("admin", "ADMIN")
	w := a.enrolledWorker(t, "alice", h100Host(71))
	w.o = b.owners // the worker now talks to replica B
	w.call(heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})

	a.as(admin, disableMutation, map[string]any{"c": "HEARTBEATS", "r": "heartbeat storm"}).Decode(t, &struct{}{})
	pollUntil(t, time.Second, "heartbeats DISABLED on B", func() bool {
		return errorCode(w.call(heartbeatMutation, map[string]any{"d": w.deviceID})) == "DISABLED"
	})
	w.challenge(t) // PROOFS is still on

	a.as(admin, disableMutation, map[string]any{"c": "ENROLLMENT", "r": "enrollment flood"}).Decode(t, &struct{}{})
	pollUntil(t, time.Second, "enrollment DISABLED on B", func() bool {
		return errorCode(b.as(b.user("alice"), `mutation { createEnrollmentToken { token } }`, nil)) == "DISABLED"
	})
	var devices int
	if err := a.x.Get(&devices, `SELECT count(*) FROM devices`); err != nil {
		t.Fatal(err)
	}
	token, _, err := a.db.CreateEnrollmentToken(context.Background(), a.alice)
	if err != nil {
		t.Fatal(err)
	}
	nw := newWorker(b.owners)
	nw.signed(nw.priv, "", time.Now(), body(enrollMutation, nw.enrollInput(token, h100Host(72))), nil).WantError(t, "DISABLED", "enrollment flood")
	var after int
	if err := a.x.Get(&after, `SELECT count(*) FROM devices`); err != nil || after != devices {
		t.Fatalf("devices %d -> %d (%v): a disabled enrollment wrote", devices, after, err)
	}
}

// The switches propagate when the listener drops (its connection killed: the reconnect
// re-reads) and when it cannot connect at all (the periodic re-read).
func TestKillSwitchWithoutTheListener(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 3, gateway.Config{}, replicaOpts{reread: 300 * time.Millisecond, listenDSN: func(i int, dsn string) string {
		if i == 2 {
			return "host=127.0.0.1 port=1 dbname=none sslmode=disable connect_timeout=1" // never connects
		}
		return dsn
	}})
	a, dropped, deaf := rs[0], rs[1], rs[2]
	alice, admin := a.user("alice"), a.user("admin", "ADMIN")
	vars := map[string]any{"id": a.aliceDevice, "n": "x"}
	for _, r := range rs {
		r.as(alice, renameMutation, vars).Decode(t, &struct{}{})
	}
	// Kill every LISTEN connection: replica B's listener reconnects and re-reads.
	var killed int
	pollUntil(t, 5*time.Second, "a listener connection to kill", func() bool {
		if err := a.x.Get(&killed, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN %'`); err != nil {
			t.Fatal(err)
		}
		return killed > 0
	})
	a.as(admin, disableMutation, map[string]any{"c": "DEVICE_METADATA", "r": "drill"}).Decode(t, &struct{}{})
	for name, r := range map[string]*replica{"the replica whose listener dropped": dropped, "the replica without a listener": deaf} {
		pollUntil(t, time.Second, name, func() bool {
			return errorCode(r.as(alice, renameMutation, vars)) == "DISABLED"
		})
	}
	a.as(admin, enableMutation, map[string]any{"c": "DEVICE_METADATA"}).Decode(t, &struct{}{})
	pollUntil(t, time.Second, "enabled on the replica without a listener", func() bool {
		return errorCode(deaf.as(alice, renameMutation, vars)) == ""
	})
}

// writeSwitches, disableWrites and enableWrites for every kind of caller, with the exact code,
// and the switches unchanged after every refusal.
func TestWriteSwitchesAuthorization(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 1, gateway.Config{}, replicaOpts{})
	o := rs[0]
	w := o.enrolledWorker(t, "alice", h100Host(73))
	ops := []struct {
		name, query string
		vars        map[string]any
	}{
		{"writeSwitches", switchesQuery, nil},
		{"disableWrites", disableMutation, map[string]any{"c": "DEVICE_METADATA", "r": "attack"}},
		{"enableWrites", enableMutation, map[string]any{"c": "DEVICE_METADATA"}},
	}
	callers := []struct {
		name   string
		send   func(query string, vars map[string]any) response
		want   string
		status int
	}{
		{"anonymous", func(q string, v map[string]any) response { return o.as(nil, q, v) }, "UNAUTHENTICATED", 200},
		{"user", func(q string, v map[string]any) response { return o.as(o.user("alice"), q, v) }, "FORBIDDEN", 200},
		{"other user", func(q string, v map[string]any) response { return o.as(o.user("bob"), q, v) }, "FORBIDDEN", 200},
		{"user claiming admin in another claim", func(q string, v map[string]any) response {
			c := o.idp.claims("alice")
			c["roles"] = []string{"ADMIN"}
			return o.as(bearer(o.idp.sign(c)), q, v)
		}, "FORBIDDEN", 200},
		{"device-signed", func(q string, v map[string]any) response { return w.call(q, v) }, "UNAUTHENTICATED", 200},
		{"forged headers", func(q string, v map[string]any) response {
			return o.as(http.Header{"X-User-Id": {o.admin}, "X-Role": {"ADMIN"}, "X-Forwarded-User": {"admin"}}, q, v)
		}, "UNAUTHENTICATED", 200},
		{"bad token", func(q string, v map[string]any) response { return o.as(bearer("garbage"), q, v) }, "UNAUTHENTICATED", 401},
		{"admin token signed by another key", func(q string, v map[string]any) response {
			return o.as(bearer(o.idp.signWith(o.idp.rogue, "k1", o.idp.claims("admin", "ADMIN"))), q, v)
		}, "UNAUTHENTICATED", 401},
	}
	state := func() string {
		var s string
		if err := o.x.Get(&s, `SELECT coalesce(string_agg(class || enabled::text || reason, ','), '') FROM write_switches`); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range callers {
		for _, op := range ops {
			before := state()
			r := c.send(op.query, op.vars)
			if r.Status != c.status {
				t.Fatalf("%s %s: HTTP %d, want %d: %s", c.name, op.name, r.Status, c.status, r.RawBody)
			}
			r.WantError(t, c.want, "")
			if after := state(); after != before {
				t.Fatalf("%s %s changed the switches: %q -> %q", c.name, op.name, before, after)
			}
		}
	}

	admin := o.user("admin", "ADMIN")
	var list struct{ WriteSwitches []model.WriteSwitch }
	o.as(admin, switchesQuery, nil).Decode(t, &list)
	if len(list.WriteSwitches) != len(guard.Classes()) {
		t.Fatalf("writeSwitches: %+v", list.WriteSwitches)
	}
	for i, s := range list.WriteSwitches {
		if string(s.Class) != string(guard.Classes()[i]) || !s.Enabled || s.Reason != nil || s.ChangedAt != nil || s.ChangedBy != nil {
			t.Fatalf("a never-switched class: %+v", s)
		}
	}
	// The reason: 1..200 characters, no control characters; BAD_USER_INPUT otherwise.
	for _, bad := range []string{"", "   ", strings.Repeat("r", 201), "a\nb", "rtl\u202eoverride"} {
		o.as(admin, disableMutation, map[string]any{"c": "PROOFS", "r": bad}).WantError(t, "BAD_USER_INPUT", "reason")
	}
	o.as(admin, disableMutation, map[string]any{"c": "NOT_A_CLASS", "r": "x"}).WantError(t, "BAD_USER_INPUT", "")
	if s := state(); s != "" {
		t.Fatalf("refused input stored a switch: %q", s)
	}
	var sw struct{ DisableWrites model.WriteSwitch }
	o.as(admin, disableMutation, map[string]any{"c": "PROOFS", "r": strings.Repeat("é", 200)}).Decode(t, &sw)
	if sw.DisableWrites.Enabled || *sw.DisableWrites.Reason != strings.Repeat("é", 200) {
		t.Fatalf("200 characters: %+v", sw.DisableWrites)
	}
	var en struct{ EnableWrites model.WriteSwitch }
	o.as(admin, enableMutation, map[string]any{"c": "PROOFS"}).Decode(t, &en)
	if s := en.EnableWrites; !s.Enabled || s.Reason != nil || s.ChangedAt == nil || *s.ChangedBy != "user:"+o.admin {
		t.Fatalf("enableWrites: %+v", s)
	}
	// The switches themselves are in the audit trail.
	if !strings.Contains(o.log.String(), "op=disableWrites") || !strings.Contains(o.log.String(), "op=enableWrites") {
		t.Fatal("switch changes are not audited")
	}
}

// gpugateBinary builds the gpugate command once per test binary.
var gpugateBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gpugate-switch-test-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gpugate")
	out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveProcess starts `gpugate serve` on dsn trusting the test IdP and waits until it is ready;
// it returns its base URL. The process is stopped (SIGTERM) when the test ends.
func serveProcess(t *testing.T, bin, dsn string, p *idp) string {
	t.Helper()
	addr := freePort(t)
	var logs testutil.SyncBuffer
	cmd := exec.Command(bin, "serve", "--listen", addr, "--dev=false", "--seed", "0", "--heartbeat-timeout", "0",
		"--oidc-issuer", p.url, "--oidc-audience", audience, "--oidc-roles-claim", "groups", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("gpugate serve on %s:\n%s", addr, logs.String())
		}
	})
	url := "http://" + addr
	pollUntil(t, 60*time.Second, "gpugate serve ready", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// Two real gateway processes on one database: the switch set by an admin through replica A's
// GraphQL refuses updateDevice on replica B within a second, and `gpugate admin writes enable`
// (the CLI, against DATABASE_URL) restores it on both within a second.
func TestKillSwitchAcrossProcesses(t *testing.T) {
	t.Parallel()
	bin, err := gpugateBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := newIDP(t)
	x, dsn := dbtest.NewWithDSN(t)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	var alice, device string
	for _, name := range []string{"alice", "admin"} {
		if err := store.LinkIdentity(context.Background(), db.Identity{Issuer: p.url, Subject: name}, name+"@example.com", "mapping"); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Get(&alice, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = 'alice'`, p.url); err != nil {
		t.Fatal(err)
	}
	if err := x.Get(&device, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, alice); err != nil {
		t.Fatal(err)
	}
	a, b := serveProcess(t, bin, dsn, p), serveProcess(t, bin, dsn, p)
	post := func(base string, header http.Header, query string, vars map[string]any) response {
		e := &env{t: t, url: base}
		o := &owners{env: e}
		return o.as(header, query, vars)
	}
	aliceH, adminH := bearer(p.sign(p.claims("alice"))), bearer(p.sign(p.claims("admin", "ADMIN")))
	vars := map[string]any{"id": device, "n": "renamed"}
	post(b, aliceH, renameMutation, vars).Decode(t, &struct{}{})

	post(a, adminH, disableMutation, map[string]any{"c": "DEVICE_METADATA", "r": "two-process drill"}).Decode(t, &struct{}{})
	took := pollUntil(t, time.Second, "DISABLED on the other process", func() bool {
		return errorCode(post(b, aliceH, renameMutation, vars)) == "DISABLED"
	})
	t.Logf("process B refused writes %s after process A's switch", took)
	post(b, aliceH, renameMutation, vars).WantError(t, "DISABLED", "two-process drill")
	post(b, nil, `{ devices(first: 3) { edges { node { id } } } }`, nil).Decode(t, &struct{}{})

	cli := exec.Command(bin, "admin", "writes", "enable", "device_metadata")
	cli.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	out, err := cli.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DEVICE_METADATA  enabled") || !strings.Contains(string(out), "cli:") {
		t.Fatalf("gpugate admin writes enable: %v\n%s", err, out)
	}
	for _, base := range []string{a, b} {
		pollUntil(t, time.Second, "enabled by the CLI", func() bool {
			return errorCode(post(base, aliceH, renameMutation, vars)) == ""
		})
	}
	cli = exec.Command(bin, "admin", "writes", "disable", "PROOFS")
	cli.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	if out, err := cli.CombinedOutput(); err == nil || !strings.Contains(string(out), "--reason is required") {
		t.Fatalf("disable without a reason: %v\n%s", err, out)
	}
}
