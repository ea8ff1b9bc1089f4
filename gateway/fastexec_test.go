package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/gateway/fastexec"
	"github.com/gpugate/gpugate/graph/model"
)

// The compiled executor (gateway/fastexec) must answer byte for byte what gqlgen's executor
// answers. These tests serve one database through two gateways, one with the compiled executor
// and one without (Config.DisableFastExec), send each document to both over HTTP and compare the
// status, content type and body. They also count, through fastexec.Stats, which documents the
// compiled executor answered itself, so a fast path that silently never runs fails them. They
// do not run in parallel: the counts are process-wide.

// twin is two gateways over one seeded database: fast with the compiled executor, slow without.
type twin struct {
	t          *testing.T
	x          *sqlx.DB
	idp        *idp
	fast, slow string
	seq        int
}

const twinDevices = 240

func newTwin(t *testing.T) *twin {
	t.Helper()
	p := newIDP(t)
	x := dbtest.New(t)
	if _, err := db.New(x, db.Options{}).Seed(context.Background(), twinDevices); err != nil {
		t.Fatal(err)
	}
	// Data the seed lacks: quarantined devices, devices never seen, and text that JSON must escape
	// (quotes, backslashes, control characters, non-ASCII) in the newest devices' name, region and
	// GPU model, which most pages show.
	for _, q := range []string{
		`UPDATE devices SET status = 'QUARANTINED', quarantined_at = now(), quarantine_reason = 'test' WHERE id IN (SELECT id FROM devices ORDER BY id OFFSET 20 LIMIT 3)`,
		`UPDATE devices SET last_seen_at = NULL WHERE id IN (SELECT id FROM devices ORDER BY id LIMIT 12)`,
		`UPDATE devices SET name = E'quo"te \\ back\tslash\u0001 \u00e9\u2603 </script>' WHERE id = (SELECT id FROM devices ORDER BY created_at DESC, id DESC LIMIT 1)`,
		`UPDATE devices SET region = E'r\u00e9gion "x"' WHERE id = (SELECT id FROM devices ORDER BY created_at DESC, id DESC OFFSET 1 LIMIT 1)`,
		`UPDATE gpus SET model = E'GPU \u00ab"\n\u00bb' WHERE device_id = (SELECT id FROM devices ORDER BY created_at DESC, id DESC LIMIT 1)`,
	} {
		if _, err := x.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	store := dbtest.Store(t, x, db.Options{StatsTTL: -1})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// MaxDepth 6: the deepest public selection (devices edges node gpus uuid) is 5 deep. MaxCost
	// 60,000: the cost model prices Device.gpus at 64 GPUs, so a page of 100 devices with every
	// GPU field costs about 52,000 (the default limit, 5,000, refuses any page of 100 with gpus).
	cfg := gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		MaxDepth: 6, MaxCost: 60000}
	fast := httptest.NewServer(gateway.New(cfg, store, log))
	t.Cleanup(fast.Close)
	cfg.DisableFastExec = true
	slow := httptest.NewServer(gateway.New(cfg, store, log))
	t.Cleanup(slow.Close)
	for _, u := range []string{"alice", "bob"} {
		if err := store.LinkIdentity(context.Background(), db.Identity{Issuer: p.url, Subject: u}, u+"@example.com", "mapping"); err != nil {
			t.Fatal(err)
		}
	}
	return &twin{t: t, x: x, idp: p, fast: fast.URL, slow: slow.URL}
}

// reply is what a client sees of a response.
type reply struct {
	status      int
	contentType string
	body        []byte
}

func send(t *testing.T, base string, body []byte, header http.Header) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header.Get("Content-Type"), b}
}

// doc is one request of the corpus: the document, its variables and operation name, the caller,
// and whether the compiled executor must answer it itself.
type doc struct {
	name  string
	query string
	vars  map[string]any
	op    string
	token string // "" anonymous, else a user subject at the test IdP
	fast  bool
	any   bool // the caller checks who answered
}

// compare sends d to both gateways (same request id, so error bodies match too) and fails unless
// the replies are identical and the compiled executor answered exactly when d.fast. It returns
// the reply.
func (tw *twin) compare(d doc) reply {
	t := tw.t
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": d.query, "variables": d.vars, "operationName": d.op})
	tw.seq++
	h := http.Header{"X-Request-Id": {fmt.Sprintf("fastexec-diff-%06d", tw.seq)}}
	if d.token != "" {
		h.Set("Authorization", "Bearer "+tw.idp.sign(tw.idp.claims(d.token)))
	}
	served0, _ := fastexec.Stats()
	slow := send(t, tw.slow, body, h)
	served1, _ := fastexec.Stats()
	fast := send(t, tw.fast, body, h)
	served2, _ := fastexec.Stats()
	if served1 != served0 {
		t.Errorf("%s: the gateway with DisableFastExec used the compiled executor", d.name)
	}
	if got := served2 - served1; !d.any && d.fast && got != 1 {
		t.Errorf("%s: the compiled executor did not answer (served %d)\n%s\n%.300s", d.name, got, d.query, fast.body)
	} else if !d.any && !d.fast && got != 0 {
		t.Errorf("%s: the compiled executor answered a document it must leave to gqlgen", d.name)
	}
	if slow.status != fast.status || slow.contentType != fast.contentType || !bytes.Equal(slow.body, fast.body) {
		t.Errorf("%s: replies differ\nquery: %s\nvars: %v\ngqlgen:   %d %s %s\ncompiled: %d %s %s", d.name, d.query, d.vars,
			slow.status, slow.contentType, slow.body, fast.status, fast.contentType, fast.body)
	}
	return fast
}

// data decodes a reply's data, failing on errors.
func (r reply) data(t *testing.T, v any) {
	t.Helper()
	var out struct {
		Data   json.RawMessage
		Errors []gqlError
	}
	if err := json.Unmarshal(r.body, &out); err != nil || len(out.Errors) > 0 {
		t.Fatalf("reply %s: %v", r.body, err)
	}
	if err := json.Unmarshal(out.Data, v); err != nil {
		t.Fatal(err)
	}
}

const allDevice = `__typename id name status region verification verificationLevel gpuModel gpuCount lastSeenAt createdAt`

// allGPU is every GPU field but __typename (the cost limit prices each GPU field of a list at 64
// GPUs a device).
const allGPU = `index uuid model pciDeviceId memoryMiB architecture computeCapability verificationLevel`

func conn(node string) string {
	return `{ __typename edges { __typename cursor node { ` + node + ` } } pageInfo { __typename hasNextPage endCursor } }`
}

func TestFastExecMatchesGqlgen(t *testing.T) {
	tw := newTwin(t)
	var ids []string
	if err := tw.x.Select(&ids, `SELECT id FROM devices ORDER BY created_at DESC, id DESC LIMIT 5`); err != nil {
		t.Fatal(err)
	}
	var model0, region0, name0 string
	if err := tw.x.QueryRow(`SELECT gpu_model, region, name FROM devices ORDER BY id LIMIT 1`).Scan(&model0, &region0, &name0); err != nil {
		t.Fatal(err)
	}
	var lastSeenNull int
	if err := tw.x.Get(&lastSeenNull, `SELECT count(*) FROM devices WHERE last_seen_at IS NULL`); err != nil || lastSeenNull == 0 {
		t.Fatalf("the seed has %d devices never seen (%v): the corpus would not cover a null lastSeenAt", lastSeenNull, err)
	}
	full := conn(allDevice + ` gpus { ` + allGPU + ` }`)

	// Cursors from previous pages, taken from the gqlgen gateway's answers.
	cursorOf := func(q string, vars map[string]any) string {
		var out struct {
			Devices struct{ PageInfo struct{ EndCursor string } }
		}
		tw.compare(doc{name: "cursor", query: q, vars: vars, any: true}).data(t, &out)
		if out.Devices.PageInfo.EndCursor == "" {
			t.Fatalf("no cursor from %s", q)
		}
		return out.Devices.PageInfo.EndCursor
	}
	page2 := cursorOf(`{ devices(first: 50) { pageInfo { endCursor } } }`, nil)
	nearEnd := cursorOf(`{ devices(first: 100, after: "`+cursorOf(`{ devices(first: 100) { pageInfo { endCursor } } }`, nil)+`") { pageInfo { endCursor } } }`, nil)
	byLevel := cursorOf(`query($o: DeviceOrder) { devices(first: 7, orderBy: $o) { pageInfo { endCursor } } }`,
		map[string]any{"o": map[string]any{"field": "VERIFICATION_LEVEL", "direction": "DESC"}})
	byName := cursorOf(`{ devices(first: 9, orderBy: {field: NAME, direction: ASC}) { pageInfo { endCursor } } }`, nil)
	var searchCursor string
	{
		var out struct {
			SearchDevices struct{ PageInfo struct{ EndCursor string } }
		}
		tw.compare(doc{name: "search cursor", query: `{ searchDevices(query: "atlas", first: 5) { pageInfo { endCursor } } }`, fast: true}).data(t, &out)
		searchCursor = out.SearchDevices.PageInfo.EndCursor
		if searchCursor == "" {
			t.Fatal("no search cursor")
		}
	}

	corpus := []doc{
		{name: "explorer page", query: `{ devices(first: 50) { edges { cursor node { id name status region verification gpuModel gpuCount lastSeenAt createdAt } } pageInfo { hasNextPage endCursor } } }`, fast: true},
		{name: "every field", query: `{ __typename devices(first: 100) ` + full + ` }`, fast: true},
		{name: "status UP", query: `{ devices(first: 50, filter: {status: UP}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "status DOWN region", query: `{ devices(first: 20, filter: {status: DOWN, region: "` + region0 + `"}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "gpuModel", query: `{ devices(first: 30, filter: {gpuModel: "` + model0 + `"}) ` + full + ` }`, fast: true},
		{name: "deprecated verification filter", query: `{ devices(first: 30, filter: {verification: VERIFIED}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level SELF_REPORTED", query: `{ devices(first: 30, filter: {verificationLevel: SELF_REPORTED}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level PENDING", query: `{ devices(first: 30, filter: {verificationLevel: PENDING}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level FLAGGED", query: `{ devices(first: 30, filter: {verificationLevel: FLAGGED}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level ATTESTED", query: `{ devices(first: 30, filter: {verificationLevel: ATTESTED}) ` + full + ` }`, fast: true},
		{name: "every filter", query: `{ devices(first: 10, filter: {status: UP, gpuModel: "` + model0 + `", region: "` + region0 + `", verification: VERIFIED, verificationLevel: SELF_REPORTED}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "explicit nulls", query: `{ devices(first: 10, after: null, filter: {status: null, gpuModel: null, region: null, verification: null, verificationLevel: null}, orderBy: null) ` + conn("id") + ` }`, fast: true},
		{name: "filter null", query: `{ devices(first: 10, filter: null) ` + conn("id") + ` }`, fast: true},
		{name: "empty page", query: `{ devices(first: 10, filter: {region: "nowhere"}) ` + full + ` }`, fast: true},
		{name: "name asc", query: `{ devices(first: 40, orderBy: {field: NAME, direction: ASC}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "name desc", query: `{ devices(first: 40, orderBy: {field: NAME, direction: DESC}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "created asc", query: `{ devices(first: 40, orderBy: {field: CREATED_AT, direction: ASC}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level desc", query: `{ devices(first: 40, orderBy: {field: VERIFICATION_LEVEL, direction: DESC}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "level asc filtered", query: `{ devices(first: 40, filter: {status: UP}, orderBy: {field: VERIFICATION_LEVEL, direction: ASC}) ` + conn(allDevice) + ` }`, fast: true},
		{name: "second page", query: `query($a: String) { devices(first: 50, after: $a) ` + conn(allDevice) + ` }`, vars: map[string]any{"a": page2}, fast: true},
		{name: "last page", query: `query($a: String) { devices(first: 100, after: $a) ` + full + ` }`, vars: map[string]any{"a": nearEnd}, fast: true},
		{name: "level cursor", query: `query($a: String, $o: DeviceOrder) { devices(first: 7, after: $a, orderBy: $o) ` + conn(allDevice) + ` }`,
			vars: map[string]any{"a": byLevel, "o": map[string]any{"field": "VERIFICATION_LEVEL", "direction": "DESC"}}, fast: true},
		{name: "name cursor", query: `{ devices(first: 9, after: "` + byName + `", orderBy: {field: NAME, direction: ASC}) ` + conn("id name") + ` }`, fast: true},
		{name: "variables everywhere", query: `query($n: Int!, $f: DeviceFilter, $o: DeviceOrder) { devices(first: $n, filter: $f, orderBy: $o) ` + conn(allDevice) + ` }`,
			vars: map[string]any{"n": 25, "f": map[string]any{"status": "UP", "verificationLevel": "SELF_REPORTED", "region": nil}, "o": map[string]any{"field": "NAME", "direction": "DESC"}}, fast: true},
		{name: "variable defaults", query: `query($n: Int! = 12, $o: DeviceOrder = {field: CREATED_AT, direction: ASC}) { devices(first: $n, orderBy: $o) ` + conn("id") + ` }`, fast: true},
		{name: "aliases", query: `{ a: devices(first: 2) { e: edges { c: cursor n: node { i: id nm: name } } p: pageInfo { h: hasNextPage } }
			b: devices(first: 3, orderBy: {field: NAME, direction: ASC}) { edges { node { id } } } }`, fast: true},
		{name: "duplicate fields merged", query: `{ devices(first: 3) { edges { node { id id name } node { name status } cursor } edges { cursor node { gpus { uuid } gpus { model } } } } }`, fast: true},
		{name: "same field under two aliases", query: `{ devices(first: 3) { edges { x: node { id } y: node { name gpus { a: uuid b: uuid } } } } }`, fast: true},
		{name: "named fragments", query: `fragment D on Device { id name ...G } fragment G on Device { gpus { ...U } } fragment U on GPU { uuid index }
			fragment C on DeviceConnection { pageInfo { endCursor } }
			query { devices(first: 5) { ...C edges { node { ...D status } } } }`, fast: true},
		{name: "inline fragments", query: `{ devices(first: 5) { ... on DeviceConnection { edges { node { ... on Device { id gpus { ... { model } } } ... { name } } } } } }`, fast: true},
		{name: "fragment order", query: `fragment A on Device { status name } query { devices(first: 4) { edges { node { name ...A id ... on Device { status gpuCount } } } } }`, fast: true},
		{name: "typename only", query: `{ __typename }`, fast: true},
		{name: "typename aliased", query: `{ t: __typename devices(first: 2) { t: __typename edges { t: __typename node { t: __typename gpus { t: __typename } } } pageInfo { t: __typename } } }`, fast: true},
		{name: "skip include literals", query: `{ devices(first: 4) { edges { cursor @skip(if: true) node { id @include(if: true) name @include(if: false) status @skip(if: false) } } pageInfo @skip(if: true) { hasNextPage } } }`, fast: true},
		{name: "skip include variables", query: `query($s: Boolean!, $i: Boolean = false) { devices(first: 4) { edges { node { id @skip(if: $s) name @include(if: $i) gpus @include(if: $s) { uuid } } } } }`,
			vars: map[string]any{"s": true}, fast: true},
		{name: "skip on fragments", query: `fragment G on Device { gpus { uuid } } query($s: Boolean!) { devices(first: 3) { edges { node { id ...G @skip(if: $s) ... on Device @include(if: $s) { name } } } } }`,
			vars: map[string]any{"s": false}, fast: true},
		{name: "search by name", query: `{ searchDevices(query: "atlas", first: 20) ` + conn(allDevice) + ` }`, fast: true},
		{name: "search by exact name", query: `query($q: String!) { searchDevices(query: $q, first: 5) ` + full + ` }`, vars: map[string]any{"q": name0}, fast: true},
		{name: "search by ID prefix", query: `{ searchDevices(query: "` + ids[0][:8] + `", first: 10) ` + conn(allDevice) + ` }`, fast: true},
		{name: "search by ID prefix without hyphens", query: `{ searchDevices(query: "` + strings.ReplaceAll(ids[1][:13], "-", "") + `", first: 10) ` + conn("id") + ` }`, fast: true},
		{name: "search after", query: `query($a: String) { searchDevices(query: "atlas", first: 5, after: $a) ` + conn(allDevice) + ` }`, vars: map[string]any{"a": searchCursor}, fast: true},
		{name: "search nothing", query: `{ searchDevices(query: "zzzzzzzz", first: 5) ` + full + ` }`, fast: true},
		{name: "device by id", query: `{ device(id: "` + ids[0] + `") { ` + allDevice + ` gpus { __typename ` + allGPU + ` } } }`, fast: true},
		{name: "device by id variable", query: `query($id: ID!) { d: device(id: $id) { id name gpus { uuid } } }`, vars: map[string]any{"id": ids[1]}, fast: true},
		{name: "device id upper case", query: `{ device(id: "` + strings.ToUpper(ids[2]) + `") { id } }`, fast: true},
		{name: "device id without hyphens", query: `{ device(id: "` + strings.ReplaceAll(ids[2], "-", "") + `") { id name } }`, fast: true},
		{name: "every root field", query: `{ __typename one: device(id: "` + ids[3] + `") { id gpus { index } } devices(first: 3) { edges { node { id gpus { uuid } } } }
			searchDevices(query: "atlas", first: 2) { pageInfo { hasNextPage } } two: device(id: "` + ids[4] + `") { name } }`, fast: true},
		{name: "operation name", query: `query A { devices(first: 1) { edges { node { id } } } } query B { devices(first: 2) { edges { node { name } } } }`, op: "B", fast: true},
		{name: "owner reads the public page", query: `{ devices(first: 20) ` + full + ` }`, token: "alice", fast: true},
		{name: "pageInfo only", query: `{ devices(first: 100) { pageInfo { hasNextPage endCursor } } }`, fast: true},
		{name: "edges only", query: `{ devices(first: 100) { edges { node { id } } } }`, fast: true},
		{name: "strings with escapes in arguments", query: `{ devices(first: 5, filter: {region: "a\"b\\c\nd\u00e9"}) ` + conn("id") + ` }`, fast: true},
		{name: "first as string variable coerced", query: `query($n: Int!) { devices(first: $n) ` + conn("id") + ` }`, vars: map[string]any{"n": 3}, fast: true},

		// Delegated: gqlgen's executor answers, with its errors.
		{name: "private anonymous", query: `{ devices(first: 5) { edges { node { id private { hostname } } } } }`},
		{name: "private by the owner", query: `{ devices(first: 40) { edges { node { id private { hostname labels } } } } }`, token: "alice"},
		{name: "private by another user", query: `{ device(id: "` + ids[0] + `") { id private { hostname } } }`, token: "bob"},
		{name: "network stats", query: `{ networkStats { devices } devices(first: 2) { edges { node { id } } } }`},
		{name: "viewer anonymous", query: `{ viewer { id } }`},
		{name: "viewer devices", query: `{ viewer { devices(first: 3) { edges { node { id } } } } }`, token: "alice"},
		{name: "introspection", query: `{ __schema { queryType { name } } }`},
		{name: "type introspection", query: `{ __type(name: "Device") { name } devices(first: 1) { edges { node { id } } } }`},
		{name: "bad cursor", query: `{ devices(first: 5, after: "garbage") { edges { node { id } } } }`},
		{name: "cursor of another order", query: `query($a: String) { devices(first: 5, after: $a) { edges { node { id } } } }`, vars: map[string]any{"a": byName}},
		{name: "search cursor in a list", query: `query($a: String) { devices(first: 5, after: $a) { edges { node { id } } } }`, vars: map[string]any{"a": searchCursor}},
		{name: "bad id", query: `{ device(id: "nope") { id } }`},
		{name: "unknown device", query: `{ device(id: "00000000-0000-4000-8000-000000000000") { id name } }`},
		{name: "unknown device next to a list", query: `{ devices(first: 2) { edges { node { id } } } device(id: "00000000-0000-4000-8000-000000000000") { id } }`},
		{name: "first 0", query: `{ devices(first: 0) { edges { node { id } } } }`},
		{name: "first 101", query: `{ devices(first: 101) { edges { node { id } } } }`},
		{name: "first -1 search", query: `{ searchDevices(query: "atlas", first: -1) { edges { node { id } } } }`},
		{name: "search too short", query: `{ searchDevices(query: "ab", first: 5) { edges { node { id } } } }`},
		{name: "gpuModel too long", query: `{ devices(first: 5, filter: {gpuModel: "` + strings.Repeat("x", 200) + `"}) { edges { node { id } } } }`},
		{name: "too deep", query: `{ devices(first: 1) { edges { node { private { attestations { gpus { index } } } } } } }`},
		{name: "too many aliases", query: `{ ` + aliases(16) + ` }`},
		{name: "too costly", query: `{ ` + costly(6) + ` }`},
		{name: "wrong variable type", query: `query($n: Int!) { devices(first: $n) { edges { node { id } } } }`, vars: map[string]any{"n": "many"}},
		{name: "fragment on the wrong type", query: `{ devices(first: 2) { edges { node { id ... on GPU { uuid } } } } }`},
		{name: "unknown field", query: `{ devices(first: 2) { edges { node { owner } } } }`},
		{name: "mutation", query: `mutation { pauseDevice(id: "` + ids[0] + `") { id } }`},
		{name: "defer", query: `{ devices(first: 2) { edges { node { id ... @defer { name } } } } }`},
	}
	if len(corpus) < 40 {
		t.Fatalf("corpus of %d documents", len(corpus))
	}
	for _, d := range corpus {
		tw.compare(d)
	}
}

// aliases selects n aliased devices pages.
func aliases(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "a%d: devices(first: 1) { edges { node { id } } } ", i)
	}
	return b.String()
}

// costly selects n pages of 100 devices with their GPUs.
func costly(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "c%d: devices(first: 100) { edges { node { id gpus { uuid model } } } } ", i)
	}
	return b.String()
}

// gen writes random documents over the compiled executor's field set: random root fields,
// arguments (literal or variables), field subsets in random order, aliases, repeated fields,
// inline fragments with and without a type condition, named fragments, and @skip/@include with
// literals and variables.
type gen struct {
	r      *rand.Rand
	n      int // alias and fragment counter
	frags  []string
	models []string
	ids    []string
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) alias(name string) string {
	if g.r.IntN(4) == 0 {
		g.n++
		return fmt.Sprintf("%s%d: %s", g.pick("a", "b", "x"), g.n, name)
	}
	return name
}

func (g *gen) directive() string {
	switch g.r.IntN(10) {
	case 0:
		return " @skip(if: " + g.pick("true", "false", "$yes", "$no") + ")"
	case 1:
		return " @include(if: " + g.pick("true", "false", "$yes", "$no") + ")"
	}
	return ""
}

// selection selects a random non-empty subset of fields, in random order; sub gives the
// selection of object fields.
func (g *gen) selection(typ string, fields []string, sub func(string) string) string {
	var parts []string
	perm := g.r.Perm(len(fields))
	n := 1 + g.r.IntN(len(fields))
	for _, i := range perm[:n] {
		f := fields[i]
		s := g.alias(f) + g.directive()
		if sub != nil {
			if inner := sub(f); inner != "" {
				s += " { " + inner + " }"
			}
		}
		parts = append(parts, s)
		if g.r.IntN(8) == 0 { // the same field again: gqlgen merges it
			parts = append(parts, s)
		}
	}
	if g.r.IntN(6) == 0 {
		parts = append(parts, "__typename")
	}
	out := strings.Join(parts, " ")
	switch g.r.IntN(8) {
	case 0:
		return "... on " + typ + g.directive() + " { " + out + " }"
	case 1:
		return "... { " + out + " } " + parts[0]
	case 2:
		g.n++
		name := fmt.Sprintf("F%d", g.n)
		g.frags = append(g.frags, "fragment "+name+" on "+typ+" { "+out+" }")
		return "..." + name + g.directive()
	}
	return out
}

var (
	genDevice = []string{"id", "name", "status", "region", "verification", "verificationLevel", "gpuModel", "gpuCount", "lastSeenAt", "createdAt", "gpus"}
	genGPU    = []string{"index", "uuid", "model", "pciDeviceId", "memoryMiB", "architecture", "computeCapability", "verificationLevel"}
)

func (g *gen) device() string {
	return g.selection("Device", genDevice, func(f string) string {
		if f == "gpus" {
			return g.selection("GPU", genGPU, nil)
		}
		return ""
	})
}

func (g *gen) connection() string {
	return g.selection("DeviceConnection", []string{"edges", "pageInfo"}, func(f string) string {
		if f == "pageInfo" {
			return g.selection("PageInfo", []string{"hasNextPage", "endCursor"}, nil)
		}
		return g.selection("DeviceEdge", []string{"cursor", "node"}, func(f string) string {
			if f == "node" {
				return g.device()
			}
			return ""
		})
	})
}

func (g *gen) filter() string {
	var parts []string
	if g.r.IntN(3) == 0 {
		parts = append(parts, "status: "+g.pick("UP", "DOWN", "PAUSED", "QUARANTINED", "null"))
	}
	if g.r.IntN(4) == 0 {
		parts = append(parts, `gpuModel: "`+g.pick(g.models...)+`"`)
	}
	if g.r.IntN(4) == 0 {
		parts = append(parts, `region: "`+g.pick(db.DemoRegions...)+`"`)
	}
	if g.r.IntN(5) == 0 {
		parts = append(parts, "verification: "+g.pick("PENDING", "VERIFIED", "FLAGGED"))
	}
	if g.r.IntN(4) == 0 {
		parts = append(parts, "verificationLevel: "+g.pick("PENDING", "SELF_REPORTED", "ATTESTED", "FLAGGED", "null"))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// document returns a random document and its variables.
func (g *gen) document() (string, map[string]any) {
	g.frags = nil
	vars := map[string]any{"yes": true, "no": false}
	var roots []string
	for range 1 + g.r.IntN(2) {
		switch g.r.IntN(4) {
		case 0, 1:
			args := fmt.Sprintf("first: %d", 1+g.r.IntN([]int{3, 12, 40, 100}[g.r.IntN(4)]))
			if g.r.IntN(2) == 0 {
				args += ", filter: " + g.filter()
			}
			if g.r.IntN(2) == 0 {
				args += ", orderBy: {field: " + g.pick("CREATED_AT", "NAME", "VERIFICATION_LEVEL") + ", direction: " + g.pick("ASC", "DESC") + "}"
			}
			roots = append(roots, g.alias("devices")+"("+args+") { "+g.connection()+" }")
		case 2:
			roots = append(roots, g.alias("searchDevices")+`(query: "`+g.pick("atlas", "h100", "-0001", "vega-", g.ids[0][:6])+
				fmt.Sprintf(`", first: %d) { `, 1+g.r.IntN(20))+g.connection()+" }")
		case 3:
			roots = append(roots, g.alias("device")+`(id: "`+g.pick(g.ids...)+`") { `+g.device()+" }")
		}
	}
	body := strings.Join(append(g.frags, strings.Join(roots, " ")), "\n")
	var decl []string
	for _, v := range []string{"yes", "no"} {
		if strings.Contains(body, "$"+v) {
			decl = append(decl, "$"+v+": Boolean!")
		} else {
			delete(vars, v)
		}
	}
	q := "query { " + strings.Join(roots, " ") + " }"
	if len(decl) > 0 {
		q = "query(" + strings.Join(decl, ", ") + ") { " + strings.Join(roots, " ") + " }"
	}
	return strings.Join(append(g.frags, q), "\n"), vars
}

// Random documents over the supported fields: identical replies, and the compiled executor
// answers every one that has no error (the others exceed a limit or break a validation rule).
func TestFastExecRandomDocuments(t *testing.T) {
	tw := newTwin(t)
	g := &gen{r: rand.New(rand.NewPCG(10, 2026))}
	if err := tw.x.Select(&g.ids, `SELECT id FROM devices ORDER BY id LIMIT 6`); err != nil {
		t.Fatal(err)
	}
	if err := tw.x.Select(&g.models, `SELECT DISTINCT gpu_model FROM devices ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	const docs = 300
	served := 0
	for i := range docs {
		q, vars := g.document()
		before, _ := fastexec.Stats()
		r := tw.compare(doc{name: fmt.Sprintf("random %d", i), query: q, vars: vars, any: true})
		after, _ := fastexec.Stats()
		var out struct{ Errors []gqlError }
		_ = json.Unmarshal(r.body, &out)
		switch {
		case len(out.Errors) == 0 && after-before != 1:
			t.Errorf("random %d has no error but the compiled executor did not answer it:\n%s", i, q)
		case len(out.Errors) > 0 && after != before:
			t.Errorf("random %d has errors but the compiled executor answered it:\n%s\n%s", i, q, r.body)
		}
		if after-before == 1 {
			served++
		} else if testing.Verbose() {
			t.Logf("random %d: %.200s", i, r.body)
		}
	}
	t.Logf("%d of %d random documents answered by the compiled executor", served, docs)
	if served < docs*3/4 {
		t.Errorf("only %d of %d random documents were answered by the compiled executor", served, docs)
	}
}
