package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	jose "github.com/go-jose/go-jose/v4"
)

// Test keys, generated once per test binary.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	keys := map[string]crypto.Signer{}
	for _, name := range []string{"a-rsa", "b-rsa", "rogue-rsa", "rotated-rsa"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	for _, name := range []string{"a-ec", "rogue-ec"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	return keys
})

func key(name string) crypto.Signer { return testKeys()[name] }

// testClock is an adjustable clock for Config.Now.
type testClock struct{ ns atomic.Int64 }

func newClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testIdP wraps go-oidc's oidctest.Server (discovery + /keys) with a JWKS request counter, a
// switch to make /keys fail, and a lock so keys can be rotated while serving.
type testIdP struct {
	Issuer string

	mu       sync.RWMutex
	ots      *oidctest.Server
	srv      *httptest.Server
	jwksHits atomic.Int64
	discHits atomic.Int64
	failKeys atomic.Bool
	failAll  atomic.Bool // 503 for discovery and keys: the issuer is down behind its proxy
	hang     atomic.Bool // every request hangs until the client gives up
}

type pubKey struct {
	kid, alg string
	name     string // testKeys name
}

// newIdP starts an IdP publishing keys; with trailingSlash its issuer is "http://host/" (Auth0).
func newIdP(t testing.TB, trailingSlash bool, keys ...pubKey) *testIdP {
	t.Helper()
	p := &testIdP{ots: &oidctest.Server{Algorithms: []string{"RS256", "ES256"}}}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	p.Issuer = p.srv.URL
	if trailingSlash {
		p.Issuer += "/"
	}
	p.ots.SetIssuer(p.Issuer)
	p.SetKeys(keys...)
	return p
}

func (p *testIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/keys" {
		p.jwksHits.Add(1)
	} else {
		p.discHits.Add(1)
	}
	switch {
	case p.hang.Load():
		<-r.Context().Done()
		return
	case p.failAll.Load():
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
		return
	case r.URL.Path == "/keys" && p.failKeys.Load():
		http.Error(w, "boom", http.StatusBadGateway)
		return
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.ots.ServeHTTP(w, r)
}

// SetKeys replaces the published JWKS (key rotation).
func (p *testIdP) SetKeys(keys ...pubKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ots.PublicKeys = nil
	for _, k := range keys {
		p.ots.PublicKeys = append(p.ots.PublicKeys, oidctest.PublicKey{
			PublicKey: key(k.name).Public(), KeyID: k.kid, Algorithm: k.alg,
		})
	}
}

func (p *testIdP) Hits() int64 { return p.jwksHits.Load() }

const (
	audA = "https://api.gpugate.dev"
	audB = "https://gpugate.dev/api"
	// auth0Roles is an Auth0-style namespaced roles claim.
	auth0Roles = "https://gpugate.dev/roles"
)

// testEnv has two trusted issuers: A (Okta/Dex style: no trailing slash, "groups", RSA and EC
// keys) and B (Auth0 style: trailing slash, namespaced roles claim).
type testEnv struct {
	A, B  *testIdP
	Clock *testClock
	V     *Verifier
}

func newEnv(t testing.TB, mutate ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{
		A:     newIdP(t, false, pubKey{"a-rsa", "RS256", "a-rsa"}, pubKey{"a-ec", "ES256", "a-ec"}),
		B:     newIdP(t, true, pubKey{"b-rsa", "RS256", "b-rsa"}),
		Clock: newClock(),
	}
	cfg := Config{
		Issuers: []IssuerConfig{
			{URL: e.A.Issuer, Audience: audA},
			{URL: e.B.Issuer, Audience: audB, RolesClaim: auth0Roles, Algorithms: []string{"RS256"}},
		},
		Now:    e.Clock.Now,
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.V = v
	return e
}

// claims returns a valid claim set for issuer A at the env's current time.
func (e *testEnv) claimsA() map[string]any {
	now := e.Clock.Now().Unix()
	return map[string]any{
		"iss":            e.A.Issuer,
		"sub":            "user-a",
		"aud":            audA,
		"iat":            now,
		"exp":            now + 3600,
		"email":          "a@example.com",
		"email_verified": true,
		"groups":         []string{"owner", "admin"},
	}
}

func (e *testEnv) claimsB() map[string]any {
	now := e.Clock.Now().Unix()
	return map[string]any{
		"iss":            e.B.Issuer,
		"sub":            "auth0|user-b",
		"aud":            []string{audB, "https://tenant.auth0.com/userinfo"},
		"iat":            now,
		"exp":            now + 3600,
		"azp":            "spa-client-id",
		"email":          "b@example.com",
		"email_verified": "true",
		auth0Roles:       []string{"owner"},
	}
}

// with returns a copy of claims with the given changes; a nil value deletes the claim.
func with(claims map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// sign signs claims with the named test key; kid "" omits the header.
func sign(t testing.TB, keyName, kid string, alg jose.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	return signWith(t, jose.SigningKey{Algorithm: alg, Key: key(keyName)}, kid, claims)
}

func signWith(t testing.TB, sk jose.SigningKey, kid string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	return signOpts(t, sk, opts.WithType("at+jwt"), claims)
}

// signOpts signs claims with sk and the header options opts, and returns the compact JWS.
func signOpts(t testing.TB, sk jose.SigningKey, opts *jose.SignerOptions, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unsigned builds "header.payload.sig" from arbitrary JSON values.
func unsigned(t testing.TB, header, claims any, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return b64(h) + "." + b64(c) + "." + sig
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// publicKeyPEM is the RSA public key as published, the classic HS256 "secret".
func publicKeyPEM(t testing.TB, name string) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key(name).Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
