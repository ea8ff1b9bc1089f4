package oidc

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Identity provider faults (docs/resilience.md): the issuer down at start, withdrawn keys, a
// hanging issuer. The clock is the env's fake one; the issuer is real HTTP.

// The issuer answers 503 (down behind its proxy) when the gateway starts: New succeeds, the
// issuer's tokens are refused as "provider unavailable" (never accepted), a flood of them makes
// at most one discovery attempt per pendingRetryInterval, and once the issuer answers its tokens
// are accepted without a restart.
func TestStartsWhileIssuerUnavailable(t *testing.T) {
	a := newIdP(t, false, pubKey{"a-rsa", "RS256", "a-rsa"})
	a.failAll.Store(true)
	e := &testEnv{A: a, Clock: newClock()}
	v, err := New(context.Background(), Config{Issuers: []IssuerConfig{{URL: a.Issuer, Audience: audA}},
		Now: e.Clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New with the issuer down: %v", err)
	}
	e.V = v
	ctx := context.Background()
	if got := a.discHits.Load(); got != 1 {
		t.Fatalf("discovery attempts at start = %d, want 1", got)
	}

	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = v.Verify(ctx, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA()))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != ErrProviderUnavailable { //nolint:errorlint
			t.Fatalf("token %d while the issuer is down: %v", i, err)
		}
	}
	if got := a.discHits.Load() + a.Hits(); got != 1 {
		t.Fatalf("issuer asked %d times within the retry interval, want 1 (the start-up attempt)", got)
	}

	// Still down after the interval: one more attempt for the next flood, no more.
	e.Clock.Advance(pendingRetryInterval)
	for range 50 {
		checkOutcome(t, nil, verifyErr(v, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())), nil, ErrProviderUnavailable)
	}
	if got := a.discHits.Load(); got != 2 {
		t.Fatalf("discovery attempts = %d, want 2", got)
	}

	// The issuer comes back: the next attempt (after the interval) discovers and fetches.
	a.failAll.Store(false)
	e.Clock.Advance(pendingRetryInterval)
	p, err := v.Verify(ctx, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA()))
	if err != nil || p.Subject != "user-a" {
		t.Fatalf("after the issuer came back: %v, %v", p, err)
	}
	if d, j := a.discHits.Load(), a.Hits(); d != 3 || j != 1 {
		t.Fatalf("discovery %d, JWKS %d requests; want 3 and 1", d, j)
	}
	// Unknown kids are now plainly unknown (the issuer answered).
	checkOutcome(t, nil, verifyErr(v, sign(t, "rogue-rsa", "rogue", jose.RS256, e.claimsA())), nil, ErrUnknownSigningKey)
}

func verifyErr(v *Verifier, tok string) error {
	_, err := v.Verify(context.Background(), tok)
	return err
}

// A key published from the start (the issuer's "next" key, as Okta and Auth0 pre-publish) takes
// over and the old one is withdrawn: no unknown kid ever arrives, yet the withdrawn key stops
// verifying once the cached set is MaxKeyAge old.
func TestWithdrawnKeyStopsVerifyingAfterMaxKeyAge(t *testing.T) {
	e := newEnv(t)
	ecTok := sign(t, "a-ec", "a-ec", jose.ES256, with(e.claimsA(), "exp", e.Clock.Now().Unix()+7200))
	rsaTok := func() string { return sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA()) }

	e.A.SetKeys(pubKey{"a-rsa", "RS256", "a-rsa"}) // a-ec withdrawn
	e.Clock.Advance(defaultMaxKeyAge - time.Second)
	if err := verifyErr(e.V, ecTok); err != nil {
		t.Fatalf("withdrawn key within MaxKeyAge of the last fetch: %v (cached keys verify until then)", err)
	}
	if got := e.A.Hits(); got != 1 {
		t.Fatalf("JWKS hits = %d, want 1", got)
	}
	e.Clock.Advance(time.Second)
	if err := verifyErr(e.V, rsaTok()); err != nil { // any token of the issuer refreshes the set
		t.Fatal(err)
	}
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d, want 2 (the set was MaxKeyAge old)", got)
	}
	checkOutcome(t, nil, verifyErr(e.V, ecTok), nil, ErrUnknownSigningKey)
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d: the refused kid refetched inside MinRefreshInterval", got)
	}
	// MaxKeyAge is configurable.
	e2 := newEnv(t, func(c *Config) { c.MaxKeyAge = 2 * time.Minute })
	ec2 := sign(t, "a-ec", "a-ec", jose.ES256, with(e2.claimsA(), "exp", e2.Clock.Now().Unix()+7200))
	e2.A.SetKeys(pubKey{"a-rsa", "RS256", "a-rsa"})
	e2.Clock.Advance(2 * time.Minute)
	checkOutcome(t, nil, verifyErr(e2.V, ec2), nil, ErrUnknownSigningKey)
}

// While the issuer is down, the cached keys keep verifying past MaxKeyAge; the refetch of the
// stale set is rate limited like any other; an unknown kid fails closed as "unavailable".
func TestStaleKeysKeepVerifyingDuringOutage(t *testing.T) {
	e := newEnv(t)
	e.A.failAll.Store(true)
	e.Clock.Advance(time.Hour)
	for range 20 {
		if err := verifyErr(e.V, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())); err != nil {
			t.Fatalf("cached key during the outage: %v", err)
		}
	}
	if got := e.A.Hits(); got != 2 {
		t.Fatalf("JWKS hits = %d, want 2 (start-up, one stale refetch)", got)
	}
	checkOutcome(t, nil, verifyErr(e.V, sign(t, "rogue-rsa", "rogue", jose.RS256, e.claimsA())), nil, ErrProviderUnavailable)
	e.Clock.Advance(defaultMinRefreshInterval)
	_ = verifyErr(e.V, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA()))
	if got := e.A.Hits(); got != 3 {
		t.Fatalf("JWKS hits = %d, want 3 (one attempt per MinRefreshInterval)", got)
	}
	e.A.failAll.Store(false)
	e.Clock.Advance(defaultMinRefreshInterval)
	if err := verifyErr(e.V, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())); err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, nil, verifyErr(e.V, sign(t, "rogue-rsa", "rogue", jose.RS256, e.claimsA())), nil, ErrUnknownSigningKey)
}

// A hanging issuer (it accepts the connection and never answers): a request whose cached set is
// stale waits for the refetch at most staleRefreshWait, then is verified with the cached keys.
func TestHangingIssuerDoesNotStallCachedKeys(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HTTPClient = &http.Client{Timeout: 5 * time.Second} })
	e.A.hang.Store(true)
	t.Cleanup(func() { e.A.hang.Store(false) })
	e.Clock.Advance(time.Hour)
	start := time.Now()
	if err := verifyErr(e.V, sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())); err != nil {
		t.Fatalf("cached key while the issuer hangs: %v", err)
	}
	// Liveness, not performance: below the client's 5 s timeout.
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("a request waited %v for a hanging issuer", d)
	}
	// While that fetch hangs, an unknown kid waits for it only as long as the request may.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.V.Verify(ctx, sign(t, "rogue-rsa", "rogue", jose.RS256, e.claimsA()))
	checkOutcome(t, nil, err, nil, ErrProviderUnavailable)
}
