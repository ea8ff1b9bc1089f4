package gateway_test

// Fuzz targets that drive the real gateway handler over real HTTP, on a real PostgreSQL seeded
// with devices of two users (docs/security.md, "Fuzzing"): GraphQL documents and variables as
// each kind of caller, cursors, device IDs and other arguments, the device signature header, and
// the worker's own inputs (enrollment, proofs, heartbeats) signed with a real device key.
//
// Every response to every input must be: never a panic, never HTTP 500 (or any 5xx but an
// OVERLOADED 503), a JSON object with data or errors, no INTERNAL error (bad input gets a clear
// error), no raw driver or SQL text in a message, and no identifier of a user the caller is not
// (user ID, email, owner-only host name) anywhere in the body.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/resolvers"
)

// fuzzEnv is one gateway on one database for all inputs of a fuzz target.
type fuzzEnv struct {
	url    string
	x      *sqlx.DB
	idp    *idp
	client *http.Client
	// tokens of the callers: "" anonymous, then bob (a user), then an admin
	bob, admin string
	// what each kind of caller must never see: alice's user ID, email and owner-only host name,
	// bob's ID and email (anonymous callers only)
	aliceSecrets, bobSecrets []string
	// alice's enrolled worker
	key      ed25519.PrivateKey
	deviceID string
	// a real device ID, cursors of every listing, a genuine proof's variables
	someDevice string
	cursors    map[string]string
}

// fuzzRaw forbids text of the driver and of PostgreSQL in any error message.
var fuzzRaw = []string{"pq:", "SQLSTATE", "syntax error at or near", "sql:", "violates", "relation \"",
	"invalid input syntax", "out of range for type", "duplicate key", "database/sql", "lib/pq"}

func fuzzNewIDP(tb testing.TB) *idp {
	tb.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	ots := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"}}}
	srv := httptest.NewServer(ots)
	tb.Cleanup(srv.Close)
	ots.SetIssuer(srv.URL)
	v, err := oidc.New(context.Background(), oidc.Config{Issuers: []oidc.IssuerConfig{{URL: srv.URL, Audience: audience, RolesClaim: "groups"}}})
	if err != nil {
		tb.Fatal(err)
	}
	return &idp{url: srv.URL, key: key, rogue: key, verifier: v}
}

// fuzzSetup starts the gateway, seeds 40 demo devices, links alice, bob and an admin, gives
// alice's first device a secret host name and enrolls a worker for alice.
func fuzzSetup(tb testing.TB) *fuzzEnv {
	tb.Helper()
	ctx := context.Background()
	p := fuzzNewIDP(tb)
	x := dbtest.New(tb)
	if _, err := db.New(x, db.Options{}).Seed(ctx, 40); err != nil {
		tb.Fatal(err)
	}
	store := dbtest.Store(tb, x, db.Options{StatsTTL: -1})
	// Identity write limits far above what a fuzzer sends: a limited write is a clean error,
	// but it would hide everything behind it.
	lots := guard.Rate{Every: time.Microsecond, Burst: 1 << 30}
	cfg := gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers:     resolvers.WorkerConfig{Difficulty: 4},
		WriteLimits: guard.LimitConfig{User: lots, Target: lots, Distinct: lots, DistinctWindow: time.Second}}
	srv := httptest.NewServer(gateway.New(cfg, store, slog.New(slog.NewTextHandler(io.Discard, nil))))
	tb.Cleanup(srv.Close)
	e := &fuzzEnv{url: srv.URL, x: x, idp: p, client: srv.Client(), cursors: map[string]string{}}
	ids := map[string]string{}
	for _, u := range []string{"alice", "bob", "admin"} {
		if err := store.LinkIdentity(ctx, db.Identity{Issuer: p.url, Subject: u}, u+"@example.com", "mapping"); err != nil {
			tb.Fatal(err)
		}
		var id string
		if err := x.Get(&id, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, p.url, u); err != nil {
			tb.Fatal(err)
		}
		ids[u] = id
	}
	e.bob = p.sign(p.claims("bob"))
	e.admin = p.sign(p.claims("admin", "ADMIN"))
	const secretHost = "alice-secret-host-5f1c9e"
	if _, err := x.Exec(`UPDATE devices SET hostname = $1 WHERE id = (SELECT id FROM devices WHERE owner_id = $2 ORDER BY id LIMIT 1)`,
		secretHost, ids["alice"]); err != nil {
		tb.Fatal(err)
	}
	e.aliceSecrets = []string{ids["alice"], "alice@example.com", secretHost}
	e.bobSecrets = []string{ids["bob"], "bob@example.com"}
	if err := x.Get(&e.someDevice, `SELECT id FROM devices ORDER BY id LIMIT 1`); err != nil {
		tb.Fatal(err)
	}

	// alice's worker, enrolled as the real worker does
	var tok struct {
		Data struct{ CreateEnrollmentToken struct{ Token string } }
	}
	e.decode(tb, e.post(tb, p.sign(p.claims("alice")), `mutation { createEnrollmentToken { token } }`, nil), &tok)
	_, e.key, _ = ed25519.GenerateKey(rand.Reader)
	var enrolled struct {
		Data struct{ EnrollDevice struct{ DeviceID string } }
	}
	e.decode(tb, e.signed(tb, "", fuzzBody(enrollMutation, e.enrollVars(tok.Data.CreateEnrollmentToken.Token))), &enrolled)
	e.deviceID = enrolled.Data.EnrollDevice.DeviceID
	if e.deviceID == "" {
		tb.Fatal("enrollment gave no device")
	}

	// a real endCursor of every listing
	for _, order := range []string{"CREATED_AT_DESC", "CREATED_AT_ASC", "NAME_ASC", "NAME_DESC", "VERIFICATION_LEVEL_DESC", "VERIFICATION_LEVEL_ASC"} {
		var page struct {
			Data struct {
				Devices struct{ PageInfo struct{ EndCursor string } }
			}
		}
		field, dir, _ := strings.Cut(strings.Replace(order, "_DESC", "|DESC", 1), "|")
		if dir == "" {
			field, dir, _ = strings.Cut(strings.Replace(order, "_ASC", "|ASC", 1), "|")
		}
		e.decode(tb, e.post(tb, "", `query($o: DeviceOrder) { devices(first: 2, orderBy: $o) { pageInfo { endCursor } } }`,
			map[string]any{"o": map[string]any{"field": field, "direction": dir}}), &page)
		e.cursors[order] = page.Data.Devices.PageInfo.EndCursor
	}
	var search struct {
		Data struct {
			SearchDevices struct{ PageInfo struct{ EndCursor string } }
		}
	}
	e.decode(tb, e.post(tb, "", `{ searchDevices(query: "gpu", first: 2) { pageInfo { endCursor } } }`, nil), &search)
	e.cursors["SEARCH"] = search.Data.SearchDevices.PageInfo.EndCursor
	var audit struct {
		Data struct {
			AuditEvents struct{ PageInfo struct{ EndCursor string } }
		}
	}
	e.decode(tb, e.post(tb, e.admin, `{ auditEvents(first: 1) { pageInfo { endCursor } } }`, nil), &audit)
	e.cursors["AUDIT"] = audit.Data.AuditEvents.PageInfo.EndCursor
	return e
}

func (e *fuzzEnv) enrollVars(token string) map[string]any {
	js, _ := json.Marshal(h100Host(0xf1))
	return map[string]any{"in": map[string]any{"token": token,
		"publicKey": base64.StdEncoding.EncodeToString(e.key.Public().(ed25519.PublicKey)),
		"region":    "eu-west", "hostname": "dgx-fuzz", "snapshot": string(js)}}
}

// fuzzBody is a request body as clients send it.
func fuzzBody(query string, vars map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return b
}

// fuzzRawBody is a request body whose variables are the fuzzer's bytes when they are JSON, and
// the fuzzer's string (a wrong type, which the gateway must refuse cleanly) when not.
func fuzzRawBody(query, variables string) []byte {
	var vars any = variables
	if variables == "" {
		vars = nil
	} else if json.Valid([]byte(variables)) {
		vars = json.RawMessage(variables)
	}
	b, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil { // invalid UTF-8 is replaced, never an error; be safe anyway
		b = []byte(`{"query":` + strconv.Quote(query) + `}`)
	}
	return b
}

// fuzzResponse is what one request returned.
type fuzzResponse struct {
	status int
	body   []byte
}

func (e *fuzzEnv) do(tb testing.TB, body []byte, header http.Header) fuzzResponse {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/graphql", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		tb.Fatalf("POST /graphql: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the response: %v", err)
	}
	return fuzzResponse{resp.StatusCode, b}
}

func (e *fuzzEnv) post(tb testing.TB, token, query string, vars map[string]any) fuzzResponse {
	tb.Helper()
	var h http.Header
	if token != "" {
		h = http.Header{"Authorization": {"Bearer " + token}}
	}
	return e.do(tb, fuzzBody(query, vars), h)
}

// signed sends b signed by alice's worker key as device (empty for an enrollment).
func (e *fuzzEnv) signed(tb testing.TB, device string, b []byte) fuzzResponse {
	tb.Helper()
	h := http.Header{attest.SignatureHeader: {attest.SignRequest(e.key, device, http.MethodPost, "/graphql", time.Now(), b)}}
	return e.do(tb, b, h)
}

// decode fails tb unless r is a GraphQL response without errors, and decodes it into v.
func (e *fuzzEnv) decode(tb testing.TB, r fuzzResponse, v any) {
	tb.Helper()
	var probe struct{ Errors []any }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &probe) != nil || len(probe.Errors) > 0 {
		tb.Fatalf("setup request: HTTP %d %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatal(err)
	}
}

// check asserts the properties every response has (see the file comment); forbidden are the
// identifiers this caller must not see.
func fuzzCheck(t *testing.T, r fuzzResponse, forbidden []string) {
	t.Helper()
	var out struct {
		Data   *json.RawMessage    `json:"data"`
		Errors []testutil.GQLError `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("HTTP %d: the body is not a JSON object (%v): %.300s", r.status, err, r.body)
	}
	if out.Data == nil && len(out.Errors) == 0 {
		t.Fatalf("HTTP %d: neither data nor errors: %.300s", r.status, r.body)
	}
	overloaded := false
	for _, ge := range out.Errors {
		switch ge.Code() {
		case gateway.CodeInternal:
			t.Fatalf("HTTP %d: an INTERNAL error for client input at %v: %.500s", r.status, ge.Path, r.body)
		case gateway.CodeOverloaded:
			overloaded = true
		}
		for _, raw := range fuzzRaw {
			if strings.Contains(ge.Message, raw) {
				t.Fatalf("HTTP %d: error message carries driver/SQL text %q: %s", r.status, raw, ge.Message)
			}
		}
	}
	if r.status >= 500 && !(r.status == http.StatusServiceUnavailable && overloaded) {
		t.Fatalf("HTTP %d: %.500s", r.status, r.body)
	}
	for _, s := range forbidden {
		if bytes.Contains(r.body, []byte(s)) {
			t.Fatalf("the response carries %q, an identifier this caller must not see: %.500s", s, r.body)
		}
	}
}

// fuzzDocuments are real documents of every operation, with real variables, for the seeds.
func (e *fuzzEnv) fuzzDocuments() [][2]string {
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	dev := js(map[string]any{"id": e.someDevice})
	return [][2]string{
		{`query($id: ID!) { device(id: $id) { id name status region verification verificationLevel gpuModel gpuCount lastSeenAt createdAt gpus { uuid name } private { hostname } } }`, dev},
		{`query($id: ID!) { device(id: $id) { id } }`, js(map[string]any{"id": strings.ToUpper(e.someDevice)})},
		{`query($id: ID!) { device(id: $id) { id } }`, js(map[string]any{"id": "urn:uuid:" + e.someDevice})},
		{`query($a: String) { devices(first: 3, after: $a) { edges { cursor node { id name } } pageInfo { endCursor hasNextPage } } }`, js(map[string]any{"a": e.cursors["CREATED_AT_DESC"]})},
		{`query($a: String, $o: DeviceOrder, $f: DeviceFilter) { devices(first: 5, after: $a, orderBy: $o, filter: $f) { edges { node { id verificationLevel } } } }`,
			js(map[string]any{"a": e.cursors["VERIFICATION_LEVEL_ASC"], "o": map[string]any{"field": "VERIFICATION_LEVEL", "direction": "ASC"}, "f": map[string]any{"status": "UP", "region": "eu-west"}})},
		{`query($q: String!, $a: String) { searchDevices(query: $q, first: 4, after: $a) { edges { node { id name } } } }`, js(map[string]any{"q": "gpu", "a": e.cursors["SEARCH"]})},
		{`query($q: String!) { searchDevices(query: $q, first: 4) { edges { node { id } } } }`, js(map[string]any{"q": e.someDevice[:8]})},
		{`{ networkStats { devices gpus } }`, ""},
		{`{ viewer { id email displayName devices(first: 2) { edges { node { id private { hostname labels } } } } } }`, ""},
		{`query($a: String) { auditEvents(first: 2, after: $a) { edges { node { principal operation outcome } } } }`, js(map[string]any{"a": e.cursors["AUDIT"]})},
		{`query($id: ID!) { deviceAddresses(id: $id) { deviceId addresses { address } } }`, dev},
		{`{ gpuConflicts(first: 3) { uuid } writeSwitches { class enabled } }`, ""},
		{`mutation($id: ID!, $in: UpdateDeviceInput!) { updateDevice(id: $id, input: $in) { id name } }`, js(map[string]any{"id": e.someDevice, "in": map[string]any{"name": "renamed", "labels": []string{"a"}}})},
		{`mutation($id: ID!) { pauseDevice(id: $id) { id } resumeDevice(id: $id) { id } }`, dev},
		{`mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id fingerprint } }`, js(map[string]any{"id": e.someDevice, "k": base64.StdEncoding.EncodeToString(make([]byte, 32))})},
		{`mutation($id: ID!, $c: ID!) { revokeDeviceKey(id: $id, credentialId: $c) { id } }`, js(map[string]any{"id": e.someDevice, "c": e.someDevice})},
		{`mutation($id: ID!, $r: String!) { quarantineDevice(id: $id, reason: $r) { id } }`, js(map[string]any{"id": e.someDevice, "r": "fuzz"})},
		{`mutation($u: String!, $id: ID!) { reassignGpu(uuid: $u, deviceId: $id) { id } }`, js(map[string]any{"u": "GPU-1", "id": e.someDevice})},
		{`mutation { createEnrollmentToken { token expiresAt } }`, ""},
		{`mutation($c: WriteClass!, $r: String!) { disableWrites(class: $c, reason: $r) { class } }`, js(map[string]any{"c": "NOPE", "r": "x"})},
		{`query { __schema { types { name } } }`, ""},
		{`query A { a: networkStats { devices } } query B { networkStats { gpus } }`, ""},
		{`{ device(id: "x") { ...F } } fragment F on Device { ...F }`, ""},
		{testutil.AmplificationDocument(), ""},
		{`{`, `{"x":`},
		{"", "null"},
	}
}

// FuzzGraphQL sends documents and variables as an anonymous caller (POST, GET with the query
// string, or the fuzzer's bytes as the whole body), as bob (a signed-in user) and as an admin.
// Only the owner ever sees owner-only fields, so alice's host name is in no response; her user
// ID and email reach no one but an admin (the audit log names principals); bob's reach no
// anonymous caller.
func FuzzGraphQL(f *testing.F) {
	e := fuzzSetup(f)
	for i, d := range e.fuzzDocuments() {
		f.Add(uint8(i%5), d[0], d[1])
	}
	f.Add(uint8(4), `{"query":"{ networkStats { devices } }","variables":{},"operationName":null,"extensions":{}}`, "")
	f.Add(uint8(4), `[{"query":"{ networkStats { devices } }"}]`, "")
	f.Fuzz(func(t *testing.T, caller uint8, query, variables string) {
		var h http.Header
		forbidden := append(append([]string{}, e.aliceSecrets...), e.bobSecrets...)
		switch caller % 5 {
		case 1:
			h = http.Header{"Authorization": {"Bearer " + e.bob}}
			forbidden = e.aliceSecrets
		case 2:
			h = http.Header{"Authorization": {"Bearer " + e.admin}}
			forbidden = e.aliceSecrets[2:]
		case 3:
			q := url.Values{"query": {query}}
			if variables != "" {
				q.Set("variables", variables)
			}
			fuzzCheck(t, e.get(t, q.Encode()), forbidden)
			return
		case 4:
			fuzzCheck(t, e.do(t, []byte(query+variables), nil), forbidden)
			return
		}
		fuzzCheck(t, e.do(t, fuzzRawBody(query, variables), h), forbidden)
	})
}

// get sends GET /graphql?rawQuery.
func (e *fuzzEnv) get(tb testing.TB, rawQuery string) fuzzResponse {
	tb.Helper()
	resp, err := e.client.Get(e.url + "/graphql?" + rawQuery)
	if err != nil {
		tb.Fatalf("GET /graphql: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the response: %v", err)
	}
	return fuzzResponse{resp.StatusCode, b}
}

// FuzzCursorAndID sends one string as the after cursor of every listing and as a device ID,
// anonymously and as bob: a cursor or ID the server did not issue is BAD_USER_INPUT (or, for an
// ID, NOT_FOUND), never an internal error, and a real one pages on.
func FuzzCursorAndID(f *testing.F) {
	e := fuzzSetup(f)
	for _, c := range e.cursors {
		f.Add(c, false)
		f.Add(c, true)
	}
	// other spellings of real positions: an urn: or upper-case ID, a year-0 time, a NUL name
	for _, c := range []struct{ order, edit, to string }{
		{"CREATED_AT_DESC", "i", "urn:uuid:" + e.someDevice}, {"CREATED_AT_DESC", "i", strings.ToUpper(e.someDevice)},
		{"CREATED_AT_DESC", "k", "0000-01-01T00:00:00Z"}, {"CREATED_AT_DESC", "k", "2026-01-01T00:00:00+15:00"},
		{"VERIFICATION_LEVEL_DESC", "k", "1/0000-01-01T00:00:00Z"}, {"NAME_ASC", "k", "a\x00b"}, {"SEARCH", "k", "a\x00b"},
	} {
		f.Add(fuzzEditCursor(f, e.cursors[c.order], c.edit, c.to), false)
	}
	for _, s := range []string{e.someDevice, strings.ToUpper(e.someDevice), "{" + e.someDevice + "}", "urn:uuid:" + e.someDevice,
		strings.ReplaceAll(e.someDevice, "-", ""), "", "eyJ2IjoxfQ", "\x00"} {
		f.Add(s, false)
	}
	const doc = `query($a: String, $id: ID!) {
		c: devices(first: 2, after: $a) { pageInfo { endCursor } }
		n: devices(first: 2, after: $a, orderBy: {field: NAME, direction: ASC}) { pageInfo { endCursor } }
		l: devices(first: 2, after: $a, orderBy: {field: VERIFICATION_LEVEL, direction: DESC}) { pageInfo { endCursor } }
		f: devices(first: 2, after: $a, filter: {status: UP, region: "eu-west"}) { pageInfo { endCursor } }
		s: searchDevices(query: "gpu", first: 2, after: $a) { pageInfo { endCursor } }
		d: device(id: $id) { id }
	}`
	const owner = `query($a: String, $id: ID!) {
		viewer { devices(first: 2, after: $a) { pageInfo { endCursor } } }
		d: device(id: $id) { id private { hostname } }
	}`
	f.Fuzz(func(t *testing.T, s string, signedIn bool) {
		vars := map[string]any{"a": s, "id": s}
		if !signedIn {
			fuzzCheck(t, e.do(t, fuzzBody(doc, vars), nil), append(append([]string{}, e.aliceSecrets...), e.bobSecrets...))
			return
		}
		fuzzCheck(t, e.do(t, fuzzBody(owner, vars), http.Header{"Authorization": {"Bearer " + e.bob}}), e.aliceSecrets)
		fuzzCheck(t, e.do(t, fuzzBody(`query($a: String) { auditEvents(first: 2, after: $a) { pageInfo { endCursor } } }`, vars),
			http.Header{"Authorization": {"Bearer " + e.admin}}), e.aliceSecrets[2:])
	})
}

// fuzzEditCursor returns cursor with its JSON field set to value.
func fuzzEditCursor(tb testing.TB, cursor, field, value string) string {
	tb.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatal(err)
	}
	m[field] = value
	b, _ := json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(b)
}

// FuzzDeviceSignatureHeader sends worker operations with an arbitrary X-Gpugate-Signature
// (deviceauth's path through the handler): never authenticated as a device (no signature over
// this body by a key the server knows can be made by the fuzzer), always a clean refusal.
func FuzzDeviceSignatureHeader(f *testing.F) {
	e := fuzzSetup(f)
	hb := fuzzBody(`mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`, map[string]any{"d": e.deviceID})
	now := time.Now()
	for _, h := range []string{
		attest.SignRequest(e.key, e.deviceID, http.MethodPost, "/graphql", now, hb),                     // signed over another body below
		attest.SignRequest(e.key, e.deviceID, http.MethodPost, "/graphql", now.Add(-time.Hour), hb),     // stale
		attest.SignRequest(e.key, strings.ToUpper(e.deviceID), http.MethodPost, "/graphql", now, hb),    // non-canonical device
		attest.SignRequest(e.key, "", http.MethodPost, "/graphql", now, hb),                             // enrollment form
		"v1 device=" + e.deviceID + " ts=0 nonce=AAAAAAAAAAAAAAAAAAAAAA sig=" + strings.Repeat("A", 86), // zero signature
		"", "v1", "v2 device= ts= nonce= sig=",
	} {
		f.Add(h, e.deviceID, "")
	}
	f.Fuzz(func(t *testing.T, header, deviceArg, extra string) {
		if !fuzzSendable(header) {
			return // no HTTP client sends it, and Go's server answers 400 before any handler
		}
		b := fuzzBody(`mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`, map[string]any{"d": deviceArg, "x": extra})
		r := e.do(t, b, http.Header{attest.SignatureHeader: {header}})
		fuzzCheck(t, r, append(append([]string{}, e.aliceSecrets...), e.bobSecrets...))
		var out struct {
			Data *struct{ Heartbeat *struct{ Status string } }
		}
		if json.Unmarshal(r.body, &out) == nil && out.Data != nil && out.Data.Heartbeat != nil {
			t.Fatalf("header %q authenticated a heartbeat: %s", header, r.body)
		}
	})
}

// fuzzSendable reports whether v is a header value net/http can send: no control character but
// horizontal tab.
func fuzzSendable(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzWorkerRequest sends documents and variables signed correctly by alice's enrolled worker
// key (as her device, or in the enrollment form), so that they reach the worker operations'
// decoders: enrollment tokens, public keys, snapshot JSON, proofs, evidence and heartbeats.
func FuzzWorkerRequest(f *testing.F) {
	e := fuzzSetup(f)
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	// a genuine proof for a fresh challenge
	var ch struct {
		Data struct {
			RequestChallenge struct {
				ID, Nonce  string
				Difficulty int
			}
		}
	}
	e.decode(f, e.signed(f, e.deviceID, fuzzBody(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`,
		map[string]any{"d": e.deviceID})), &ch)
	nonce, _ := base64.StdEncoding.DecodeString(ch.Data.RequestChallenge.Nonce)
	proof, err := attest.Prove(context.Background(), e.key, ch.Data.RequestChallenge.ID, nonce, ch.Data.RequestChallenge.Difficulty, h100Host(0xf1))
	if err != nil {
		f.Fatal(err)
	}
	snap, _ := json.Marshal(proof.Snapshot)
	proofIn := map[string]any{"challengeId": proof.ChallengeID, "counter": strconv.FormatUint(proof.Counter, 10),
		"snapshot": string(snap), "snapshotHash": base64.StdEncoding.EncodeToString(proof.SnapshotHash),
		"signature": base64.StdEncoding.EncodeToString(proof.Signature)}
	withEvidence := map[string]any{}
	for k, v := range proofIn {
		withEvidence[k] = v
	}
	withEvidence["evidence"] = []map[string]any{{"index": 0, "report": base64.StdEncoding.EncodeToString([]byte("report")),
		"certificateChain": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}
	const submit = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification level gpus { index } } }`
	var tok struct {
		Data struct{ CreateEnrollmentToken struct{ Token string } }
	}
	e.decode(f, e.post(f, e.idp.sign(e.idp.claims("alice")), `mutation { createEnrollmentToken { token } }`, nil), &tok)
	seeds := []struct {
		enroll    bool
		doc, vars string
	}{
		{false, submit, js(map[string]any{"d": e.deviceID, "in": proofIn})},
		{false, submit, js(map[string]any{"d": e.deviceID, "in": withEvidence})},
		{false, `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty expiresAt } }`, js(map[string]any{"d": e.deviceID})},
		{false, `mutation($d: ID!, $in: HeartbeatInput!) { heartbeat(deviceId: $d, input: $in) { status nextInSeconds } }`,
			js(map[string]any{"d": e.deviceID, "in": map[string]any{"gpus": []map[string]any{{"uuid": "GPU-x", "utilizationPercent": 97, "temperatureC": 61, "memoryUsedMiB": 1, "powerWatts": 300}}}})},
		{true, enrollMutation, js(e.enrollVars(tok.Data.CreateEnrollmentToken.Token))},
		{true, enrollMutation, js(e.enrollVars("gpe_" + strings.Repeat("A", 43)))},
		{false, `mutation($d: ID!) { pauseDevice(id: $d) { id } }`, js(map[string]any{"d": e.deviceID})},
	}
	for _, s := range seeds {
		f.Add(s.enroll, s.doc, s.vars)
	}
	forbidden := e.bobSecrets // the worker is alice's
	f.Fuzz(func(t *testing.T, enroll bool, query, variables string) {
		device := e.deviceID
		if enroll {
			device = ""
		}
		b := fuzzRawBody(query, variables)
		h := http.Header{attest.SignatureHeader: {attest.SignRequest(e.key, device, http.MethodPost, "/graphql", time.Now(), b)}}
		fuzzCheck(t, e.do(t, b, h), forbidden)
	})
}
