package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/gateway"
)

func TestBadArgumentsAreBadUserInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 30, gateway.Config{})
	var someCursor string
	{
		c := e.page(2, nil, nil, map[string]any{"field": "NAME", "direction": "ASC"})
		someCursor = c.Edges[0].Cursor
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name, query string
		vars        map[string]any
		code, msg   string
	}{
		{"first 0", `{ devices(first: 0) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "first must be between 1 and 100"},
		{"first 101", `{ devices(first: 101) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "first must be between 1 and 100"},
		{"first -1", `{ devices(first: -1) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "first must be between 1 and 100"},
		{"first huge variable", `query($f: Int!) { devices(first: $f) { edges { cursor } } }`, map[string]any{"f": 1 << 40}, "BAD_USER_INPUT", ""},
		{"first missing", `{ devices { edges { cursor } } }`, nil, "GRAPHQL_VALIDATION_FAILED", "first"},
		{"first as string", `query($f: Int!) { devices(first: $f) { edges { cursor } } }`, map[string]any{"f": "ten"}, "BAD_USER_INPUT", ""},
		{"malformed cursor", `{ devices(first: 5, after: "bm90IGEgY3Vyc29y") { edges { cursor } } }`, nil, "BAD_USER_INPUT", "not a cursor"},
		{"cursor not base64", `{ devices(first: 5, after: "%%%") { edges { cursor } } }`, nil, "BAD_USER_INPUT", "not a cursor"},
		{"oversized cursor", `query($a: String) { devices(first: 5, after: $a) { edges { cursor } } }`, map[string]any{"a": long(5000)}, "BAD_USER_INPUT", "not a cursor"},
		{"cursor of another order", `query($a: String) { devices(first: 5, after: $a) { edges { cursor } } }`, map[string]any{"a": someCursor}, "BAD_USER_INPUT", "another order"},
		{"listing cursor in search", `query($a: String) { searchDevices(query: "orion", first: 5, after: $a) { edges { cursor } } }`, map[string]any{"a": someCursor}, "BAD_USER_INPUT", "another order"},
		{"malformed UUID", `{ device(id: "42") { id } }`, nil, "BAD_USER_INPUT", "not a valid device ID"},
		{"UUID with SQL", `{ device(id: "00000000-0000-4000-8000-000000000000' OR '1'='1") { id } }`, nil, "BAD_USER_INPUT", "not a valid device ID"},
		{"unknown enum literal", `{ devices(first: 5, filter: {status: BROKEN}) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "BROKEN"},
		{"unknown enum variable", `query($s: DeviceStatus) { devices(first: 5, filter: {status: $s}) { edges { cursor } } }`, map[string]any{"s": "BROKEN"}, "BAD_USER_INPUT", "BROKEN"},
		{"unknown order field", `query($o: DeviceOrder) { devices(first: 5, orderBy: $o) { edges { cursor } } }`, map[string]any{"o": map[string]any{"field": "OWNER", "direction": "ASC"}}, "BAD_USER_INPUT", "OWNER"},
		{"oversized region", `query($r: String) { devices(first: 5, filter: {region: $r}) { edges { cursor } } }`, map[string]any{"r": long(65)}, "BAD_USER_INPUT", "filter.region"},
		{"oversized GPU model", `query($m: String) { devices(first: 5, filter: {gpuModel: $m}) { edges { cursor } } }`, map[string]any{"m": long(129)}, "BAD_USER_INPUT", "filter.gpuModel"},
		{"oversized search", `query($q: String!) { searchDevices(query: $q, first: 5) { edges { cursor } } }`, map[string]any{"q": long(101)}, "BAD_USER_INPUT", "at most 100"},
		{"search too short", `{ searchDevices(query: "ab", first: 5) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "at least 3 characters"},
		{"search blank", `{ searchDevices(query: "   ", first: 5) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "at least 3 characters"},
		{"search first 0", `{ searchDevices(query: "orion", first: 0) { edges { cursor } } }`, nil, "BAD_USER_INPUT", "first must be"},
		{"search invalid UTF-8", `query($q: String!) { searchDevices(query: $q, first: 5) { edges { cursor } } }`, map[string]any{"q": "ab\xffcd"}, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(c.query, c.vars)
			if c.code == "" { // must simply not be an internal error
				for _, err := range r.Errors {
					if err.Code() == "INTERNAL" || r.Status >= 500 {
						t.Fatalf("internal error: %s", r.RawBody)
					}
				}
				return
			}
			if r.Status >= 500 {
				t.Fatalf("HTTP %d", r.Status)
			}
			r.WantError(t, c.code, c.msg)
		})
	}
}

func TestDocumentLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5, gateway.Config{Introspection: true})
	aliases := func(n int) string {
		var b strings.Builder
		b.WriteString("{ ")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "a%d: networkStats { devices } ", i)
		}
		b.WriteString("}")
		return b.String()
	}
	roots := func(n int) string {
		return "{ " + strings.Repeat("networkStats { devices } ", n) + "}"
	}
	directives := func(n int) string {
		return "{ networkStats { " + strings.Repeat("... @include(if: true) { devices } ", n) + "} }"
	}
	// Depth: a chain of fragments, each adding one field level, must count.
	depthViaFragments := `query { devices(first: 1) { edges { node { gpus { ...G } } } } }
		fragment G on GPU { model }`
	tooDeepViaFragments := `query { a: devices(first: 1) { ...C } }
		fragment C on DeviceConnection { edges { ...E } }
		fragment E on DeviceEdge { node { ...N } }
		fragment N on Device { gpus { model } }`
	cases := []struct {
		name, query string
		cfg         gateway.Config
		code, msg   string
	}{
		{"15 aliases pass", aliases(15), gateway.Config{}, "", ""},
		{"16 aliases fail", aliases(16), gateway.Config{}, "QUERY_LIMIT", "16 aliases; the limit is 15"},
		{"aliases inside a fragment spread twice count twice",
			`{ a: devices(first: 1) { ...F } b: devices(first: 1) { ...F } } fragment F on DeviceConnection { ` +
				strings.Repeat("x: edges { cursor } ", 1) + `e1: pageInfo { hasNextPage } e2: pageInfo { hasNextPage } e3: pageInfo { hasNextPage } e4: pageInfo { hasNextPage } e5: pageInfo { hasNextPage } e6: pageInfo { hasNextPage } }`,
			gateway.Config{}, "QUERY_LIMIT", "16 aliases"},
		{"__typename aliases are free", "{ " + strings.Repeat("t1: __typename ", 1) + aliases(15)[1:], gateway.Config{}, "", ""},
		{"20 root fields pass", roots(20), gateway.Config{}, "", ""},
		{"21 root fields fail", roots(21), gateway.Config{}, "QUERY_LIMIT", "21 root fields; the limit is 20"},
		{"50 directives pass", directives(50), gateway.Config{}, "", ""},
		{"51 directives fail", directives(51), gateway.Config{}, "QUERY_LIMIT", "51 directives; the limit is 50"},
		{"depth 5 passes", depthViaFragments, gateway.Config{MaxDepth: 5}, "", ""},
		{"depth 5 fails at 4", depthViaFragments, gateway.Config{MaxDepth: 4}, "QUERY_LIMIT", "5 levels deep; the limit is 4"},
		{"depth through fragments counts", tooDeepViaFragments, gateway.Config{MaxDepth: 4}, "QUERY_LIMIT", "5 levels deep"},
		{"introspection is not limited by depth", introspectionQuery, gateway.Config{}, "", ""},
		{"token limit", "{ " + strings.Repeat("networkStats { devices } ", 4000) + "}", gateway.Config{}, "GRAPHQL_PARSE_FAILED", "token limit"},
		{"operation named __schema gets no free pass", `query __schema ` + aliases(16), gateway.Config{}, "QUERY_LIMIT", "aliases"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			te := e
			if c.cfg.MaxDepth != 0 {
				c.cfg.Introspection = true
				te = newEnvOn(t, e, c.cfg)
			}
			r := te.post(c.query, nil)
			if c.code == "" {
				if len(r.Errors) > 0 {
					t.Fatalf("unexpected errors: %s", r.RawBody)
				}
				return
			}
			r.WantError(t, c.code, c.msg)
			if string(r.Data) != "" && string(r.Data) != "null" {
				t.Fatalf("a rejected document must not execute: data = %s", r.Data)
			}
		})
	}
}

func TestRequestShapeLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5, gateway.Config{})
	t.Run("body over 1 MB", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"query": "{ networkStats { devices } }", "variables": map[string]string{"pad": strings.Repeat("x", 1<<20)}})
		r := e.raw(http.MethodPost, "/graphql", "application/json", body, nil)
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("HTTP %d: %s", r.Status, r.RawBody)
		}
		r.WantError(t, "REQUEST_TOO_LARGE", "exceeds 1048576 bytes")
	})
	t.Run("body just under 1 MB is served", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"query": "{ networkStats { devices } }", "variables": map[string]string{"pad": strings.Repeat("x", 1<<20-200)}})
		r := e.raw(http.MethodPost, "/graphql", "application/json", body, nil)
		var out struct{ NetworkStats struct{ Devices int } }
		r.Decode(t, &out)
	})
	t.Run("chunked body over 1 MB", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/graphql", struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte(" "), 2<<20))})
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
	})
	t.Run("batched operations", func(t *testing.T) {
		r := e.raw(http.MethodPost, "/graphql", "application/json",
			[]byte(`[{"query":"{ networkStats { devices } }"},{"query":"{ networkStats { gpus } }"}]`), nil)
		if r.Status != http.StatusBadRequest {
			t.Fatalf("HTTP %d", r.Status)
		}
		r.WantError(t, "BATCHING_NOT_SUPPORTED", "one operation per request")
	})
	t.Run("GET serves queries", func(t *testing.T) {
		r := e.raw(http.MethodGet, "/graphql?query="+url.QueryEscape("{ networkStats { devices } }"), "", nil, nil)
		var out struct{ NetworkStats struct{ Devices int } }
		r.Decode(t, &out)
		if out.NetworkStats.Devices != 5 {
			t.Fatalf("devices = %d", out.NetworkStats.Devices)
		}
	})
	t.Run("other methods", func(t *testing.T) {
		r := e.raw(http.MethodDelete, "/graphql", "", nil, nil)
		if r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("HTTP %d", r.Status)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		r := e.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query": `), nil)
		if r.Status != http.StatusBadRequest || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "could not be decoded") {
			t.Fatalf("HTTP %d: %s", r.Status, r.RawBody)
		}
	})
}

func TestProductionModeHidesSuggestionsAndIntrospection(t *testing.T) {
	t.Parallel()
	prod := newEnv(t, 1, gateway.Config{})
	dev := newEnvOn(t, prod, gateway.Config{Dev: true, Introspection: true})

	r := prod.post(`{ devicez(first: 1) { edges { cursor } } }`, nil)
	r.WantError(t, "GRAPHQL_VALIDATION_FAILED", `Cannot query field "devicez"`)
	if strings.Contains(r.RawBody, "Did you mean") {
		t.Fatalf("suggestion in production: %s", r.RawBody)
	}
	r = prod.post(`{ devices(first: 1, filtr: {}) { edges { cursor } } }`, nil)
	if strings.Contains(r.RawBody, "Did you mean") || len(r.Errors) == 0 {
		t.Fatalf("suggestion in production: %s", r.RawBody)
	}
	r = dev.post(`{ devicez(first: 1) { edges { cursor } } }`, nil)
	r.WantError(t, "GRAPHQL_VALIDATION_FAILED", "Did you mean")

	r = prod.post(`{ __schema { types { name } } }`, nil)
	r.WantError(t, "INTROSPECTION_DISABLED", "introspection is disabled")
	if string(r.Data) != "" && string(r.Data) != "null" {
		t.Fatalf("introspection data in production: %s", r.RawBody)
	}
	r = dev.post(`{ __schema { types { name } } }`, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("introspection refused in dev: %s", r.RawBody)
	}

	for _, h := range []*env{prod, dev} {
		page := h.raw(http.MethodGet, "/graphiql", "", nil, nil) // GraphiQL: dev mode only (docs/web.md)
		if (h == dev) != (page.Status == http.StatusOK && strings.Contains(page.RawBody, "graphiql")) {
			t.Fatalf("GraphiQL: HTTP %d (dev=%v)", page.Status, h == dev)
		}
	}
}

func TestInternalErrorsAreMasked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5, gateway.Config{})
	if _, err := e.x.Exec(`DROP TABLE gpus CASCADE`); err != nil { // CASCADE: and its explorer view
		t.Fatal(err)
	}
	r := e.raw(http.MethodPost, "/graphql", "application/json",
		[]byte(`{"query":"{ devices(first: 2) { edges { node { id gpus { model } } } } }"}`),
		http.Header{"X-Request-Id": {"trace-0123456789"}})
	r.WantErrors(t, "INTERNAL", "internal error (request id trace-0123456789)")
	for _, leak := range []string{"relation", "pq:", "SELECT", "does not exist"} {
		if strings.Contains(r.RawBody, leak) {
			t.Fatalf("response leaks %q: %s", leak, r.RawBody)
		}
	}
	if r.Header.Get("X-Request-Id") != "trace-0123456789" {
		t.Fatalf("request id header %q", r.Header.Get("X-Request-Id"))
	}
	if !strings.Contains(e.log.String(), "trace-0123456789") || !strings.Contains(e.log.String(), "does not exist") {
		t.Fatalf("the operator's log lacks the detail: %s", e.log.String())
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{})
	for _, c := range []struct{ sent, want string }{
		{"", ""}, {"abc", ""}, {"ok-request.id_12345", "ok-request.id_12345"},
		{"bad id with spaces", ""}, {strings.Repeat("a", 65), ""},
	} {
		r := e.raw(http.MethodGet, "/healthz", "", nil, http.Header{"X-Request-Id": {c.sent}})
		got := r.Header.Get("X-Request-Id")
		if c.want != "" && got != c.want || c.want == "" && (got == c.sent || len(got) != 24) {
			t.Fatalf("sent %q: got %q", c.sent, got)
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{})
	if r := e.raw(http.MethodGet, "/healthz", "", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("healthz: %d", r.Status)
	}
	if r := e.raw(http.MethodGet, "/readyz", "", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("readyz: %d %s", r.Status, r.RawBody)
	}
	// Forget the newest migration: the gateway must say it is not ready, and why.
	if _, err := e.x.Exec(`DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)`); err != nil {
		t.Fatal(err)
	}
	r := e.raw(http.MethodGet, "/readyz", "", nil, nil)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(r.RawBody, "migrations pending") {
		t.Fatalf("readyz with a pending migration: %d %s", r.Status, r.RawBody)
	}
}
