package oidc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func randomKid(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestJWKSNotHammeredByUnknownKids sends 1,000 tokens with random unknown kids concurrently,
// after the refresh interval has passed: they share a single JWKS fetch.
func TestJWKSNotHammeredByUnknownKids(t *testing.T) {
	e := newEnv(t)
	if got := e.A.Hits(); got != 1 {
		t.Fatalf("JWKS hits after New = %d, want 1 (start-up fetch)", got)
	}
	e.Clock.Advance(2 * time.Minute) // a refetch is allowed again

	const n = 1000
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = sign(t, "rogue-ec", randomKid(t), jose.ES256, e.claimsA())
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range tokens {
		wg.Go(func() {
			<-start
			_, errs[i] = e.V.Verify(context.Background(), tokens[i])
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs {
		if err != ErrUnknownSigningKey { //nolint:errorlint
			t.Fatalf("token %d: err = %v, want %v", i, err, ErrUnknownSigningKey)
		}
	}
	if got := e.A.Hits(); got > 2 {
		t.Fatalf("JWKS hit %d times for %d unknown kids, want at most 2", got, n)
	}
	t.Logf("JWKS hits: %d (start-up + shared refetch) for %d forged kids", e.A.Hits(), n)

	// A second wave inside the interval does not fetch at all.
	before := e.A.Hits()
	for range 100 {
		if _, err := e.V.Verify(context.Background(), sign(t, "rogue-ec", randomKid(t), jose.ES256, e.claimsA())); err != ErrUnknownSigningKey { //nolint:errorlint
			t.Fatalf("err = %v", err)
		}
	}
	if got := e.A.Hits(); got != before {
		t.Fatalf("JWKS hits inside the interval: %d -> %d", before, got)
	}
	if e.B.Hits() != 1 {
		t.Fatalf("issuer B's JWKS fetched %d times for issuer A's tokens", e.B.Hits())
	}
}

// TestKeyRotation: a key published after start-up becomes usable once the refresh interval has
// passed, and a key withdrawn from the JWKS stops verifying after that refresh.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	oldTok := sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", e.Clock.Now().Unix()+7200))

	// The IdP rotates: the new key replaces the old one.
	e.A.SetKeys(pubKey{"rotated", "RS256", "rotated-rsa"}, pubKey{"a-ec", "ES256", "a-ec"})

	// Within the interval of the start-up fetch the new kid is unknown and not fetched.
	_, err := e.V.Verify(ctx, sign(t, "rotated-rsa", "rotated", jose.RS256, e.claimsA()))
	checkOutcome(t, nil, err, nil, ErrUnknownSigningKey)
	if got := e.A.Hits(); got != 1 {
		t.Fatalf("JWKS hits = %d, want 1", got)
	}
	// The old key is still cached.
	if _, err := e.V.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old key before refresh: %v", err)
	}

	e.Clock.Advance(time.Minute) // exactly MinRefreshInterval
	p, err := e.V.Verify(ctx, sign(t, "rotated-rsa", "rotated", jose.RS256, e.claimsA()))
	if err != nil || p.Subject != "user-a" {
		t.Fatalf("rotated key after the interval: %v, %v", p, err)
	}
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d, want 2", got)
	}
	// The withdrawn key no longer verifies.
	_, err = e.V.Verify(ctx, oldTok)
	checkOutcome(t, nil, err, nil, ErrUnknownSigningKey)
}

// TestJWKSFetchFailureFailsClosedKeepsKeys: a failing JWKS endpoint makes unknown kids fail
// with ErrProviderUnavailable, known keys keep working, and failures are rate limited too.
func TestJWKSFetchFailureFailsClosedKeepsKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.A.failKeys.Store(true)
	e.Clock.Advance(2 * time.Minute)

	_, err := e.V.Verify(ctx, sign(t, "rogue-rsa", "new-kid", jose.RS256, e.claimsA()))
	checkOutcome(t, nil, err, nil, ErrProviderUnavailable)
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d, want 2", got)
	}

	if _, err := e.V.Verify(ctx, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())); err != nil {
		t.Fatalf("cached key after a failed refresh: %v", err)
	}

	// Inside the interval after the failed attempt: no new fetch, and the answer stays "the
	// provider is unavailable" (the token may be fine: a client must not throw it away).
	_, err = e.V.Verify(ctx, sign(t, "rogue-rsa", "new-kid", jose.RS256, e.claimsA()))
	checkOutcome(t, nil, err, nil, ErrProviderUnavailable)
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d, want 2", got)
	}

	// The IdP recovers and publishes the key: usable after the interval.
	e.A.failKeys.Store(false)
	e.A.SetKeys(pubKey{"a-rsa", "RS256", "a-rsa"}, pubKey{"new-kid", "RS256", "rogue-rsa"})
	e.Clock.Advance(time.Minute)
	if _, err := e.V.Verify(ctx, sign(t, "rogue-rsa", "new-kid", jose.RS256, e.claimsA())); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

// TestRefreshWaitHonoursContext: a caller whose context ends while the shared fetch is in flight
// fails closed without waiting.
func TestRefreshWaitHonoursContext(t *testing.T) {
	e := newEnv(t)
	e.Clock.Advance(2 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.V.Verify(ctx, sign(t, "rogue-rsa", "new-kid", jose.RS256, e.claimsA()))
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("err = %v", err)
	}
	if err != ErrProviderUnavailable && err != ErrUnknownSigningKey { //nolint:errorlint
		t.Fatalf("err = %v, want provider unavailable or unknown key", err)
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	algs := []jose.SignatureAlgorithm{jose.RS256}
	tests := []struct {
		name     string
		jwks     string
		wantKids []string
		wantErr  bool
	}{
		{"not JSON", `nope`, nil, true},
		{"no keys", `{"keys":[]}`, nil, true},
		{"symmetric key", `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`, nil, true},
		{"unknown kty", `{"keys":[{"kty":"XYZ","kid":"x"}]}`, nil, true},
		{"encryption key skipped", jwksOf(t, `"use":"enc"`, "a-rsa"), nil, true},
		{"key for another alg skipped", jwksOf(t, `"alg":"PS256"`, "a-rsa"), nil, true},
		{"key without alg kept", jwksOf(t, ``, "a-rsa"), []string{"a-rsa"}, false},
		{"sig key with alg kept", jwksOf(t, `"alg":"RS256","use":"sig"`, "a-rsa"), []string{"a-rsa"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseJWKS([]byte(tt.jwks), algs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			var kids []string
			for _, k := range keys {
				kids = append(kids, k.KeyID)
			}
			if len(kids) != len(tt.wantKids) || (len(kids) > 0 && kids[0] != tt.wantKids[0]) {
				t.Fatalf("kids = %v, want %v", kids, tt.wantKids)
			}
		})
	}
}

// jwksOf is a one-key JWKS for the named test key with extra members.
func jwksOf(t *testing.T, extra, name string) string {
	t.Helper()
	b, err := (&jose.JSONWebKey{Key: key(name).Public(), KeyID: name}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if extra != "" {
		s = s[:len(s)-1] + "," + extra + "}"
	}
	return `{"keys":[` + s + `]}`
}
