package gateway_test

import (
	"testing"

	"github.com/gpugate/gpugate/db"
)

// Anonymous operations read through the explorer role, everyone else through the app role: with
// the explorer's grants revoked, anonymous reads fail (masked) while a signed-in user's same
// query, and a bad token's refusal, are unchanged.
func TestAnonymousReadsUseTheExplorerRole(t *testing.T) {
	t.Parallel()
	o := newOwners(t)
	const q = `{ devices(first: 3) { edges { node { id name gpus { uuid } private { hostname } } } } networkStats { devices } }`
	alice := bearer(o.idp.sign(o.idp.claims("alice")))
	if r := o.as(nil, q, nil); len(r.Errors) > 0 {
		t.Fatalf("anonymous: %+v", r.Errors)
	}

	if _, err := o.x.Exec(`REVOKE SELECT ON explorer.devices, explorer.gpus FROM ` + db.RoleExplorer); err != nil {
		t.Fatal(err)
	}
	r := o.as(nil, q, nil)
	if len(r.Errors) == 0 {
		t.Fatal("an anonymous read succeeded without the explorer's grants: it did not run as the explorer role")
	}
	for _, e := range r.Errors {
		if e.Extensions["code"] != "INTERNAL" {
			t.Fatalf("anonymous read without grants: %+v; want a masked INTERNAL error", e)
		}
	}
	if r := o.as(alice, q, nil); len(r.Errors) > 0 {
		t.Fatalf("signed in, with the explorer's grants revoked: %+v", r.Errors)
	}
	if r := o.as(bearer("garbage"), q, nil); len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "UNAUTHENTICATED" {
		t.Fatalf("bad token: %+v; want UNAUTHENTICATED, never an anonymous read", r.Errors)
	}
}
