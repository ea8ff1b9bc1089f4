package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/resolvers"
)

// auditRow is an audit_events row as the tests read it.
type auditRow struct {
	Principal, Operation, Outcome   string
	Target, Reason, RequestID, Addr string
	UserAgent                       string
}

// auditConfig is the test gateways' config with their own audit log, flushed every 10 ms.
func auditConfig(p *idp, store *db.DB) gateway.Config {
	return gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers: resolvers.WorkerConfig{Difficulty: 8},
		Audit:   guard.NewAuditLog(store, nil, guard.AuditOptions{Interval: 10 * time.Millisecond})}
}

// newAuditOwners is newWorkerOwners with a fast-flushing audit log.
func newAuditOwners(t *testing.T) *owners {
	t.Helper()
	p := newIDP(t)
	// The gateway's store is created by newEnv; the audit log needs one on the same database,
	// so it gets its own pool, as another replica would.
	x := dbtest.New(t)
	store := db.New(x, db.Options{StatsTTL: -1})
	if _, err := store.Seed(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	return ownersOn(t, p, x, store, auditConfig(p, store))
}

// ownersOn serves a gateway with cfg over an already seeded store.
func ownersOn(t *testing.T, p *idp, x *sqlx.DB, store *db.DB, cfg gateway.Config) *owners {
	t.Helper()
	srv := httptest.NewServer(gateway.New(cfg, store, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = cfg.Audit.Close(context.Background()) })
	e := &env{t: t, x: x, db: store, url: srv.URL}
	o := &owners{env: e, idp: p}
	for _, u := range []struct {
		name string
		id   *string
	}{{"alice", &o.alice}, {"bob", &o.bob}, {"admin", &o.admin}} {
		if err := store.LinkIdentity(context.Background(), db.Identity{Issuer: p.url, Subject: u.name}, u.name+"@example.com", "mapping"); err != nil {
			t.Fatal(err)
		}
		if err := x.Get(u.id, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, p.url, u.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Get(&o.aliceDevice, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, o.alice); err != nil {
		t.Fatal(err)
	}
	if err := x.Get(&o.bobDevic, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, o.bob); err != nil {
		t.Fatal(err)
	}
	return o
}

// auditRows waits until the audit log holds a row matching where (over audit_events) and
// returns all such rows.
func auditRows(t *testing.T, x *sqlx.DB, where string, args ...any) []auditRow {
	t.Helper()
	var rows []auditRow
	waitFor(t, func() bool {
		rows = nil
		if err := x.Select(&rows, `SELECT principal, operation, outcome, coalesce(target, '') AS target,
			coalesce(reason, '') AS reason, coalesce(request_id, '') AS requestid,
			coalesce(host(client_address), '') AS addr, coalesce(user_agent, '') AS useragent
			FROM audit_events WHERE `+where+` ORDER BY at, id`, args...); err != nil {
			t.Fatal(err)
		}
		return len(rows) > 0
	})
	return rows
}

func (o *owners) token(user string, groups ...string) http.Header {
	return bearer(o.idp.sign(o.idp.claims(user, groups...)))
}

const updateName = `mutation($id: ID!, $n: String!) { updateDevice(id: $id, input: {name: $n}) { name } }`

// The acceptance check: bob's refused updateDevice on alice's device is a DENIED row with
// operation updateDevice, and an admin finds it in auditEvents; alice's own update SUCCEEDED;
// an anonymous one is DENIED UNAUTHENTICATED. Each row carries the request's id, the client's
// address and user agent.
func TestAuditRecordsWritesAndDenials(t *testing.T) {
	t.Parallel()
	o := newAuditOwners(t)
	h := o.token("bob")
	h.Set("User-Agent", "audit-test/1.0")
	refused := o.as(h, updateName, map[string]any{"id": o.aliceDevice, "n": "bob-was-here"})
	refused.WantError(t, "FORBIDDEN", "do not own")
	bob := auditRows(t, o.x, `operation = 'updateDevice' AND principal = $1`, "user:"+o.bob)
	want := auditRow{Principal: "user:" + o.bob, Operation: "updateDevice", Outcome: "DENIED", Target: o.aliceDevice,
		Reason: "FORBIDDEN", RequestID: refused.Header.Get("X-Request-Id"), Addr: "127.0.0.1", UserAgent: "audit-test/1.0"}
	if len(bob) != 1 || bob[0] != want {
		t.Fatalf("bob's refused update: %+v, want exactly %+v", bob, want)
	}

	o.as(o.token("alice"), updateName, map[string]any{"id": o.aliceDevice, "n": "alice-renamed"}).Decode(t, &struct{}{})
	alice := auditRows(t, o.x, `operation = 'updateDevice' AND principal = $1`, "user:"+o.alice)
	if len(alice) != 1 || alice[0].Outcome != "SUCCEEDED" || alice[0].Reason != "" || alice[0].Target != o.aliceDevice {
		t.Fatalf("alice's update: %+v", alice)
	}

	o.as(nil, updateName, map[string]any{"id": o.aliceDevice, "n": "anon"}).WantError(t, "UNAUTHENTICATED", "")
	anon := auditRows(t, o.x, `operation = 'updateDevice' AND principal = 'anonymous'`)
	if len(anon) != 1 || anon[0].Outcome != "DENIED" || anon[0].Reason != "UNAUTHENTICATED" {
		t.Fatalf("anonymous update: %+v", anon)
	}

	// Refused before reaching the guard (a malformed id): still one row, FAILED BAD_USER_INPUT.
	o.as(o.token("alice"), updateName, map[string]any{"id": "not-an-id", "n": "x"}).WantError(t, "BAD_USER_INPUT", "")
	bad := auditRows(t, o.x, `operation = 'updateDevice' AND outcome = 'FAILED'`)
	if len(bad) != 1 || bad[0].Reason != "BAD_USER_INPUT" || bad[0].Principal != "user:"+o.alice || bad[0].Target != "" {
		t.Fatalf("malformed update: %+v", bad)
	}

	// The acceptance check, through the API.
	var out struct {
		AuditEvents struct {
			Nodes []struct{ Operation, Outcome, Principal, Target, Reason string }
		}
	}
	o.as(o.token("admin", "ADMIN"), `{ auditEvents(first: 100) { nodes { operation outcome principal target reason } } }`, nil).Decode(t, &out)
	found := slices.ContainsFunc(out.AuditEvents.Nodes, func(n struct{ Operation, Outcome, Principal, Target, Reason string }) bool {
		return n.Operation == "updateDevice" && n.Outcome == "DENIED" && n.Principal == "user:"+o.bob && n.Target == o.aliceDevice
	})
	if !found {
		t.Fatalf("bob's refused update is not in auditEvents: %+v", out.AuditEvents.Nodes)
	}
}

// auditEvents is for admins only: every other caller is refused with the exact code, and each
// refusal is itself a DENIED row.
func TestAuditEventsIsAdminOnly(t *testing.T) {
	t.Parallel()
	o := newAuditOwners(t)
	w := o.enrolledWorker(t, "alice", h100Host(71))
	const q = `{ auditEvents(first: 5) { nodes { id } } }`
	forged := http.Header{"X-User-Id": {"admin"}, "X-Forwarded-User": {"admin"}, "X-Roles": {"ADMIN"}}
	rogue := o.idp.signWith(o.idp.rogue, "k1", o.idp.claims("admin", "ADMIN"))
	cases := []struct {
		name      string
		send      func() response
		status    int
		code      string
		principal string
	}{
		{"anonymous", func() response { return o.as(nil, q, nil) }, 200, "UNAUTHENTICATED", "anonymous"},
		{"alice", func() response { return o.as(o.token("alice"), q, nil) }, 200, "FORBIDDEN", "user:" + o.alice},
		{"bob", func() response { return o.as(o.token("bob"), q, nil) }, 200, "FORBIDDEN", "user:" + o.bob},
		{"a device's signed request", func() response { return w.call(q, nil) }, 200, "UNAUTHENTICATED", "anonymous"},
		{"forged identity headers", func() response { return o.as(forged, q, nil) }, 200, "UNAUTHENTICATED", "anonymous"},
		{"a malformed token", func() response { return o.as(bearer("not-a-jwt"), q, nil) }, 401, "UNAUTHENTICATED", "anonymous"},
		{"a token signed by an unknown key", func() response { return o.as(bearer(rogue), q, nil) }, 401, "UNAUTHENTICATED", "anonymous"},
	}
	for _, c := range cases {
		r := c.send()
		if r.Status != c.status {
			t.Fatalf("%s: HTTP %d, want %d: %s", c.name, r.Status, c.status, r.RawBody)
		}
		r.WantError(t, c.code, "")
		if len(r.Data) > 0 && string(r.Data) != "null" {
			t.Fatalf("%s: data %s", c.name, r.Data)
		}
		rows := auditRows(t, o.x, `request_id = $1`, r.Header.Get("X-Request-Id"))
		if len(rows) != 1 || rows[0].Operation != "auditEvents" || rows[0].Outcome != "DENIED" ||
			rows[0].Reason != c.code || rows[0].Principal != c.principal {
			t.Fatalf("%s: audit rows %+v, want one DENIED %s by %s", c.name, rows, c.code, c.principal)
		}
	}
	var out struct {
		AuditEvents struct{ Nodes []struct{ ID string } }
	}
	o.as(o.token("admin", "ADMIN"), q, nil).Decode(t, &out)
	if len(out.AuditEvents.Nodes) != 5 {
		t.Fatalf("admin sees %d events", len(out.AuditEvents.Nodes))
	}
}

const emptyHeartbeat = `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`

// Worker requests: a signed heartbeat SUCCEEDED as the device; unsigned, badly signed, stale and
// replayed ones are DENIED with their codes (the device the signature claims is the target);
// a flagged proof is FLAGGED with its reasons.
func TestAuditWorkerRequests(t *testing.T) {
	t.Parallel()
	o := newAuditOwners(t)
	w := o.enrolledWorker(t, "alice", h100Host(72))
	if rows := auditRows(t, o.x, `operation = 'enrollDevice'`); len(rows) != 1 || rows[0].Outcome != "SUCCEEDED" ||
		!strings.HasPrefix(rows[0].Principal, "key:") {
		t.Fatalf("enrollment: %+v", rows)
	}
	vars := map[string]any{"d": w.deviceID}
	b := body(emptyHeartbeat, vars)
	sig := attest.SignRequest(w.priv, w.deviceID, "POST", "/graphql", time.Now(), b)
	send := func(h http.Header) response { return o.raw(http.MethodPost, "/graphql", "application/json", b, h) }
	if r := send(http.Header{attest.SignatureHeader: {sig}}); len(r.Errors) > 0 {
		t.Fatalf("signed heartbeat: %s", r.RawBody)
	}
	ok := auditRows(t, o.x, `operation = 'heartbeat' AND outcome = 'SUCCEEDED'`)
	if len(ok) != 1 || ok[0].Principal != "device:"+w.deviceID || ok[0].Target != w.deviceID {
		t.Fatalf("heartbeat: %+v", ok)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name, code, reason string
		status             int
		h                  http.Header
	}{
		{"unsigned", "UNAUTHENTICATED", "UNAUTHENTICATED", 200, nil},
		{"signed by another key", "UNAUTHENTICATED", "BAD_SIGNATURE", 401,
			http.Header{attest.SignatureHeader: {attest.SignRequest(stranger, w.deviceID, "POST", "/graphql", time.Now(), b)}}},
		{"stale", "UNAUTHENTICATED", "STALE_SIGNATURE", 401,
			http.Header{attest.SignatureHeader: {attest.SignRequest(w.priv, w.deviceID, "POST", "/graphql", time.Now().Add(-10*time.Minute), b)}}},
		{"replayed", "UNAUTHENTICATED", "REPLAYED_REQUEST", 401, http.Header{attest.SignatureHeader: {sig}}},
	}
	for _, c := range cases {
		r := send(c.h)
		if r.Status != c.status {
			t.Fatalf("%s: HTTP %d: %s", c.name, r.Status, r.RawBody)
		}
		r.WantError(t, c.code, "")
		rows := auditRows(t, o.x, `request_id = $1`, r.Header.Get("X-Request-Id"))
		if len(rows) != 1 || rows[0].Operation != "heartbeat" || rows[0].Outcome != "DENIED" || rows[0].Reason != c.reason ||
			rows[0].Principal != "anonymous" || rows[0].Target != w.deviceID {
			t.Fatalf("%s: audit rows %+v, want one DENIED %s aimed at %s", c.name, rows, c.reason, w.deviceID)
		}
	}

	// A proof over other GPUs than the device enrolled with is judged FLAGGED: so is its row.
	p := w.prove(t, h100Host(73))
	if p.Verdict != "FLAGGED" || len(p.Reasons) == 0 {
		t.Fatalf("proof: %+v", p)
	}
	flagged := auditRows(t, o.x, `operation = 'submitProof' AND outcome = 'FLAGGED' AND target = $1`, w.deviceID)
	if len(flagged) != 1 || flagged[0].Reason != strings.Join(p.Reasons, ",") || flagged[0].Principal != "device:"+w.deviceID {
		t.Fatalf("flagged proof: %+v, reasons %v", flagged, p.Reasons)
	}
}

// Nothing secret reaches the audit log: no bearer token, device signature, enrollment token
// or key, whatever the request did.
func TestAuditHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	o := newAuditOwners(t)
	token := o.enrollmentToken(t, "alice")
	w := newWorker(o)
	w.enroll(t, token, h100Host(74))
	b := body(emptyHeartbeat, map[string]any{"d": w.deviceID})
	sig := attest.SignRequest(w.priv, w.deviceID, "POST", "/graphql", time.Now(), b)
	o.raw(http.MethodPost, "/graphql", "application/json", b, http.Header{attest.SignatureHeader: {sig}})
	o.raw(http.MethodPost, "/graphql", "application/json", b, http.Header{attest.SignatureHeader: {sig}}) // replayed
	alice := o.idp.sign(o.idp.claims("alice"))
	o.as(bearer(alice), updateName, map[string]any{"id": o.bobDevic, "n": "x"})
	o.as(bearer(alice+"x"), updateName, map[string]any{"id": o.bobDevic, "n": "x"}) // a refused token
	secrets := map[string]string{"enrollment token": token, "bearer token": alice, "signature": sig,
		"public key": w.pub(), "signature's last part": sig[strings.LastIndex(sig, ",")+1:]}
	auditRows(t, o.x, `reason = 'REPLAYED_REQUEST'`)
	auditRows(t, o.x, `operation = 'updateDevice' AND reason = 'UNAUTHENTICATED'`)
	var dump []string
	if err := o.x.Select(&dump, `SELECT row_to_json(a)::text FROM audit_events a`); err != nil {
		t.Fatal(err)
	}
	if len(dump) < 5 {
		t.Fatalf("only %d rows", len(dump))
	}
	for _, row := range dump {
		for name, s := range secrets {
			// The last 24 characters: a token's or signature's own part, not a shared header.
			if len(s) >= 24 && strings.Contains(row, s[len(s)-24:]) {
				t.Fatalf("the %s is in the audit log: %s", name, row)
			}
		}
	}
}

// Two gateways (two handlers, each with its own pool and audit log, as two replicas would be)
// on one database: both replicas' rows are there, and either lists the other's.
func TestAuditFromTwoGateways(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	x1, dsn := dbtest.NewWithDSN(t)
	s1 := db.New(x1, db.Options{StatsTTL: -1})
	if _, err := s1.Seed(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	x2, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x2.Close() })
	s2 := db.New(x2, db.Options{StatsTTL: -1})
	a := ownersOn(t, p, x1, s1, auditConfig(p, s1))
	b := ownersOn(t, p, x2, s2, auditConfig(p, s2))
	ra := a.as(a.token("bob"), updateName, map[string]any{"id": a.aliceDevice, "n": "via-a"})
	rb := b.as(b.token("bob"), updateName, map[string]any{"id": b.aliceDevice, "n": "via-b"})
	ra.WantError(t, "FORBIDDEN", "")
	rb.WantError(t, "FORBIDDEN", "")
	waitFor(t, func() bool {
		var n int
		if err := x1.Get(&n, `SELECT count(*) FROM audit_events WHERE request_id IN ($1, $2) AND outcome = 'DENIED'`,
			ra.Header.Get("X-Request-Id"), rb.Header.Get("X-Request-Id")); err != nil {
			t.Fatal(err)
		}
		return n == 2
	})
	var out struct {
		AuditEvents struct{ Nodes []struct{ RequestID string } }
	}
	b.as(b.token("admin", "ADMIN"), `{ auditEvents(first: 100, filter: {operation: "updateDevice", outcome: DENIED}) { nodes { requestId } } }`, nil).Decode(t, &out)
	var ids []string
	for _, n := range out.AuditEvents.Nodes {
		ids = append(ids, n.RequestID)
	}
	if !slices.Contains(ids, ra.Header.Get("X-Request-Id")) || !slices.Contains(ids, rb.Header.Get("X-Request-Id")) {
		t.Fatalf("gateway B lists %v, want both gateways' requests", ids)
	}
}

// seedAudit stores n records spread over the last n minutes with a few principals, operations,
// targets and outcomes, and returns them.
func seedAudit(t testing.TB, store *db.DB, n int) {
	t.Helper()
	now := time.Now()
	outcomes := []string{"SUCCEEDED", "DENIED", "FLAGGED", "FAILED"}
	recs := make([]db.AuditRecord, n)
	for i := range recs {
		recs[i] = db.AuditRecord{At: now.Add(-time.Duration(i) * time.Minute), Principal: fmt.Sprintf("user:u%d", i%5),
			Operation: []string{"updateDevice", "heartbeat", "submitProof"}[i%3], Target: fmt.Sprintf("t%d", i%7),
			Outcome: outcomes[i%4], Reason: "", RequestID: fmt.Sprintf("req-%05d", i)}
		if i%10 == 0 { // rows sharing a timestamp: the id breaks the tie
			recs[i].At = now.Add(-time.Duration(i-1) * time.Minute)
		}
	}
	if err := store.InsertAudit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

type auditPage struct {
	AuditEvents struct {
		Edges []struct {
			Cursor string
			Node   struct{ ID, RequestID string }
		}
		Nodes    []struct{ ID, RequestID string }
		PageInfo struct {
			HasNextPage bool
			EndCursor   *string
		}
	}
}

// Paging walks every matching row once, newest first, in pages of any size, and each filter
// returns exactly the rows SQL does; bad arguments are BAD_USER_INPUT.
func TestAuditPagingAndFilters(t *testing.T) {
	t.Parallel()
	o := newAuditOwners(t)
	seedAudit(t, o.db, 230)
	admin := o.token("admin", "ADMIN")
	const q = `query($first: Int!, $after: String, $f: AuditFilter) { auditEvents(first: $first, after: $after, filter: $f) {
		edges { cursor node { id requestId } } nodes { id requestId } pageInfo { hasNextPage endCursor } } }`
	walk := func(first int, filter map[string]any) []string {
		var got []string
		var after *string
		for page := 0; ; page++ {
			var p auditPage
			o.as(admin, q, map[string]any{"first": first, "after": after, "f": filter}).Decode(t, &p)
			c := p.AuditEvents
			if len(c.Edges) != len(c.Nodes) || len(c.Nodes) > first {
				t.Fatalf("page %d: %d edges, %d nodes", page, len(c.Edges), len(c.Nodes))
			}
			for i, e := range c.Edges {
				if e.Node != c.Nodes[i] {
					t.Fatalf("edge %d %v, node %v", i, e.Node, c.Nodes[i])
				}
				got = append(got, e.Node.RequestID)
			}
			if !c.PageInfo.HasNextPage {
				return got
			}
			after = c.PageInfo.EndCursor
		}
	}
	sqlIDs := func(where string, args ...any) []string {
		var ids []string
		if err := o.x.Select(&ids, `SELECT request_id FROM audit_events WHERE request_id LIKE 'req-%' AND `+where+
			` ORDER BY at DESC, id DESC`, args...); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	since, until := time.Now().Add(-100*time.Minute), time.Now().Add(-30*time.Minute)
	cases := []struct {
		name   string
		filter map[string]any
		where  string
		args   []any
	}{
		{"principal", map[string]any{"principal": "user:u3"}, "principal = 'user:u3'", nil},
		{"target", map[string]any{"target": "t4"}, "target = 't4'", nil},
		{"operation", map[string]any{"operation": "heartbeat"}, "operation = 'heartbeat'", nil},
		{"outcome", map[string]any{"outcome": "FLAGGED"}, "outcome = 'FLAGGED'", nil},
		{"time range", map[string]any{"since": since, "until": until}, "at >= $1 AND at < $2", []any{since, until}},
		{"combined", map[string]any{"principal": "user:u1", "operation": "updateDevice", "until": until}, "principal = 'user:u1' AND operation = 'updateDevice' AND at < $1", []any{until}},
		{"no match", map[string]any{"principal": "user:nobody"}, "false", nil},
	}
	for _, c := range cases {
		want := sqlIDs(c.where, c.args...)
		got := walk(7, c.filter)
		// The seeded rows only (the test's own requests are audited too, without a req- id).
		got = slices.DeleteFunc(got, func(s string) bool { return !strings.HasPrefix(s, "req-") })
		if !slices.Equal(got, want) {
			t.Fatalf("%s: got %d rows %v, want %d %v", c.name, len(got), got, len(want), want)
		}
	}
	all := slices.DeleteFunc(walk(13, nil), func(s string) bool { return !strings.HasPrefix(s, "req-") })
	if want := sqlIDs("true"); len(all) != 230 || !slices.Equal(all, want) {
		t.Fatalf("the full walk has %d rows, in order: %v", len(all), slices.Equal(all, want))
	}

	var devices struct {
		Devices struct{ PageInfo struct{ EndCursor string } }
	}
	o.as(nil, `{ devices(first: 1) { pageInfo { endCursor } } }`, nil).Decode(t, &devices)
	long := strings.Repeat("x", db.MaxAuditFilterLen+1)
	bad := []struct {
		name string
		vars map[string]any
		msg  string
	}{
		{"first 0", map[string]any{"first": 0}, "first"},
		{"first 101", map[string]any{"first": 101}, "first"},
		{"garbage cursor", map[string]any{"first": 5, "after": "!!"}, "cursor"},
		{"a devices cursor", map[string]any{"first": 5, "after": devices.Devices.PageInfo.EndCursor}, "cursor"},
		{"forged cursor", map[string]any{"first": 5, "after": b64(map[string]any{"v": 1, "k": "audit", "t": "yesterday", "i": 1})}, "cursor"},
		{"long principal", map[string]any{"first": 5, "f": map[string]any{"principal": long}}, "principal"},
		{"bad outcome", map[string]any{"first": 5, "f": map[string]any{"outcome": "MAYBE"}}, ""},
	}
	for _, c := range bad {
		r := o.as(admin, q, c.vars)
		r.WantError(t, "BAD_USER_INPUT", c.msg)
	}
}

// Close writes every record still buffered, even with a flush interval that never came; a full
// buffer drops records, counted, without blocking the caller.
func TestAuditCloseLosesNothingAndOverflowIsCounted(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	count := func() (n int) {
		if err := x.Get(&n, `SELECT count(*) FROM audit_events`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	g := guard.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := guard.NewAuditLog(store, quiet, guard.AuditOptions{Interval: time.Hour, Batch: 400, Buffer: 5000})
	a.Attach(g)
	ctx := guard.WithRequest(context.Background(), guard.RequestInfo{ID: "req-close", ClientAddress: "::ffff:10.1.2.3", UserAgent: "ua"})
	for i := range 1900 {
		_ = g.Do(ctx, guard.Write{Op: "updateDevice", Actor: fmt.Sprintf("u%d", i), Target: "d"}, func(context.Context) error { return nil })
	}
	// Full batches are written without waiting for the (hour-long) interval.
	waitFor(t, func() bool { return count() == 1900 && a.Stats().Pending == 0 })
	for i := range 150 { // less than a batch: these wait for the interval, or Close
		g.Denied(ctx, guard.Write{Op: "pauseDevice", Actor: fmt.Sprintf("u%d", i), Target: "d"}, guard.ReasonForbidden)
	}
	if n, s := count(), a.Stats(); n != 1900 || s.Pending != 150 {
		t.Fatalf("before Close: %d rows, stats %+v", n, s)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, s := count(), a.Stats(); n != 2050 || s.Written != 2050 || s.Dropped != 0 || s.Pending != 0 {
		t.Fatalf("after Close: %d rows, stats %+v", n, s)
	}
	var addr string
	if err := x.Get(&addr, `SELECT DISTINCT host(client_address) FROM audit_events`); err != nil || addr != "10.1.2.3" {
		t.Fatalf("client address %q (%v)", addr, err)
	}
	g.Denied(ctx, guard.Write{Op: "late"}, guard.ReasonForbidden) // after Close: dropped and counted
	if s := a.Stats(); s.Dropped != 1 {
		t.Fatalf("a record after Close: %+v", s)
	}

	full := guard.NewAuditLog(store, quiet, guard.AuditOptions{Interval: time.Hour, Batch: 10, Buffer: 10})
	for i := range 25 {
		full.Record(guard.Event{Write: guard.Write{Op: "overflow", Actor: fmt.Sprint(i)}, Outcome: guard.Succeeded, At: time.Now()})
	}
	if err := full.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stored int
	if err := x.Get(&stored, `SELECT count(*) FROM audit_events WHERE operation = 'overflow'`); err != nil {
		t.Fatal(err)
	}
	if s := full.Stats(); s.Written+s.Dropped != 25 || uint64(stored) != s.Written || s.Dropped == 0 {
		t.Fatalf("overflow: %d stored, stats %+v", stored, s)
	}
}

// Retention: gpugate_purge_audit deletes rows older than the cutoff, never rows younger than a
// day; rows are never updated. A role with only INSERT and SELECT on the table (the gateway's,
// docs/operations.md) can append, read and purge through the function, and neither update nor
// delete a row itself.
func TestAuditRetentionAndAppendOnly(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	now := time.Now()
	var recs []db.AuditRecord
	for _, age := range []time.Duration{100 * 24 * time.Hour, 91 * 24 * time.Hour, 10 * 24 * time.Hour, 2 * time.Hour} {
		recs = append(recs, db.AuditRecord{At: now.Add(-age), Principal: "anonymous", Operation: "heartbeat",
			Outcome: "DENIED", Reason: age.String()})
	}
	if err := store.InsertAudit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	left := func() (n int) {
		if err := x.Get(&n, `SELECT count(*) FROM audit_events`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n, err := store.PurgeAudit(context.Background(), now.Add(-90*24*time.Hour)); err != nil || n != 2 || left() != 2 {
		t.Fatalf("purge of 90 days: %d (%v), %d left", n, err, left())
	}
	// The owner's floor (audit_policy, 30 days by default) holds whatever the caller asks: the
	// 10-day row stays until the owner lowers it; the last day is kept at any floor.
	if n, err := store.PurgeAudit(context.Background(), now.Add(time.Hour)); err != nil || n != 0 || left() != 2 {
		t.Fatalf("purge of everything: %d (%v), %d left: the owner's 30-day floor is kept", n, err, left())
	}
	if _, err := x.Exec(`UPDATE audit_policy SET min_retention = interval '0'`); err == nil {
		t.Fatal("a retention floor under a day was accepted")
	}
	if _, err := x.Exec(`UPDATE audit_policy SET min_retention = interval '1 day'`); err != nil {
		t.Fatal(err)
	}
	if n, err := store.PurgeAudit(context.Background(), now.Add(time.Hour)); err != nil || n != 1 || left() != 1 {
		t.Fatalf("purge of everything at a one-day floor: %d (%v), %d left: the last day is kept", n, err, left())
	}
	if _, err := x.Exec(`UPDATE audit_events SET outcome = 'SUCCEEDED'`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("update: %v", err)
	}

	var b [4]byte
	_, _ = rand.Read(b[:])
	role := fmt.Sprintf("audit_writer_%x", b)
	for _, stmt := range []string{"CREATE ROLE " + role, "GRANT INSERT, SELECT ON audit_events TO " + role,
		"GRANT EXECUTE ON FUNCTION gpugate_purge_audit(timestamptz, integer) TO " + role} {
		if _, err := x.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = x.Exec("DROP OWNED BY " + role + "; DROP ROLE " + role) })
	as := func(f func(tx *sqlx.Tx) error) error {
		tx, err := x.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.Exec("SET LOCAL ROLE " + role); err != nil {
			t.Fatal(err)
		}
		return f(tx)
	}
	if err := as(func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`INSERT INTO audit_events (at, principal, operation, outcome) VALUES (now(), 'anonymous', 'x', 'DENIED')`)
		return err
	}); err != nil {
		t.Fatalf("the writer role cannot append: %v", err)
	}
	for _, stmt := range []string{`DELETE FROM audit_events`, `UPDATE audit_events SET reason = 'x'`, `TRUNCATE audit_events`} {
		if err := as(func(tx *sqlx.Tx) error { _, err := tx.Exec(stmt); return err }); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("%s as the writer role: %v", stmt, err)
		}
	}
	if err := as(func(tx *sqlx.Tx) error {
		var n int64
		return tx.Get(&n, `SELECT gpugate_purge_audit(now(), 100)`)
	}); err != nil {
		t.Fatalf("the writer role cannot purge through the function: %v", err)
	}
}

// BenchmarkAuditIngest measures the writer: records handed to Record per second, all of them
// stored (Close waits for the last batch).
func BenchmarkAuditIngest(b *testing.B) {
	store := db.New(dbtest.New(b), db.Options{})
	a := guard.NewAuditLog(store, nil, guard.AuditOptions{Buffer: 1 << 22})
	ev := guard.Event{Write: guard.Write{Op: "heartbeat", Actor: "device:0b6f5c3e-0000-4000-8000-000000000001",
		Target: "0b6f5c3e-0000-4000-8000-000000000001"}, Outcome: guard.Succeeded,
		Request: guard.RequestInfo{ID: "0123456789abcdef01234567", ClientAddress: "10.0.0.1", UserAgent: "gpugate-worker/1.0"}}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		ev.At = time.Now()
		a.Record(ev)
	}
	recorded := time.Since(start)
	if err := a.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// What a request pays (Record) and what the writer sustains (rows stored per second).
	b.ReportMetric(float64(recorded.Nanoseconds())/float64(b.N), "record-ns/op")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
	if s := a.Stats(); s.Dropped != 0 || s.Written != uint64(b.N) {
		b.Fatalf("stats %+v for %d records", s, b.N)
	}
}

// BenchmarkAuditList measures a page of 100 over 200,000 rows (mostly heartbeats, as in
// production): unfiltered, by a rare operation, by principal, by outcome, and the tenth page.
func BenchmarkAuditList(b *testing.B) {
	store := db.New(dbtest.New(b), db.Options{})
	now := time.Now()
	for chunk := range 20 {
		recs := make([]db.AuditRecord, 10000)
		for i := range recs {
			n := chunk*10000 + i
			recs[i] = db.AuditRecord{At: now.Add(-time.Duration(n) * time.Second), Principal: fmt.Sprintf("device:%d", n%500),
				Operation: "heartbeat", Target: fmt.Sprintf("d%d", n%500), Outcome: "SUCCEEDED"}
			if n%50 == 0 {
				recs[i].Operation, recs[i].Principal, recs[i].Outcome, recs[i].Reason = "updateDevice", fmt.Sprintf("user:%d", n%7), "DENIED", "FORBIDDEN"
			}
		}
		if err := store.InsertAudit(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := store.SQL().Exec(`ANALYZE audit_events`); err != nil {
		b.Fatal(err)
	}
	p, err := store.ListAudit(context.Background(), 100, "", db.AuditQuery{})
	if err != nil {
		b.Fatal(err)
	}
	page10 := p.Cursors[99]
	for range 8 {
		p, _ = store.ListAudit(context.Background(), 100, page10, db.AuditQuery{})
		page10 = p.Cursors[99]
	}
	for _, c := range []struct {
		name  string
		after string
		f     db.AuditQuery
	}{
		{"newest", "", db.AuditQuery{}},
		{"operation", "", db.AuditQuery{Operation: "updateDevice"}},
		{"principal", "", db.AuditQuery{Principal: "user:3"}},
		{"outcome", "", db.AuditQuery{Outcome: "DENIED"}},
		{"page10", page10, db.AuditQuery{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				if p, err := store.ListAudit(context.Background(), 100, c.after, c.f); err != nil || len(p.Records) != 100 {
					b.Fatal(len(p.Records), err)
				}
			}
		})
	}
}
