package e2e_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/oidc/devissuer"
)

// TestDevIssuerOnlyAccessTokensAreBearerTokens runs the gateway against the dev issuer as
// `gpugate serve` does in dev mode (discovery and JWKS over HTTP, token type "at+jwt"): the
// access token that `gpugate dev token` prints works; the ID token of the same sign-in is
// refused with UNAUTHENTICATED, naming it.
func TestDevIssuerOnlyAccessTokensAreBearerTokens(t *testing.T) {
	ctx := t.Context()
	const (
		audience  = "gpugate-api"
		devClient = "gpugate-dev"
		redirect  = "http://127.0.0.1/callback"
	)
	iss, err := devissuer.Start(ctx, devissuer.Options{
		Addr:         "127.0.0.1:0",
		Users:        []devissuer.User{{Username: "alice", Subject: "dev|alice", Email: "alice@example.com", Name: "Alice"}},
		Audience:     audience,
		ClientID:     devClient,
		RedirectURIs: []string{redirect},
	})
	if err != nil {
		t.Fatalf("dev issuer: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = iss.Close(c)
	})

	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(ctx, 20); err != nil {
		t.Fatalf("seed: %v", err)
	}
	if err := store.LinkIdentity(ctx, db.Identity{Issuer: iss.Issuer(), Subject: "dev|alice"}, "alice@example.com", "dev"); err != nil {
		t.Fatalf("link alice: %v", err)
	}
	v, err := oidc.New(ctx, oidc.Config{Issuers: []oidc.IssuerConfig{{
		URL: iss.Issuer(), Audience: audience, TokenType: oidc.TokenTypeATJWT,
	}}})
	if err != nil {
		t.Fatalf("oidc.New against the dev issuer: %v", err)
	}
	gw := startGateway(t, store, v)

	tok, err := devissuer.FetchTokens(ctx, iss.Issuer(), devClient, redirect, "alice")
	if err != nil {
		t.Fatalf("sign in as alice: %v", err)
	}
	if tok.ID == "" {
		t.Fatal("the dev issuer returned no ID token")
	}

	t.Run("the access token works", func(t *testing.T) {
		var out struct{ Viewer struct{ Email string } }
		gw.post(t, tok.Access, `{ viewer { email } }`).Decode(t, &out)
		if out.Viewer.Email != "alice@example.com" {
			t.Fatalf("viewer.email = %q", out.Viewer.Email)
		}
	})

	t.Run("the ID token is refused", func(t *testing.T) {
		r := gw.post(t, tok.ID, `{ viewer { email } }`)
		if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("want HTTP 401 with WWW-Authenticate, got %d: %s", r.Status, r.RawBody)
		}
		if len(r.Errors) != 1 || r.Errors[0].Code() != "UNAUTHENTICATED" || r.Errors[0].Message != "an ID token is not an access token" {
			t.Fatalf("want one UNAUTHENTICATED error saying an ID token is not an access token, got %s", r.RawBody)
		}
	})
}
