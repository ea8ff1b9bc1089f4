package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/internal/testutil"
)

// costOf returns extensions.cost of a served response.
func costOf(t *testing.T, r response) (requested, limit int) {
	t.Helper()
	var out struct {
		Extensions struct {
			Cost *struct{ Requested, Limit int }
		}
	}
	if err := json.Unmarshal([]byte(r.RawBody), &out); err != nil || out.Extensions.Cost == nil {
		t.Fatalf("no extensions.cost in %s", r.RawBody)
	}
	return out.Extensions.Cost.Requested, out.Extensions.Cost.Limit
}

func TestAmplificationDocumentIsRefusedBeforeExecution(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5, gateway.Config{})
	doc := testutil.AmplificationDocument()
	if len(doc) < 75_000 || len(doc) > 90_000 {
		t.Fatalf("the document is %d bytes, want ~80 KB", len(doc))
	}
	r := e.post(doc, nil)
	// 3 × (devices + edges + 100 × (node + 4,500 __typename))
	want := 3 * (2 + 100*4501)
	r.WantError(t, "QUERY_LIMIT", fmt.Sprintf("the operation costs %d; the limit is 5000", want))
	if string(r.Data) != "" && string(r.Data) != "null" {
		t.Fatalf("a refused document must not execute: data = %.200s", r.Data)
	}
}

func TestCostLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, gateway.Config{Introspection: true})
	// A chain of 40 fragments, each spreading the next twice: 2^40 __typename once expanded.
	var chain strings.Builder
	chain.WriteString("{ ...F0 }\n")
	for i := range 40 {
		fmt.Fprintf(&chain, "fragment F%d on Query { ...F%d ...F%d }\n", i, i+1, i+1)
	}
	chain.WriteString("fragment F40 on Query { __typename }\n")
	var wide string
	for i := range 60 {
		wide += fmt.Sprintf("n%d: name ", i)
	}
	nodeFields := "id name status region verification gpuModel gpuCount lastSeenAt createdAt"
	cases := []struct {
		name, query string
		vars        map[string]any
		cost        int // served with this cost, or refused when msg is set
		msg         string
	}{
		{"page size multiplies", `{ devices(first: 10) { edges { node { id name } } } }`, nil, 1 + 1 + 10*3, ""},
		{"page size from a variable", `query($n: Int!) { devices(first: $n) { edges { node { id name } } } }`, map[string]any{"n": 7}, 1 + 1 + 7*3, ""},
		{"pageInfo is not multiplied", `{ devices(first: 50) { pageInfo { hasNextPage endCursor } } }`, nil, 1 + 3, ""},
		{"GPU lists count 64 per device", `{ devices(first: 2) { edges { node { gpus { model } } } } }`, nil, 1 + 1 + 2*(1+1+64), ""},
		{"attestations count 50, credentials 10", `{ devices(first: 1) { edges { node { private { attestations { id } credentials { id } } } } } }`, nil, 1 + 1 + 1*(1+1+(1+50)+(1+10)), ""},
		{"__typename and aliases count", `{ a: __typename b: __typename networkStats { x: devices y: devices __typename } }`, nil, 2 + 1 + 3, ""},
		{"fragments count where spread", `{ a: devices(first: 3) { ...C } b: devices(first: 5) { ...C } } fragment C on DeviceConnection { edges { node { id } } }`, nil, (1 + 1 + 3*2) + (1 + 1 + 5*2), ""},
		{"largest accepted page of every device field", `{ devices(first: 100) { edges { cursor node { ` + nodeFields + ` } } pageInfo { hasNextPage } } }`, nil, 1 + 1 + 100*(1+1+9) + 2, ""},
		{"over the limit", `{ devices(first: 100) { edges { node { ` + nodeFields + ` gpus { model } } } } }`, nil, 0, "the operation costs 7502; the limit is 5000"},
		{"an operation named __schema gets no free pass", `query __schema { devices(first: 100) { edges { node { gpus { model } } } } }`, nil, 0, "the operation costs 6602; the limit is 5000"},
		{"a fragment chain saturates instead of exploding", chain.String(), nil, 0, "the operation costs more than 5000; the limit is 5000"},
		{"GraphiQL's introspection query is served", introspectionQuery, nil, -1, ""},
		{"wide introspection is counted", `{ __schema { types { fields { ` + wide + ` } } } }`, nil, 0, "the operation costs more than 5000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(c.query, c.vars)
			if c.msg != "" {
				r.WantError(t, "QUERY_LIMIT", c.msg)
				if string(r.Data) != "" && string(r.Data) != "null" {
					t.Fatalf("a refused document must not execute: data = %.200s", r.Data)
				}
				return
			}
			if len(r.Errors) > 0 || r.Status != http.StatusOK {
				t.Fatalf("unexpected errors (HTTP %d): %.500s", r.Status, r.RawBody)
			}
			got, limit := costOf(t, r)
			if limit != 5000 || (c.cost >= 0 && got != c.cost) {
				t.Fatalf("extensions.cost = {requested %d, limit %d}, want {%d, 5000}", got, limit, c.cost)
			}
			if c.cost < 0 {
				t.Logf("GraphiQL introspection costs %d", got)
			}
		})
	}
	t.Run("configurable", func(t *testing.T) {
		q := `{ devices(first: 10) { edges { node { id name } } } }`
		r := newEnvOn(t, e, gateway.Config{MaxCost: 32}).post(q, nil)
		if got, _ := costOf(t, r); got != 32 {
			t.Fatalf("cost %d", got)
		}
		newEnvOn(t, e, gateway.Config{MaxCost: 31}).post(q, nil).WantError(t, "QUERY_LIMIT", "costs 32; the limit is 31")
	})
}

func TestDeadlineStopsExecution(t *testing.T) {
	t.Parallel()
	base := newEnv(t, 3, gateway.Config{})
	// The deadline has passed before execution starts: no field may resolve, SQL or not
	// (introspection is pure CPU over the static schema and never looks at the context itself).
	e := newEnvOn(t, base, gateway.Config{Introspection: true, RequestTimeout: time.Nanosecond})
	r := e.post(`{ __typename __schema { types { name fields { name } } } }`, nil)
	r.WantError(t, "TIMEOUT", "the request exceeded its time limit")
	if string(r.Data) != "" && string(r.Data) != "null" {
		t.Fatalf("fields resolved after the deadline: %.300s", r.Data)
	}
	// One error for the operation, not one per unresolved field.
	r = e.post(`{ devices(first: 50) { edges { node { id name gpus { model } } } } }`, nil)
	r.WantError(t, "TIMEOUT", "the request exceeded its time limit")
}

func TestConcurrentExecutionsAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, gateway.Config{})
	o := newEnvOn(t, e, gateway.Config{MaxConcurrent: 1, MaxQueued: 1, QueueWait: 30 * time.Second})
	// Hold the only slot: a listing blocks on a table lock until the test releases it. One more
	// may wait in the queue; the one after is refused at once.
	tx, refused, results := saturate(t, e, o, `{ devices(first: 1) { edges { node { id } } } }`,
		"no request was refused while the only slot and the queue were taken")
	defer tx.Rollback()
	if refused.Status != http.StatusServiceUnavailable || refused.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP %d, Retry-After %q: %s", refused.Status, refused.Header.Get("Retry-After"), refused.RawBody)
	}
	refused.WantError(t, "OVERLOADED", "busy")
	// Health endpoints do not queue behind executions.
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := o.raw(http.MethodGet, path, "", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("%s while saturated: HTTP %d %s", path, r.Status, r.RawBody)
		}
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var out struct{ Devices struct{ Edges []any } }
		(<-results).Decode(t, &out)
	}
}

// saturate locks the devices table in a transaction of e's database, so that query blocks in the
// gateway o, then sends it three times: the first takes the execution slot, one more may wait
// in the queue, and the one refused at once is returned with the channel the other two arrive
// on once the caller rolls tx back. It fails t with msg if none is refused within 10 s.
func saturate(t *testing.T, e, o *env, query, msg string) (tx *sqlx.Tx, refused response, results <-chan response) {
	t.Helper()
	tx, err := e.x.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	out := make(chan response, 3)
	go func() { out <- o.post(query, nil) }()
	waitFor(t, func() bool {
		var n int
		_ = e.x.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM devices%'`)
		return n > 0
	})
	go func() { out <- o.post(query, nil) }()
	go func() { out <- o.post(query, nil) }()
	select {
	case refused = <-out:
	case <-time.After(10 * time.Second):
		_ = tx.Rollback()
		t.Fatal(msg)
	}
	return tx, refused, out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10 s")
}

func TestResponseSizeCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 40, gateway.Config{})
	capped := newEnvOn(t, e, gateway.Config{MaxResponseBytes: 4000})
	q := `{ devices(first: 40) { edges { cursor node { id name region } } } }`
	r := capped.post(q, nil)
	r.WantError(t, "RESPONSE_TOO_LARGE", "; the limit is 4000")
	if !json.Valid([]byte(r.RawBody)) || (string(r.Data) != "" && string(r.Data) != "null") {
		t.Fatalf("want a whole JSON body without data: %.300s", r.RawBody)
	}
	var out struct{ Devices struct{ Edges []any } }
	capped.post(`{ devices(first: 2) { edges { node { id } } } }`, nil).Decode(t, &out)
	e.post(q, nil).Decode(t, &out) // the default cap (4 MiB) serves it
	if len(out.Devices.Edges) != 40 {
		t.Fatalf("%d edges", len(out.Devices.Edges))
	}
}

func TestPublicCacheKeyIgnoresFormatting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, gateway.Config{PublicCacheTTL: time.Minute})
	vars := map[string]any{"n": 2, "f": map[string]any{"status": "UP", "region": "eu-west"}}
	first := e.post(`query Q($n: Int!, $f: DeviceFilter) { devices(first: $n, filter: $f) { edges { node { id } } } }`, vars)
	if len(first.Errors) > 0 || first.Header.Get("X-Cache") == "hit" {
		t.Fatalf("first: %q %s", first.Header.Get("X-Cache"), first.RawBody)
	}
	variants := []string{
		"query Q($n:Int!,$f:DeviceFilter){devices(first:$n,filter:$f){edges{node{id}}}}",
		"# a comment\nquery   Q( $n : Int! , $f : DeviceFilter )\n{\n  devices(first: $n, filter: $f) {\n    edges { node { id } } # another\n  }\n}\n",
	}
	for _, v := range variants {
		// The variables are sent with their keys in another order (json.Marshal sorts map keys;
		// build the body by hand).
		b := fmt.Sprintf(`{"variables": {"n": 2, "f": {"status": "UP", "region": "eu-west"}}, "query": %q}`, v)
		r := e.raw(http.MethodPost, "/graphql", "application/json", []byte(b), nil)
		if r.Header.Get("X-Cache") != "hit" || r.RawBody != first.RawBody {
			t.Fatalf("a formatting variant missed the cache: %q\n%s", r.Header.Get("X-Cache"), v)
		}
	}
	// A different document or different variables are different entries.
	if r := e.post(`query Q($n: Int!, $f: DeviceFilter) { devices(first: $n, filter: $f) { edges { node { id name } } } }`, vars); r.Header.Get("X-Cache") == "hit" {
		t.Fatal("another selection was served from the cache")
	}
	vars["n"] = 3
	if r := e.post(`query Q($n: Int!, $f: DeviceFilter) { devices(first: $n, filter: $f) { edges { node { id } } } }`, vars); r.Header.Get("X-Cache") == "hit" {
		t.Fatal("other variables were served from the cache")
	}
}

func TestPublicCacheIsBoundedByBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 40, gateway.Config{PublicCacheTTL: time.Minute, PublicCacheBytes: 16 << 10})
	q := func(n int) string { return fmt.Sprintf(`{ devices(first: %d) { edges { cursor node { id } } } }`, n) }
	total := 0
	for n := 3; n <= 19; n++ { // each response under the 4 KiB entry limit (a quarter of the budget)
		r := e.post(q(n), nil)
		if r.Header.Get("X-Cache") == "hit" {
			t.Fatalf("first request for %d was a hit", n)
		}
		total += len(r.RawBody)
	}
	if total < 32<<10 {
		t.Fatalf("the responses total %d bytes; the test needs more than twice the budget", total)
	}
	if r := e.post(q(19), nil); r.Header.Get("X-Cache") != "hit" {
		t.Fatal("the newest entry should still be cached")
	}
	if r := e.post(q(3), nil); r.Header.Get("X-Cache") == "hit" {
		t.Fatalf("the oldest entry should have been evicted: %d bytes of responses against a 16 KiB budget", total)
	}
}

func TestNewStartsNoLingeringGoroutines(t *testing.T) {
	store := db.New(dbtest.New(t), db.Options{StatsTTL: -1})
	settle := func() int {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()
	for range 50 {
		_ = gateway.New(gateway.Config{PublicCacheTTL: time.Second}, store, nil)
	}
	if after := settle(); after > before+5 {
		t.Fatalf("50 gateways left %d goroutines behind", after-before)
	}
}

func TestAuthenticationFailuresLogToTheGatewayLogger(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{})
	if _, err := e.x.Exec(`DROP TABLE device_credentials CASCADE`); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b := []byte(`{"query":"{ networkStats { devices } }"}`)
	r := e.raw(http.MethodPost, "/graphql", "application/json", b, http.Header{
		attest.SignatureHeader: {attest.SignRequest(priv, uuid.NewString(), "POST", "/graphql", time.Now(), b)}})
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d: %s", r.Status, r.RawBody)
	}
	if !strings.Contains(e.log.String(), "authentication failed") {
		t.Fatalf("the key lookup failure is not in the gateway's log: %s", e.log.String())
	}
}

func TestSelectionWidthLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, gateway.Config{Introspection: true})
	typenames := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "t%d: __typename ", i)
		}
		return b.String()
	}
	cases := []struct{ name, query, msg string }{
		{"100 fields pass", "{ " + typenames(100) + "}", ""},
		{"101 fields fail", "{ " + typenames(101) + "}", "a selection set selects 101 fields; the limit is 100"},
		{"4,900 root __typename (cost 4,900) fail", "{ " + typenames(4900) + "}", "selects 4900 fields"},
		{"fragments spread into one selection count", `{ devices(first: 1) { edges { node { ...F ...G } } } }
			fragment F on Device { ` + typenames(60) + ` } fragment G on Device { id ...H } fragment H on Device { name ` + typenames(40) + ` }`,
			"selects 102 fields"},
		{"inside a fragment", `{ devices(first: 1) { edges { node { ...F } } } } fragment F on Device { private { ` + typenames(101) + ` } }`, "selects 101 fields"},
		{"inside introspection", `{ __type(name: "Device") { ` + typenames(101) + ` } }`, "selects 101 fields"},
		{"GraphiQL's introspection query passes", introspectionQuery, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(c.query, nil)
			if c.msg == "" {
				if len(r.Errors) > 0 {
					t.Fatalf("unexpected errors: %.300s", r.RawBody)
				}
				return
			}
			r.WantError(t, "QUERY_LIMIT", c.msg)
		})
	}
}

func TestExpensiveOperationsAreBoundedSeparately(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, gateway.Config{})
	o := newEnvOn(t, e, gateway.Config{HeavyCost: 20, MaxHeavy: 1, QueueWait: 30 * time.Second})
	tx, refused, results := saturate(t, e, o, `{ devices(first: 10) { edges { node { id name } } } }`, // cost 32
		"no expensive operation was refused while the expensive lane and its queue were taken")
	defer tx.Rollback()
	if refused.Status != http.StatusServiceUnavailable || refused.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP %d, Retry-After %q: %s", refused.Status, refused.Header.Get("Retry-After"), refused.RawBody)
	}
	refused.WantError(t, "OVERLOADED", "costing 20 or more")
	// Cheap operations do not wait behind expensive ones.
	var out struct {
		Typename string `json:"__typename"`
	}
	o.post(`{ __typename }`, nil).Decode(t, &out)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var page struct{ Devices struct{ Edges []any } }
		(<-results).Decode(t, &page)
	}
}
