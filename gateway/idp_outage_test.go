package gateway_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/oidc"
)

// When the identity provider cannot be reached to fetch a signing key, the token is not at
// fault: the caller gets 503 with Retry-After (and keeps its token), never 401.
func TestIdentityProviderOutageIsNotUnauthenticated(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	ots := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"}}}
	srv := httptest.NewServer(ots)
	ots.SetIssuer(srv.URL)
	v, err := oidc.New(context.Background(), oidc.Config{Issuers: []oidc.IssuerConfig{{URL: srv.URL, Audience: audience, RolesClaim: "groups"}},
		MinRefreshInterval: time.Nanosecond}) // refetch on the first unknown key
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 1, gateway.Config{Verifier: v})
	p := &idp{url: srv.URL, key: key}
	srv.Close() // the provider goes down; a token signed with a key the gateway has not cached arrives
	token := p.signWith(key, "k-rotated", p.claims("alice"))
	r := e.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(token))
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || len(r.Errors) != 1 ||
		r.Errors[0].Extensions["code"] != gateway.CodeInternal {
		t.Fatalf("HTTP %d, Retry-After %q: %s", r.Status, r.Header.Get("Retry-After"), r.RawBody)
	}
}
