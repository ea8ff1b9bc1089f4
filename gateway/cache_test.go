package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway"
)

func TestAnonymousQueriesAreMicroCached(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	o := newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, PublicCacheTTL: 300 * time.Millisecond})
	q := `query($id: ID!) { device(id: $id) { name } }`
	vars := map[string]any{"id": o.aliceDevice}
	name := func(r response) string {
		var out struct{ Device struct{ Name string } }
		r.Decode(t, &out)
		return out.Device.Name
	}
	first := o.post(q, vars)
	if first.Header.Get("X-Cache") == "hit" {
		t.Fatal("the first request cannot be a hit")
	}
	before := name(first)
	if _, err := o.x.Exec(`UPDATE devices SET name = 'renamed' WHERE id = $1`, o.aliceDevice); err != nil {
		t.Fatal(err)
	}
	second := o.post(q, vars)
	if second.Header.Get("X-Cache") != "hit" || name(second) != before {
		t.Fatalf("an identical anonymous query within the TTL should be served from the cache: %q %s", second.Header.Get("X-Cache"), second.RawBody)
	}
	// A signed-in caller always gets a fresh answer, and is never served what anonymous callers got.
	signed := o.as(bearer(o.idp.sign(o.idp.claims("alice"))), q, vars)
	if signed.Header.Get("X-Cache") == "hit" || name(signed) != "renamed" {
		t.Fatalf("authenticated request: %q %s", signed.Header.Get("X-Cache"), signed.RawBody)
	}
	time.Sleep(400 * time.Millisecond)
	if r := o.post(q, vars); r.Header.Get("X-Cache") == "hit" || name(r) != "renamed" {
		t.Fatalf("after the TTL: %q %s", r.Header.Get("X-Cache"), r.RawBody)
	}
	// Errors are never cached.
	bad := `{ device(id: "00000000-0000-4000-8000-000000000000") { name } }`
	o.post(bad, nil)
	if r := o.post(bad, nil); r.Header.Get("X-Cache") == "hit" {
		t.Fatal("an error response was cached")
	}
	// Nor are mutations, even refused ones.
	m := `mutation($id: ID!) { pauseDevice(id: $id) { id } }`
	o.post(m, vars)
	if r := o.post(m, vars); r.Header.Get("X-Cache") == "hit" || r.Status != http.StatusOK {
		t.Fatal("a mutation response was cached")
	}
}
