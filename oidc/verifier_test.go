package oidc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// checkOutcome asserts Verify's exact outcome: the principal, or the exact sentinel (which must
// wrap ErrUnauthenticated).
func checkOutcome(t *testing.T, got *Principal, err error, want *Principal, wantErr error) {
	t.Helper()
	if wantErr != nil {
		if err != wantErr { //nolint:errorlint // the exact sentinel is the contract
			t.Fatalf("err = %v, want %v", err, wantErr)
		}
		if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("err %v does not wrap ErrUnauthenticated", err)
		}
		if got != nil {
			t.Fatalf("principal = %+v with error", got)
		}
		return
	}
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("principal = %+v, want %+v", got, want)
	}
}

func TestVerify(t *testing.T) {
	e := newEnv(t)
	principalA := &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"owner", "admin"}}
	now := e.Clock.Now().Unix()
	validA := sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())

	tests := []struct {
		name    string
		token   func() string
		want    *Principal
		wantErr error
	}{
		// Accepted.
		{"valid RS256 token with groups list", func() string { return validA }, principalA, nil},
		{"valid ES256 token with a single-string groups claim", func() string {
			return sign(t, "a-ec", "a-ec", jose.ES256, with(e.claimsA(), "groups", "admin"))
		}, &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"admin"}}, nil},
		{"valid Auth0 token: trailing-slash issuer, namespaced roles, email_verified as string", func() string {
			return sign(t, "b-rsa", "b-rsa", jose.RS256, e.claimsB())
		}, &Principal{Issuer: e.B.Issuer, Subject: "auth0|user-b", Email: "b@example.com", EmailVerified: true, Roles: []string{"owner"}}, nil},
		{"Auth0 namespaced roles as a single string", func() string {
			return sign(t, "b-rsa", "b-rsa", jose.RS256, with(e.claimsB(), auth0Roles, "admin"))
		}, &Principal{Issuer: e.B.Issuer, Subject: "auth0|user-b", Email: "b@example.com", EmailVerified: true, Roles: []string{"admin"}}, nil},
		{"groups claim ignored at an issuer configured for a namespaced claim", func() string {
			return sign(t, "b-rsa", "b-rsa", jose.RS256, with(e.claimsB(), auth0Roles, nil, "groups", []string{"admin"}))
		}, &Principal{Issuer: e.B.Issuer, Subject: "auth0|user-b", Email: "b@example.com", EmailVerified: true}, nil},
		{"roles of the wrong type and non-string elements yield no roles", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "groups", []any{1, nil, "owner", true, ""}))
		}, &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"owner"}}, nil},
		{"email_verified false, email not a string", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "email", 42, "email_verified", "false", "groups", nil))
		}, &Principal{Issuer: e.A.Issuer, Subject: "user-a"}, nil},
		{"audience list containing the API audience", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", []string{"other", audA}))
		}, principalA, nil},
		{"token without kid verified by a key of its alg", func() string {
			return sign(t, "a-rsa", "", jose.RS256, e.claimsA())
		}, principalA, nil},
		{"expired 30s ago: within the 1m skew", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", now-30, "iat", now-3600))
		}, principalA, nil},
		{"nbf 30s ahead: within the 1m skew", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "nbf", now+30))
		}, principalA, nil},
		{"fractional NumericDates", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", float64(now)+10.5, "iat", float64(now)-0.5))
		}, principalA, nil},

		// Malformed.
		{"empty token", func() string { return "" }, nil, ErrMalformedToken},
		{"garbage", func() string { return "not-a-jwt" }, nil, ErrMalformedToken},
		{"three segments of garbage", func() string { return "a.b.c" }, nil, ErrMalformedToken},
		{"five segments (JWE shaped)", func() string { return validA + ".x.y" }, nil, ErrMalformedToken},
		{"JSON serialization instead of compact", func() string {
			return `{"payload":"e30","protected":"eyJhbGciOiJSUzI1NiJ9","signature":"AA"}`
		}, nil, ErrMalformedToken},
		{"payload is not an object", func() string {
			return unsigned(t, map[string]any{"alg": "RS256", "kid": "a-rsa"}, []string{"x"}, "AA")
		}, nil, ErrMalformedToken},
		{"whitespace inside the token", func() string { return validA[:20] + " " + validA[20:] }, nil, ErrMalformedToken},
		{"oversized token (unsigned padding)", func() string {
			return validA + strings.Repeat("A", MaxTokenSize)
		}, nil, ErrMalformedToken},
		{"oversized token with a valid signature", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "pad", strings.Repeat("x", MaxTokenSize)))
		}, nil, ErrMalformedToken},
		{"no exp", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", nil))
		}, nil, ErrMalformedToken},
		{"exp as a string", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", "4102444800"))
		}, nil, ErrMalformedToken},
		{"no sub", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "sub", nil))
		}, nil, ErrMalformedToken},
		{"aud of the wrong type", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", 7))
		}, nil, ErrMalformedToken},

		// Algorithm confusion.
		{"alg none", func() string {
			return unsigned(t, map[string]any{"alg": "none", "kid": "a-rsa"}, e.claimsA(), "")
		}, nil, ErrAlgorithmNotAllowed},
		{"alg None (case variant)", func() string {
			return unsigned(t, map[string]any{"alg": "None"}, e.claimsA(), "")
		}, nil, ErrAlgorithmNotAllowed},
		{"HS256 signed with the RSA public key PEM as HMAC secret", func() string {
			return signWith(t, jose.SigningKey{Algorithm: jose.HS256, Key: publicKeyPEM(t, "a-rsa")}, "a-rsa", e.claimsA())
		}, nil, ErrAlgorithmNotAllowed},
		{"PS256 (not pinned) with a known RSA key", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.PS256, e.claimsA())
		}, nil, ErrAlgorithmNotAllowed},
		{"ES256 at an issuer pinned to RS256", func() string {
			return sign(t, "a-ec", "a-ec", jose.ES256, e.claimsB())
		}, nil, ErrAlgorithmNotAllowed},

		// Issuer.
		{"untrusted issuer", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "iss", "https://evil.example"))
		}, nil, ErrIssuerNotTrusted},
		{"no issuer", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "iss", nil))
		}, nil, ErrIssuerNotTrusted},
		{"issuer with a trailing slash the config does not have", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "iss", e.A.Issuer+"/"))
		}, nil, ErrIssuerNotTrusted},
		{"issuer without the trailing slash the config has (Auth0)", func() string {
			return sign(t, "b-rsa", "b-rsa", jose.RS256, with(e.claimsB(), "iss", strings.TrimSuffix(e.B.Issuer, "/")))
		}, nil, ErrIssuerNotTrusted},

		// Audience.
		{"wrong audience", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", "https://other-api.example"))
		}, nil, ErrAudienceMismatch},
		{"ID-token-style audience of another client", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", "spa-client-id", "azp", "spa-client-id", "nonce", "n"))
		}, nil, ErrAudienceMismatch},
		{"issuer B's audience at issuer A", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", audB))
		}, nil, ErrAudienceMismatch},
		{"no audience", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", nil))
		}, nil, ErrAudienceMismatch},

		// Time.
		{"expired beyond the skew", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", now-61, "iat", now-3600))
		}, nil, ErrTokenExpired},
		{"exp = 0", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", 0))
		}, nil, ErrTokenExpired},
		{"nbf beyond the skew", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "nbf", now+120))
		}, nil, ErrTokenNotYetValid},
		{"nbf 4m ahead: inside go-oidc's fixed 5m leeway, beyond ours", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "nbf", now+240))
		}, nil, ErrTokenNotYetValid},
		{"nbf far beyond int64 seconds", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "nbf", 1e300))
		}, nil, ErrTokenNotYetValid},
		{"iat in the future beyond the skew", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "iat", now+120))
		}, nil, ErrTokenNotYetValid},

		// Keys and signatures.
		{"unknown kid", func() string {
			return sign(t, "rogue-rsa", "no-such-kid", jose.RS256, e.claimsA())
		}, nil, ErrUnknownSigningKey},
		{"another key's signature under a known kid", func() string {
			return sign(t, "rogue-rsa", "a-rsa", jose.RS256, e.claimsA())
		}, nil, ErrSignatureInvalid},
		{"RS256 header with the EC key's kid", func() string {
			return sign(t, "a-rsa", "a-ec", jose.RS256, e.claimsA())
		}, nil, ErrSignatureInvalid},
		{"another key's signature without kid", func() string {
			return sign(t, "rogue-ec", "", jose.ES256, e.claimsA())
		}, nil, ErrSignatureInvalid},
		{"tampered payload (roles elevated)", func() string {
			parts := strings.Split(validA, ".")
			forged := strings.Split(unsigned(t, map[string]any{}, with(e.claimsA(), "groups", []string{"root"}), ""), ".")
			return parts[0] + "." + forged[1] + "." + parts[2]
		}, nil, ErrSignatureInvalid},
		{"signature stripped", func() string {
			return validA[:strings.LastIndex(validA, ".")+1]
		}, nil, ErrSignatureInvalid},
		{"token of issuer A signed with B's key and kid", func() string {
			return sign(t, "b-rsa", "b-rsa", jose.RS256, e.claimsA())
		}, nil, ErrUnknownSigningKey},
		{"token of issuer A signed with B's key under A's kid", func() string {
			return sign(t, "b-rsa", "a-rsa", jose.RS256, e.claimsA())
		}, nil, ErrSignatureInvalid},
		{"token of issuer B signed with A's key and kid", func() string {
			return sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsB())
		}, nil, ErrUnknownSigningKey},
	}
	hitsA, hitsB := e.A.Hits(), e.B.Hits()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.V.Verify(context.Background(), tt.token())
			checkOutcome(t, got, err, tt.want, tt.wantErr)
		})
	}
	// The clock never moved, so no token (not even the unknown kids) caused a JWKS fetch.
	if e.A.Hits() != hitsA || e.B.Hits() != hitsB {
		t.Errorf("JWKS fetched during verification: A %d->%d, B %d->%d", hitsA, e.A.Hits(), hitsB, e.B.Hits())
	}
}

func TestVerifyClockSkewConfigured(t *testing.T) {
	tests := []struct {
		name    string
		skew    time.Duration
		exp     int64 // relative to now
		nbf     int64
		wantErr error
	}{
		{"5s skew: expired 4s ago accepted", 5 * time.Second, -4, 0, nil},
		{"5s skew: expired 6s ago rejected", 5 * time.Second, -6, 0, ErrTokenExpired},
		{"5s skew: nbf 4s ahead accepted", 5 * time.Second, 3600, 4, nil},
		{"5s skew: nbf 6s ahead rejected", 5 * time.Second, 3600, 6, ErrTokenNotYetValid},
		{"no skew: exp == now rejected", -1, 0, 0, ErrTokenExpired},
		{"no skew: exp now+1 accepted", -1, 1, 0, nil},
		{"no skew: nbf now+1 rejected", -1, 3600, 1, ErrTokenNotYetValid},
		{"no skew: nbf == now accepted", -1, 3600, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.ClockSkew = tt.skew })
			now := e.Clock.Now().Unix()
			claims := with(e.claimsA(), "exp", now+tt.exp, "iat", now-7200)
			if tt.nbf != 0 {
				claims["nbf"] = now + tt.nbf
			} else {
				claims["nbf"] = now
			}
			got, err := e.V.Verify(context.Background(), sign(t, "a-rsa", "a-rsa", jose.RS256, claims))
			var want *Principal
			if tt.wantErr == nil {
				want = &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"owner", "admin"}}
			}
			checkOutcome(t, got, err, want, tt.wantErr)
		})
	}
}

func TestNew(t *testing.T) {
	a := newIdP(t, false, pubKey{"a-rsa", "RS256", "a-rsa"})
	slash := newIdP(t, true, pubKey{"b-rsa", "RS256", "b-rsa"})
	ecOnly := newIdP(t, false, pubKey{"a-ec", "ES256", "a-ec"})
	noKeys := newIdP(t, false)
	badKeys := newIdP(t, false, pubKey{"a-rsa", "RS256", "a-rsa"})
	badKeys.failKeys.Store(true)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)

	tests := []struct {
		name    string
		issuers []IssuerConfig
		mutate  func(*Config)
		wantErr string // substring; "" means success
	}{
		{"defaults", []IssuerConfig{{URL: a.Issuer, Audience: audA}}, nil, ""},
		{"trailing-slash issuer kept exact", []IssuerConfig{{URL: slash.Issuer, Audience: audB}}, nil, ""},
		{"no issuers", nil, nil, "no issuers"},
		{"missing audience", []IssuerConfig{{URL: a.Issuer}}, nil, "Audience is required"},
		{"missing URL", []IssuerConfig{{Audience: audA}}, nil, "issuer URL"},
		{"HS256 listed", []IssuerConfig{{URL: a.Issuer, Audience: audA, Algorithms: []string{"RS256", "HS256"}}}, nil, `"HS256" not allowed`},
		{"HS512 listed", []IssuerConfig{{URL: a.Issuer, Audience: audA, Algorithms: []string{"HS512"}}}, nil, `"HS512" not allowed`},
		{"none listed", []IssuerConfig{{URL: a.Issuer, Audience: audA, Algorithms: []string{"none"}}}, nil, `"none" not allowed`},
		{"unknown algorithm", []IssuerConfig{{URL: a.Issuer, Audience: audA, Algorithms: []string{"rs256"}}}, nil, `"rs256" not allowed`},
		{"duplicate issuer", []IssuerConfig{{URL: a.Issuer, Audience: audA}, {URL: a.Issuer, Audience: audB}}, nil, "configured twice"},
		{"issuer unreachable: started, tokens refused until it answers", []IssuerConfig{{URL: down.URL, Audience: audA}}, nil, ""},
		{"no discovery document", []IssuerConfig{{URL: notFound.URL, Audience: audA}}, nil, "discovery"},
		{"discovery names the issuer with a trailing slash", []IssuerConfig{{URL: strings.TrimSuffix(slash.Issuer, "/"), Audience: audB}}, nil, "discovery"},
		{"discovery names the issuer without the trailing slash", []IssuerConfig{{URL: a.Issuer + "/", Audience: audA}}, nil, "discovery"},
		{"JWKS answering 502: started, tokens refused until it answers", []IssuerConfig{{URL: badKeys.Issuer, Audience: audA}}, nil, ""},
		{"JWKS empty", []IssuerConfig{{URL: noKeys.Issuer, Audience: audA}}, nil, "no key usable"},
		{"JWKS has only keys for other algorithms", []IssuerConfig{{URL: ecOnly.Issuer, Audience: audA, Algorithms: []string{"RS256"}}}, nil, "no key usable"},
		{"negative MinRefreshInterval", []IssuerConfig{{URL: a.Issuer, Audience: audA}}, func(c *Config) { c.MinRefreshInterval = -time.Second }, "MinRefreshInterval"},
		{"negative MaxKeyAge", []IssuerConfig{{URL: a.Issuer, Audience: audA}}, func(c *Config) { c.MaxKeyAge = -time.Second }, "MaxKeyAge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Issuers: tt.issuers, Logger: slog.New(slog.DiscardHandler)}
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			v, err := New(context.Background(), cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if got := v.Issuers(); !reflect.DeepEqual(got, []string{tt.issuers[0].URL}) {
					t.Fatalf("Issuers() = %v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to mention %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("configuration error %v wraps ErrUnauthenticated", err)
			}
		})
	}
}

func TestIssuersReturnsACopy(t *testing.T) {
	e := newEnv(t)
	got := e.V.Issuers()
	if want := []string{e.A.Issuer, e.B.Issuer}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Issuers() = %v, want %v", got, want)
	}
	got[0] = "https://evil.example"
	if e.V.Issuers()[0] != e.A.Issuer {
		t.Fatal("Issuers() exposes internal state")
	}
}

func TestErrorMessagesAreClientSafe(t *testing.T) {
	e := newEnv(t)
	tok := sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "aud", "secret-audience", "sub", "secret-subject"))
	_, err := e.V.Verify(context.Background(), tok)
	if err == nil || err.Error() != "access token audience mismatch" {
		t.Fatalf("err = %v", err)
	}
}

// signTyp signs claims with the named key; typ nil omits the "typ" header.
func signTyp(t testing.TB, keyName, kid string, alg jose.SignatureAlgorithm, typ any, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithHeader("kid", kid)
	if typ != nil {
		opts = opts.WithHeader(jose.HeaderType, typ)
	}
	return signOpts(t, jose.SigningKey{Algorithm: alg, Key: key(keyName)}, opts, claims)
}

// TestVerifyTokenType: only access tokens are bearer tokens. Each token is validly signed by the
// issuer, unexpired and (unless the case says otherwise) for the API audience: only its "typ"
// header and its ID-token claims differ. Each column is one IssuerConfig.TokenType.
func TestVerifyTokenType(t *testing.T) {
	type outcome struct{ jwt, atjwt, idtoken error }
	all := func(err error) outcome { return outcome{err, err, err} }
	ok := all(nil)
	tests := []struct {
		name   string
		typ    any // nil: no typ header
		change []any
		want   outcome
	}{
		{"typ at+jwt", "at+jwt", nil, ok},
		{"typ application/at+jwt", "application/at+jwt", nil, ok},
		{"typ AT+JWT (media types are case-insensitive)", "AT+JWT", nil, ok},
		{"typ at+jwt with a nonce: typed by the issuer", "at+jwt", []any{"nonce", "n-1"}, ok},
		{"typ JWT", "JWT", nil, outcome{nil, ErrTokenType, nil}},
		{"typ application/jwt", "application/jwt", nil, outcome{nil, ErrTokenType, nil}},
		{"no typ", nil, nil, outcome{nil, ErrTokenType, nil}},
		{"typ JWT with a nonce", "JWT", []any{"nonce", "n-1"}, outcome{ErrIDToken, ErrIDToken, nil}},
		{"no typ with a nonce", nil, []any{"nonce", "n-1"}, outcome{ErrIDToken, ErrIDToken, nil}},
		{"no typ, nonce null (absent)", nil, []any{"nonce", json.RawMessage("null")}, outcome{nil, ErrTokenType, nil}},
		{"no typ with at_hash", nil, []any{"at_hash", "x4g6MQ0"}, outcome{ErrIDToken, ErrIDToken, nil}},
		{"typ JWT with c_hash", "JWT", []any{"c_hash", "x4g6MQ0"}, outcome{ErrIDToken, ErrIDToken, nil}},
		{"no typ with s_hash", nil, []any{"s_hash", "x4g6MQ0"}, outcome{ErrIDToken, ErrIDToken, nil}},
		{"an ID token (aud the client, nonce, at_hash): named, not an audience mismatch", "JWT",
			[]any{"aud", "spa-client-id", "azp", "spa-client-id", "nonce", "n-1", "at_hash", "x4g6MQ0"},
			outcome{ErrIDToken, ErrIDToken, ErrAudienceMismatch}},
		{"a Dex-shaped token for another client (at_hash, no typ)", nil,
			[]any{"aud", "spa-client-id", "at_hash", "x4g6MQ0"}, outcome{ErrIDToken, ErrIDToken, ErrAudienceMismatch}},
		{"an expired ID token is named an ID token", nil,
			[]any{"at_hash", "x4g6MQ0", "exp", 1000, "iat", 900}, outcome{ErrIDToken, ErrIDToken, ErrTokenExpired}},
		{"untyped, for another audience", nil, []any{"aud", "spa-client-id"}, outcome{ErrAudienceMismatch, ErrTokenType, ErrAudienceMismatch}},
		{"typ at+jwt, for another audience", "at+jwt", []any{"aud", "spa-client-id"}, all(ErrAudienceMismatch)},
		{"typ logout+jwt (a back-channel logout token)", "logout+jwt", []any{"events", map[string]any{}}, all(ErrTokenType)},
		{"typ id_token+jwt", "id_token+jwt", nil, all(ErrTokenType)},
		{"typ not a string", 42, nil, all(ErrMalformedToken)},
	}
	for _, tokenType := range []string{"", TokenTypeJWT, TokenTypeATJWT, TokenTypeIDToken} {
		e := newEnv(t, func(c *Config) { c.Issuers[0].TokenType = tokenType })
		principalA := &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"owner", "admin"}}
		for _, tt := range tests {
			t.Run(cmp.Or(tokenType, "default")+"/"+tt.name, func(t *testing.T) {
				wantErr := tt.want.jwt
				switch tokenType {
				case TokenTypeATJWT:
					wantErr = tt.want.atjwt
				case TokenTypeIDToken:
					wantErr = tt.want.idtoken
				}
				var want *Principal
				if wantErr == nil {
					want = principalA
				}
				tok := signTyp(t, "a-rsa", "a-rsa", jose.RS256, tt.typ, with(e.claimsA(), tt.change...))
				got, err := e.V.Verify(context.Background(), tok)
				checkOutcome(t, got, err, want, wantErr)
			})
		}
	}
}

func TestNewRefusesUnknownTokenType(t *testing.T) {
	a := newIdP(t, false, pubKey{"a-rsa", "RS256", "a-rsa"})
	for _, tt := range []string{"JWT", "at+JWT", "id", "none"} {
		_, err := New(context.Background(), Config{Issuers: []IssuerConfig{{URL: a.Issuer, Audience: audA, TokenType: tt}}})
		if err == nil || !strings.Contains(err.Error(), "token type") || errors.Is(err, ErrUnauthenticated) {
			t.Errorf("TokenType %q: New error = %v", tt, err)
		}
	}
}

func TestIDTokenMessage(t *testing.T) {
	if got := ErrIDToken.Error(); got != "an ID token is not an access token" {
		t.Fatalf("ErrIDToken says %q", got)
	}
}

// TestProviderTokenShapes: the access and ID tokens of each supported provider, as they issue
// them (headers and claims), under the token type docs/security.md tells to configure for it.
func TestProviderTokenShapes(t *testing.T) {
	const client = "0oa1clientid"
	tests := []struct {
		name, tokenType string
		typ             any
		change          []any
		wantErr         error
	}{
		// Okta custom authorization server: no typ; aud the authorization server's audience.
		{"Okta access token", TokenTypeJWT, nil, []any{"ver", 1, "jti", "AT.x1", "cid", client, "uid", "00u1",
			"scp", []string{"openid", "email"}, "auth_time", 1, "email", nil, "email_verified", nil}, nil},
		{"Okta ID token", TokenTypeJWT, nil, []any{"ver", 1, "jti", "ID.x1", "aud", client, "amr", []string{"pwd"},
			"idp", "00o1", "nonce", "n-1", "at_hash", "x4g6MQ0", "auth_time", 1}, ErrIDToken},
		// Auth0, default ("Auth0") token profile: typ JWT; aud [API, /userinfo].
		{"Auth0 access token (Auth0 profile)", TokenTypeJWT, "JWT", []any{"aud", []string{audA, "https://tenant.auth0.com/userinfo"},
			"azp", client, "scope", "openid email", "permissions", []string{"read:devices"}}, nil},
		{"Auth0 ID token", TokenTypeJWT, "JWT", []any{"aud", client, "nonce", "n-1", "sid", "s-1"}, ErrIDToken},
		// Auth0, RFC 9068 token profile: typ at+jwt.
		{"Auth0 access token (RFC 9068 profile)", TokenTypeATJWT, "at+jwt", []any{"client_id", client, "jti", "j-1",
			"scope", "openid email"}, nil},
		{"Auth0 ID token at an RFC 9068 issuer", TokenTypeATJWT, "JWT", []any{"aud", client, "nonce", "n-1", "sid", "s-1"}, ErrIDToken},
		{"Auth0 ID token without nonce at an RFC 9068 issuer", TokenTypeATJWT, "JWT", []any{"aud", client, "sid", "s-1"}, ErrTokenType},
		// Dex: access and ID tokens alike (no typ, at_hash, aud the client id).
		{"Dex access token under the default type", TokenTypeJWT, nil, []any{"at_hash", "x4g6MQ0"}, ErrIDToken},
		{"Dex access token under id-token", TokenTypeIDToken, nil, []any{"at_hash", "x4g6MQ0"}, nil},
		{"Dex token for another client under id-token", TokenTypeIDToken, nil, []any{"aud", client, "at_hash", "x4g6MQ0"}, ErrAudienceMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Issuers[0].TokenType = tt.tokenType })
			tok := signTyp(t, "a-rsa", "a-rsa", jose.RS256, tt.typ, with(e.claimsA(), tt.change...))
			got, err := e.V.Verify(context.Background(), tok)
			if tt.wantErr != nil {
				checkOutcome(t, got, err, nil, tt.wantErr)
				return
			}
			if err != nil || got.Subject != "user-a" {
				t.Fatalf("Verify = %+v, %v", got, err)
			}
		})
	}
}
