package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/gateway/fastexec"
)

// The compiled executor answers the public reads for every kind of caller, and answers each the
// same bytes it answers an anonymous caller (the fields it serves are public); a credential that
// does not verify is refused before any execution. Device.private, which it never serves, stays
// with gqlgen's executor and the @owner directive for every caller. Not parallel: the counts
// (fastexec.Stats) are process-wide.
func TestFastExecEveryCaller(t *testing.T) {
	o := newWorkerOwners(t)
	mine := o.enrolledWorker(t, "alice", h100Host(1))
	other := o.enrolledWorker(t, "bob", h100Host(2))
	query := `query($id: ID!) { device(id: $id) { ` + allDevice + ` gpus { __typename ` + allGPU + ` } }
		devices(first: 4) ` + conn(allDevice+` gpus { `+allGPU+` }`) + ` }`
	vars := map[string]any{"id": mine.deviceID}
	b := body(query, vars)
	post := func(h http.Header) response { return o.raw(http.MethodPost, "/graphql", "application/json", b, h) }
	served := func(f func() response) (response, uint64) {
		before, _ := fastexec.Stats()
		r := f()
		after, _ := fastexec.Stats()
		return r, after - before
	}

	anon, n := served(func() response { return post(nil) })
	if n != 1 || anon.Status != http.StatusOK || len(anon.Errors) > 0 || !strings.Contains(anon.RawBody, mine.deviceID) {
		t.Fatalf("anonymous: served %d, HTTP %d %.300s", n, anon.Status, anon.RawBody)
	}
	for _, c := range []struct {
		name string
		send func() response
	}{
		{"owner", func() response { return post(o.token("alice")) }},
		{"other user", func() response { return post(o.token("bob")) }},
		{"admin", func() response { return post(o.token("admin", "ADMIN")) }},
		{"the device", func() response { return mine.signed(mine.priv, mine.deviceID, time.Now(), b, nil) }},
		{"another device", func() response { return other.signed(other.priv, other.deviceID, time.Now(), b, nil) }},
		{"forged identity headers", func() response {
			return post(http.Header{"X-User-Id": {o.alice}, "X-Forwarded-User": {"alice"}, "X-Device-Id": {mine.deviceID}})
		}},
	} {
		r, n := served(c.send)
		if n != 1 || r.Status != http.StatusOK || r.RawBody != anon.RawBody {
			t.Errorf("%s: served %d, HTTP %d, same bytes as anonymous: %v\n%.300s", c.name, n, r.Status, r.RawBody == anon.RawBody, r.RawBody)
		}
	}
	for _, c := range []struct {
		name string
		send func() response
	}{
		{"bad token", func() response { return post(bearer(o.idp.signWith(o.idp.rogue, "k1", o.idp.claims("alice")))) }},
		{"garbage token", func() response { return post(bearer("not-a-token")) }},
		{"forged signature", func() response { return post(http.Header{attest.SignatureHeader: {"forged"}}) }},
		{"another device's key", func() response { return mine.signed(other.priv, mine.deviceID, time.Now(), b, nil) }},
	} {
		r, n := served(c.send)
		if n != 0 || r.Status != http.StatusUnauthorized {
			t.Errorf("%s: served %d, HTTP %d (want 401, not executed)\n%.300s", c.name, n, r.Status, r.RawBody)
		}
	}

	// private: null for everyone but the owner, decided by @owner through gqlgen's executor.
	priv := body(`query($id: ID!) { device(id: $id) { id private { hostname } } }`, vars)
	for _, c := range []struct {
		name   string
		header http.Header
		owner  bool
	}{{"anonymous", nil, false}, {"owner", o.token("alice"), true}, {"other user", o.token("bob"), false}, {"admin", o.token("admin", "ADMIN"), false}} {
		r, n := served(func() response { return o.raw(http.MethodPost, "/graphql", "application/json", priv, c.header) })
		if n != 0 || strings.Contains(r.RawBody, `"private":null`) == c.owner || len(r.Errors) > 0 {
			t.Errorf("private, %s: served %d, %s", c.name, n, r.RawBody)
		}
	}
}
