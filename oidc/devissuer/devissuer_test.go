package devissuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	gwoidc "github.com/gpugate/gpugate/oidc"
)

const (
	testAudience = "gpugate-api"
	testClientID = "gpugate-dev"
	testRedirect = "http://127.0.0.1/callback"
)

func testOptions() Options {
	return Options{
		Addr: "127.0.0.1:0",
		Users: []User{
			{Username: "alice", Subject: "dev|alice", Email: "alice@example.com", Name: "Alice Liddell"},
			{Username: "bob", Subject: "dev|bob", Email: "bob@example.com", Name: "Bob Builder", Roles: []string{}},
			{Username: "admin", Subject: "dev|admin", Email: "admin@example.com", Name: "Ada Admin", Roles: []string{"ADMIN"}},
		},
		Audience:     testAudience,
		ClientID:     testClientID,
		RedirectURIs: []string{testRedirect},
	}
}

func startTest(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Start(ctx, testOptions())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

type accessClaims struct {
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name"`
	Groups        []string `json:"groups"`
	JTI           string   `json:"jti"`
	ClientID      string   `json:"client_id"`
}

// verifyLikeGateway verifies tok exactly as the gateway does: go-oidc,
// discovery + JWKS, ClientID = API audience.
func verifyLikeGateway(t *testing.T, ctx context.Context, issuer, tok string) (*oidc.IDToken, accessClaims, map[string]any) {
	t.Helper()
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	v := p.Verifier(&oidc.Config{ClientID: testAudience, SupportedSigningAlgs: []string{"RS256"}})
	idt, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var c accessClaims
	var raw map[string]any
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	if err := idt.Claims(&raw); err != nil {
		t.Fatal(err)
	}
	return idt, c, raw
}

func TestFetchTokenVerifiesWithGoOIDC(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	if !strings.HasPrefix(s.Issuer(), "http://127.0.0.1:") {
		t.Fatalf("issuer = %q", s.Issuer())
	}

	tok, err := FetchToken(ctx, s.Issuer(), testClientID, testRedirect, "alice")
	if err != nil {
		t.Fatalf("FetchToken: %v", err)
	}
	idt, c, raw := verifyLikeGateway(t, ctx, s.Issuer(), tok)
	if idt.Issuer != s.Issuer() || idt.Subject != "dev|alice" {
		t.Errorf("iss/sub = %q/%q", idt.Issuer, idt.Subject)
	}
	if !slices.Equal(idt.Audience, []string{testAudience}) {
		t.Errorf("aud = %v, want [%s]", idt.Audience, testAudience)
	}
	if c.Email != "alice@example.com" || !c.EmailVerified || c.Name != "Alice Liddell" {
		t.Errorf("claims = %+v", c)
	}
	if c.JTI == "" || c.ClientID != testClientID {
		t.Errorf("jti/client_id = %q/%q", c.JTI, c.ClientID)
	}
	if g, ok := raw["groups"].([]any); !ok || len(g) != 0 {
		t.Errorf("alice groups = %#v, want empty array", raw["groups"])
	}
	if ttl := time.Until(idt.Expiry); ttl < 59*time.Minute || ttl > 61*time.Minute {
		t.Errorf("exp in %v, want ~1h", ttl)
	}
	if _, ok := raw["iat"]; !ok {
		t.Error("no iat")
	}
	if alg := jwtHeader(t, tok)["alg"]; alg != "RS256" {
		t.Errorf("alg = %v", alg)
	}

	tok, err = FetchToken(ctx, s.Issuer(), testClientID, testRedirect, "admin")
	if err != nil {
		t.Fatalf("FetchToken admin: %v", err)
	}
	idt, c, _ = verifyLikeGateway(t, ctx, s.Issuer(), tok)
	if idt.Subject != "dev|admin" || !slices.Equal(c.Groups, []string{"ADMIN"}) {
		t.Errorf("admin sub/groups = %q/%v", idt.Subject, c.Groups)
	}

	// A verifier for some other audience must refuse the token.
	p, err := oidc.NewProvider(ctx, s.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verifier(&oidc.Config{ClientID: "other-api"}).Verify(ctx, tok); err == nil {
		t.Error("token accepted for another audience")
	}
}

func TestUserinfo(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	tok, err := FetchToken(ctx, s.Issuer(), testClientID, testRedirect, "admin")
	if err != nil {
		t.Fatal(err)
	}
	p, err := oidc.NewProvider(ctx, s.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	ep := p.UserInfoEndpoint()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ep, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ui map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&ui); err != nil || resp.StatusCode != 200 {
		t.Fatalf("userinfo: %s %v", resp.Status, err)
	}
	if ui["sub"] != "dev|admin" || ui["email"] != "admin@example.com" || ui["preferred_username"] != "admin" {
		t.Errorf("userinfo = %v", ui)
	}
	if g, _ := ui["groups"].([]any); len(g) != 1 || g[0] != "ADMIN" {
		t.Errorf("userinfo groups = %v", ui["groups"])
	}

	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, ep, nil)
	req.Header.Set("Authorization", "Bearer "+tok+"x")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Error("userinfo accepted a tampered token")
	}
}

func TestUnknownUser(t *testing.T) {
	s := startTest(t)
	_, err := FetchToken(t.Context(), s.Issuer(), testClientID, testRedirect, "mallory")
	if err == nil || !strings.Contains(err.Error(), "Unknown user") {
		t.Fatalf("err = %v, want unknown user error", err)
	}
}

func TestRedirectURIs(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	for _, bad := range []string{
		"http://127.0.0.1/other",
		"http://127.0.0.1:8080/callback/extra",
		"https://evil.example/callback",
		"http://evil.example/callback",
	} {
		if _, err := FetchToken(ctx, s.Issuer(), testClientID, bad, "alice"); err == nil {
			t.Errorf("redirect %q accepted", bad)
		} else if !strings.Contains(err.Error(), "redirect_uri") {
			t.Errorf("redirect %q: err = %v", bad, err)
		}
	}
	// A registered loopback redirect URI allows any port (RFC 8252 §7.3).
	if _, err := FetchToken(ctx, s.Issuer(), testClientID, "http://127.0.0.1:43210/callback", "bob"); err != nil {
		t.Errorf("loopback redirect with port: %v", err)
	}
	// Unknown client.
	if _, err := FetchToken(ctx, s.Issuer(), "someone-else", testRedirect, "alice"); err == nil {
		t.Error("unknown client accepted")
	}
}

func TestPKCERequired(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	f, err := newFlow(ctx, s.Issuer(), testClientID, testRedirect)
	if err != nil {
		t.Fatal(err)
	}

	// No code_challenge: refused at /authorize.
	if _, err := f.authorize(ctx, "alice", ""); err == nil || !strings.Contains(err.Error(), "PKCE") {
		t.Errorf("authorize without PKCE: err = %v", err)
	}

	verifier := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	code, err := f.authorize(ctx, "alice", s256(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.exchange(ctx, code, ""); err == nil {
		t.Error("exchange without code_verifier succeeded")
	}
	if _, err := f.exchange(ctx, code, base64.RawURLEncoding.EncodeToString(randomBytes(32))); err == nil {
		t.Error("exchange with wrong code_verifier succeeded")
	}
	// Redirect URI must match the one of the authorization request.
	other := *f
	other.redirectURI, _ = url.Parse("http://127.0.0.1:9999/callback")
	if _, err := other.exchange(ctx, code, verifier); err == nil {
		t.Error("exchange with different redirect_uri succeeded")
	}
	tok, err := f.exchange(ctx, code, verifier)
	if err != nil {
		t.Fatalf("exchange with the right verifier: %v", err)
	}
	if tok.Access == "" || tok.ID == "" {
		t.Fatalf("tokens = %+v", tok)
	}
	// Codes are single use.
	if _, err := f.exchange(ctx, code, verifier); err == nil {
		t.Error("code redeemed twice")
	}
}

func TestLoginPage(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	get := func(target string, host string) (*http.Response, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// Without a pending auth request the login page is an error page.
	if resp, _ := get(s.Issuer()+"/login?authRequestID=nope", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("login without request: %s", resp.Status)
	}
	// A pending one lists the users.
	f, err := newFlow(ctx, s.Issuer(), testClientID, testRedirect)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"response_type": {"code"}, "client_id": {testClientID}, "redirect_uri": {testRedirect},
		"scope": {"openid"}, "code_challenge": {s256("v")}, "code_challenge_method": {"S256"}}
	loc, err := f.redirect(ctx, http.MethodGet, f.authzURL+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(loc.String(), "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("login page: %s %v", resp.Status, resp.Header)
	}
	for _, u := range []string{"alice", "bob", "admin", "ADMIN"} {
		if !strings.Contains(body, u) {
			t.Errorf("login page lacks %q", u)
		}
	}
	// DNS rebinding: a non-loopback Host is refused.
	if resp, _ := get(s.Issuer()+"/.well-known/openid-configuration", "evil.example"); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %s", resp.Status)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "127.0.0.1"} {
		o := testOptions()
		o.Addr = addr
		if s, err := Start(t.Context(), o); err == nil {
			s.Close(t.Context())
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
	o := testOptions()
	o.Addr = "localhost:0"
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatalf("Start(localhost:0): %v", err)
	}
	defer s.Close(t.Context())
	if !strings.HasPrefix(s.Issuer(), "http://127.0.0.1:") && !strings.HasPrefix(s.Issuer(), "http://[::1]:") {
		t.Errorf("localhost issuer = %q", s.Issuer())
	}

	bad := []func(*Options){
		func(o *Options) { o.Audience = o.ClientID },
		func(o *Options) { o.RedirectURIs = []string{"http://evil.example/cb"} },
		func(o *Options) { o.RolesClaim = "sub" },
		func(o *Options) { o.Users = append(o.Users, User{Username: "alice", Subject: "x"}) },
	}
	for i, mod := range bad {
		o := testOptions()
		mod(&o)
		if _, err := o.normalize(); err == nil {
			t.Errorf("bad options %d accepted", i)
		}
	}
}

func jwtHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(h, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAccessAndIDTokensAreDistinct: the access token is an RFC 9068 access token for the API;
// the ID token is for the client alone, so no API verifier takes it for an access token.
func TestAccessAndIDTokensAreDistinct(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	tok, err := FetchTokens(ctx, s.Issuer(), testClientID, testRedirect, "admin")
	if err != nil {
		t.Fatalf("FetchTokens: %v", err)
	}

	if typ := jwtHeader(t, tok.Access)["typ"]; typ != "at+jwt" {
		t.Errorf("access token typ = %v, want at+jwt", typ)
	}
	at := jwtClaims(t, tok.Access)
	if aud, _ := at["aud"].([]any); len(aud) != 1 || aud[0] != testAudience {
		t.Errorf("access token aud = %v, want [%s]", at["aud"], testAudience)
	}
	// RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti; scope as requested.
	for _, c := range []string{"iss", "exp", "sub", "client_id", "iat", "jti", "auth_time"} {
		if _, ok := at[c]; !ok {
			t.Errorf("access token lacks %s: %v", c, at)
		}
	}
	if at["scope"] != "openid profile email" {
		t.Errorf("access token scope = %v", at["scope"])
	}
	if g, _ := at["groups"].([]any); len(g) != 1 || g[0] != "ADMIN" {
		t.Errorf("access token groups = %v", at["groups"])
	}
	for _, c := range []string{"nonce", "at_hash", "c_hash"} {
		if _, ok := at[c]; ok {
			t.Errorf("access token carries the ID token claim %s", c)
		}
	}

	if typ := jwtHeader(t, tok.ID)["typ"]; typ == "at+jwt" {
		t.Error("ID token typed at+jwt")
	}
	id := jwtClaims(t, tok.ID)
	if aud, _ := id["aud"].([]any); len(aud) != 1 || aud[0] != testClientID {
		t.Errorf("ID token aud = %v, want [%s] only", id["aud"], testClientID)
	}
	if id["at_hash"] == nil || id["c_hash"] == nil || id["sub"] != "dev|admin" {
		t.Errorf("ID token claims = %v", id)
	}
	// The ID token is a valid one, for the client.
	p, err := oidc.NewProvider(ctx, s.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: testClientID}).Verify(ctx, tok.ID)
	if err != nil {
		t.Fatalf("the ID token does not verify for the client: %v", err)
	}
	if err := idt.VerifyAccessToken(tok.Access); err != nil {
		t.Errorf("at_hash does not match the access token: %v", err)
	}
	// ...and not for the API.
	if _, err := p.Verifier(&oidc.Config{ClientID: testAudience}).Verify(ctx, tok.ID); err == nil {
		t.Error("the ID token verifies with the API audience")
	}
}

// TestGatewayVerifierRefusesTheIDToken runs the gateway's own verifier against the dev issuer
// (discovery and JWKS over HTTP), with the token type gpugate configures for the dev issuer and
// the default one.
func TestGatewayVerifierRefusesTheIDToken(t *testing.T) {
	s := startTest(t)
	ctx := t.Context()
	tok, err := FetchTokens(ctx, s.Issuer(), testClientID, testRedirect, "alice")
	if err != nil {
		t.Fatalf("FetchTokens: %v", err)
	}
	for _, tokenType := range []string{gwoidc.TokenTypeATJWT, gwoidc.TokenTypeJWT} {
		t.Run(tokenType, func(t *testing.T) {
			v, err := gwoidc.New(ctx, gwoidc.Config{Issuers: []gwoidc.IssuerConfig{{
				URL: s.Issuer(), Audience: testAudience, TokenType: tokenType,
			}}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := v.Verify(ctx, tok.Access)
			if err != nil || p.Subject != "dev|alice" || p.Email != "alice@example.com" {
				t.Fatalf("access token: %+v, %v", p, err)
			}
			p, err = v.Verify(ctx, tok.ID)
			if err != gwoidc.ErrIDToken { //nolint:errorlint // the exact sentinel is the contract
				t.Fatalf("ID token: %+v, %v; want %v", p, err, gwoidc.ErrIDToken)
			}
		})
	}
	// Even an issuer configured to have its ID tokens taken (Dex's case) does not take the dev
	// issuer's: they are not for the API audience.
	v, err := gwoidc.New(ctx, gwoidc.Config{Issuers: []gwoidc.IssuerConfig{{
		URL: s.Issuer(), Audience: testAudience, TokenType: gwoidc.TokenTypeIDToken,
	}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(ctx, tok.ID); err != gwoidc.ErrAudienceMismatch { //nolint:errorlint
		t.Fatalf("ID token at an id-token issuer: %+v, %v; want %v", p, err, gwoidc.ErrAudienceMismatch)
	}
}
