package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// MaxTokenSize is the largest raw access token Verify accepts; longer ones are ErrMalformedToken.
const MaxTokenSize = 16 << 10

const (
	defaultRolesClaim         = "groups"
	defaultClockSkew          = time.Minute
	defaultMinRefreshInterval = time.Minute
	defaultMaxKeyAge          = 5 * time.Minute
	defaultHTTPTimeout        = 10 * time.Second
)

var defaultAlgorithms = []string{gooidc.RS256, gooidc.ES256}

// asymmetricAlgs are the only algorithms an issuer may pin. HS* (a shared secret the gateway
// must never hold; the classic "public key as HMAC secret" attack) and "none" are not among them.
var asymmetricAlgs = []string{
	gooidc.RS256, gooidc.RS384, gooidc.RS512,
	gooidc.PS256, gooidc.PS384, gooidc.PS512,
	gooidc.ES256, gooidc.ES384, gooidc.ES512,
	gooidc.EdDSA,
}

// IssuerConfig is one trusted identity provider.
type IssuerConfig struct {
	// URL is the exact issuer, as in the tokens' "iss" and the discovery document (Auth0's has a
	// trailing slash: it is kept and matched exactly).
	URL string
	// Audience is the API audience the access tokens must carry in "aud". Required.
	Audience string
	// RolesClaim names the claim holding the roles: "groups" by default (Okta, Dex); Auth0 uses
	// a namespaced claim such as "https://gpugate.dev/roles". The value may be a list of strings
	// or a single string; any other type yields no roles.
	RolesClaim string
	// Algorithms pins the accepted signature algorithms; default ["RS256", "ES256"]. New
	// rejects HS*, "none" and unknown names.
	Algorithms []string
	// TokenType says how the issuer's access tokens differ from its ID tokens, which it signs
	// with the same keys: TokenTypeJWT (the default), TokenTypeATJWT or TokenTypeIDToken. New
	// rejects any other value.
	TokenType string
}

// The token types an issuer may be configured with (IssuerConfig.TokenType). An ID token tells a
// client who signed in; it is no credential for the API: an API that took one would let every
// client the user signs in to (and whoever that client leaks its ID tokens to) call the API as
// the user. See docs/security.md.
const (
	// TokenTypeJWT is for issuers whose access tokens are JWTs without RFC 9068's "typ" (Okta,
	// Auth0's default token profile): the "typ" header must be absent, "JWT" or "at+jwt"; a token
	// carrying a claim only ID tokens carry (nonce, at_hash, c_hash, s_hash) and not typed
	// "at+jwt" is refused as an ID token; "aud" must hold the API audience.
	TokenTypeJWT = "jwt"
	// TokenTypeATJWT is for issuers that type every access token per RFC 9068 (Auth0's RFC 9068
	// profile, gpugate's dev issuer): the "typ" header must be "at+jwt" or "application/at+jwt"
	// (RFC 9068 §4); "aud" must hold the API audience.
	TokenTypeATJWT = "at+jwt"
	// TokenTypeIDToken is for issuers that issue no access token distinct from their ID tokens:
	// Dex mints its access tokens with its ID-token code (same claims, at_hash of a random value,
	// the sign-in's nonce, the client id in "aud"), so no rule on claims tells them apart. Tokens
	// are accepted on "aud" alone (which must hold the API audience), ID tokens included: the
	// audience must name a client that only gpugate's own front ends sign in to. The "typ"
	// header is checked as for TokenTypeJWT. New logs a warning for such an issuer.
	TokenTypeIDToken = "id-token"
)

// idTokenClaims are claims OpenID Connect defines for ID tokens only (Core §2, §3.3.2.11; FAPI's
// s_hash): an access token has no reason to carry them.
var idTokenClaims = []string{"nonce", "at_hash", "c_hash", "s_hash"}

// Config configures New.
type Config struct {
	Issuers []IssuerConfig
	// HTTPClient is used for discovery and JWKS fetches; default &http.Client{Timeout: 10s}.
	HTTPClient *http.Client
	// ClockSkew is the leeway on exp, nbf and iat; zero means 1 minute, negative means none.
	// (It replaces go-oidc's own checks: none on exp, a fixed 5 minutes on nbf.)
	ClockSkew time.Duration
	// MinRefreshInterval is the least time between two JWKS fetches of one issuer triggered by
	// unknown key ids; zero means 1 minute. Negative is a configuration error.
	MinRefreshInterval time.Duration
	// MaxKeyAge is how long a fetched JWKS is used before the next request of the issuer
	// refetches it (at most once per MinRefreshInterval; the request waits at most a second for
	// it). It bounds how long a key the issuer withdrew keeps verifying when no token with an
	// unknown kid triggers a refetch first: zero means 5 minutes. Negative is a configuration
	// error. While the issuer is unreachable, the cached keys keep verifying whatever their age.
	MaxKeyAge time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Logger receives JWKS refresh events; default slog.Default().
	Logger *slog.Logger
}

// Verifier verifies access tokens of the configured issuers. It is safe for concurrent use.
type Verifier struct {
	urls  []string // configuration order
	byURL map[string]*issuer
	skew  time.Duration
	now   func() time.Time
}

type issuer struct {
	url        string
	audience   string
	rolesClaim string
	algs       []jose.SignatureAlgorithm
	tokenType  string
	keys       *keySet
	verifier   *gooidc.IDTokenVerifier
}

// New runs OIDC discovery for every issuer once, fetches each JWKS and builds the verifiers. It
// returns an error (not wrapping ErrUnauthenticated) if the configuration is invalid (no issuers,
// missing URL or Audience, duplicate issuers, an HS*/"none"/unknown algorithm, an unknown
// TokenType, a negative MinRefreshInterval or MaxKeyAge), or if an issuer answers in a way that
// shows a misconfiguration: its discovery document is missing (404...), not JSON or names
// another issuer, or its JWKS has no key usable with the pinned algorithms. An issuer that cannot
// be reached (connection refused, timeout, HTTP 5xx or 429) is no error: New logs it and returns a
// Verifier that refuses that issuer's tokens with ErrProviderUnavailable and retries discovery
// (at most every 5 seconds, on demand) until it answers.
func New(ctx context.Context, c Config) (*Verifier, error) {
	if len(c.Issuers) == 0 {
		return nil, errors.New("oidc: no issuers configured")
	}
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	skew := c.ClockSkew
	switch {
	case skew == 0:
		skew = defaultClockSkew
	case skew < 0:
		skew = 0
	}
	minRefresh := c.MinRefreshInterval
	switch {
	case minRefresh == 0:
		minRefresh = defaultMinRefreshInterval
	case minRefresh < 0:
		return nil, fmt.Errorf("oidc: negative MinRefreshInterval %v", minRefresh)
	}
	maxAge := c.MaxKeyAge
	switch {
	case maxAge == 0:
		maxAge = defaultMaxKeyAge
	case maxAge < 0:
		return nil, fmt.Errorf("oidc: negative MaxKeyAge %v", maxAge)
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}

	v := &Verifier{byURL: make(map[string]*issuer, len(c.Issuers)), skew: skew, now: now}
	for _, ic := range c.Issuers {
		is, err := newIssuer(ctx, ic, client, minRefresh, maxAge, now, log)
		if err != nil {
			return nil, err
		}
		if _, dup := v.byURL[is.url]; dup {
			return nil, fmt.Errorf("oidc: issuer %q configured twice", is.url)
		}
		v.byURL[is.url] = is
		v.urls = append(v.urls, is.url)
	}
	return v, nil
}

func newIssuer(ctx context.Context, ic IssuerConfig, client *http.Client, minRefresh, maxAge time.Duration, now func() time.Time, log *slog.Logger) (*issuer, error) {
	if err := checkHTTPURL(ic.URL); err != nil {
		return nil, fmt.Errorf("oidc: issuer URL: %w", err)
	}
	if ic.Audience == "" {
		return nil, fmt.Errorf("oidc: issuer %q: Audience is required", ic.URL)
	}
	names := ic.Algorithms
	if len(names) == 0 {
		names = defaultAlgorithms
	}
	var algs []jose.SignatureAlgorithm
	for _, a := range names {
		if !slices.Contains(asymmetricAlgs, a) {
			return nil, fmt.Errorf("oidc: issuer %q: signing algorithm %q not allowed (only %v)", ic.URL, a, asymmetricAlgs)
		}
		if !algAllowed(algs, jose.SignatureAlgorithm(a)) {
			algs = append(algs, jose.SignatureAlgorithm(a))
		}
	}
	rolesClaim := ic.RolesClaim
	if rolesClaim == "" {
		rolesClaim = defaultRolesClaim
	}
	tokenType := ic.TokenType
	switch tokenType {
	case "":
		tokenType = TokenTypeJWT
	case TokenTypeJWT, TokenTypeATJWT:
	case TokenTypeIDToken:
		log.Warn("oidc: issuer's ID tokens are accepted as API bearer tokens (token type id-token): its audience must be a client dedicated to gpugate",
			"issuer", ic.URL, "audience", ic.Audience)
	default:
		return nil, fmt.Errorf("oidc: issuer %q: token type %q unknown (want %q, %q or %q)",
			ic.URL, tokenType, TokenTypeJWT, TokenTypeATJWT, TokenTypeIDToken)
	}

	ks := &keySet{
		issuer:     ic.URL,
		client:     client,
		algs:       algs,
		minRefresh: minRefresh,
		maxAge:     maxAge,
		now:        now,
		log:        log,
		discover:   func(ctx context.Context) (string, error) { return discover(ctx, client, ic.URL) },
	}
	if err := ks.load(ctx); err != nil {
		var ue *unavailableError
		if !errors.As(err, &ue) {
			return nil, fmt.Errorf("oidc: issuer %q: %w", ic.URL, err) // misconfiguration: fail fast
		}
		// Unreachable now (stopped, 5xx, timeout): start anyway. Anonymous and device-signed
		// requests do not need the issuer; its tokens are refused as "identity provider
		// unavailable" (503, never accepted) until a later attempt reaches it.
		log.Error("oidc: identity provider unreachable at start; its tokens are refused until it answers (retried on demand)",
			"issuer", ic.URL, "err", err)
	}
	supported := make([]string, len(algs))
	for i, a := range algs {
		supported[i] = string(a)
	}
	return &issuer{
		url:        ic.URL,
		audience:   ic.Audience,
		rolesClaim: rolesClaim,
		algs:       algs,
		tokenType:  tokenType,
		keys:       ks,
		verifier: gooidc.NewVerifier(ic.URL, ks, &gooidc.Config{
			ClientID:             ic.Audience, // never SkipClientIDCheck
			SupportedSigningAlgs: supported,
			SkipExpiryCheck:      true, // checked by Verify with the configured skew
			Now:                  now,
		}),
	}, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// Issuers returns the trusted issuer URLs in configuration order (a fresh slice).
func (v *Verifier) Issuers() []string {
	return slices.Clone(v.urls)
}

// Verify checks a raw access token (a compact JWS) and returns its principal. On failure it
// returns nil and one of the Err* sentinels of this package, all wrapping ErrUnauthenticated:
// ErrMalformedToken (not a JWT, larger than MaxTokenSize, no exp or sub, bad claim or header
// types), ErrIssuerNotTrusted, ErrAlgorithmNotAllowed, ErrUnknownSigningKey, ErrSignatureInvalid,
// ErrIDToken, ErrTokenType, ErrAudienceMismatch, ErrTokenExpired, ErrTokenNotYetValid or
// ErrProviderUnavailable. The token type is checked right after the signature, before the
// audience, so that an ID token is named as such.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Principal, error) {
	if len(raw) == 0 || len(raw) > MaxTokenSize {
		return nil, ErrMalformedToken
	}
	alg, iss, err := peek(raw)
	if err != nil {
		return nil, err
	}
	is := v.byURL[iss]
	if is == nil {
		return nil, ErrIssuerNotTrusted
	}
	if !algAllowed(is.algs, jose.SignatureAlgorithm(alg)) {
		return nil, ErrAlgorithmNotAllowed
	}
	jws, err := jose.ParseSignedCompact(raw, is.algs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, ErrMalformedToken
	}

	st := &sigState{raw: raw, jws: jws}
	tok, err := is.verifier.Verify(context.WithValue(ctx, sigStateKey{}, st), raw)
	if err != nil {
		return nil, classify(is, st, err)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(st.payload, &claims); err != nil {
		return nil, ErrMalformedToken
	}
	if err := is.checkTokenType(jws, claims); err != nil {
		return nil, err
	}
	return v.principal(is, tok, claims)
}

// peek reads the unverified "alg" header and "iss" claim, only to pick the issuer and fail fast.
// Nothing else is trusted before the signature is verified.
func peek(raw string) (alg, iss string, err error) {
	h, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return "", "", ErrMalformedToken
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return "", "", ErrMalformedToken
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if decodeSegment(h, &header) != nil || decodeSegment(p, &claims) != nil {
		return "", "", ErrMalformedToken
	}
	return header.Alg, claims.Iss, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// classify turns a go-oidc error (which wraps key-set errors with %v) into a sentinel.
func classify(is *issuer, st *sigState, err error) error {
	if st.err != nil {
		return st.err // the key set's own sentinel
	}
	if st.payload == nil {
		return ErrMalformedToken // go-oidc refused the JWS before asking for the signature
	}
	// The signature is valid: go-oidc refused the claims (issuer, audience or their types). An ID
	// token (whose audience is a client's) is named as such rather than as an audience mismatch.
	var claims map[string]json.RawMessage
	if json.Unmarshal(st.payload, &claims) != nil {
		return ErrMalformedToken
	}
	if err := is.checkTokenType(st.jws, claims); err != nil {
		return err
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(st.payload, &c) != nil {
		return ErrMalformedToken
	}
	if c.Iss != is.url {
		return ErrIssuerNotTrusted
	}
	if aud, ok := audience(c.Aud); ok && !slices.Contains(aud, is.audience) {
		return ErrAudienceMismatch
	}
	return ErrMalformedToken
}

// checkTokenType applies the issuer's TokenType to a token whose signature verified (so its
// protected header and claims are the issuer's). It returns nil, ErrTokenType, ErrIDToken or
// ErrMalformedToken (a "typ" that is not a string).
func (is *issuer) checkTokenType(jws *jose.JSONWebSignature, claims map[string]json.RawMessage) error {
	typ := ""
	if raw, ok := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType]; ok && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return ErrMalformedToken
		}
		typ = s
	}
	carriesIDClaims := false
	for _, name := range idTokenClaims {
		if v, ok := claims[name]; ok && string(v) != "null" {
			carriesIDClaims = true
		}
	}

	// Media types compare case-insensitively (RFC 7515 §4.1.9); "application/" may be omitted.
	mt := strings.TrimPrefix(strings.ToLower(typ), "application/")
	switch {
	case mt == "at+jwt":
		return nil // typed by its issuer as an access token (RFC 9068)
	case carriesIDClaims && is.tokenType != TokenTypeIDToken:
		return ErrIDToken
	case is.tokenType == TokenTypeATJWT:
		// The issuer types its access tokens; what else it signs with the same keys (its ID
		// tokens, "JWT" or untyped; logout tokens...) is not one.
		return ErrTokenType
	case mt != "" && mt != "jwt":
		return ErrTokenType // e.g. "logout+jwt", "secevent+jwt": never an access token
	}
	return nil
}

// audience decodes "aud", a string or a list of strings; a missing aud is an empty list.
func audience(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many, true
	}
	return nil, false
}

// principal checks the time claims with the configured skew and builds the Principal from the
// verified claims.
func (v *Verifier) principal(is *issuer, tok *gooidc.IDToken, claims map[string]json.RawMessage) (*Principal, error) {
	now := v.now()
	exp, ok, err := numericDate(claims["exp"])
	if err != nil || !ok {
		return nil, ErrMalformedToken // an access token without expiry is never accepted
	}
	if !now.Before(exp.Add(v.skew)) {
		return nil, ErrTokenExpired
	}
	for _, name := range [...]string{"nbf", "iat"} {
		t, ok, err := numericDate(claims[name])
		if err != nil {
			return nil, ErrMalformedToken
		}
		if ok && now.Add(v.skew).Before(t) {
			return nil, ErrTokenNotYetValid
		}
	}
	if tok.Subject == "" {
		return nil, ErrMalformedToken
	}
	p := &Principal{
		Issuer:  tok.Issuer,
		Subject: tok.Subject,
		Roles:   roles(claims[is.rolesClaim]),
	}
	_ = json.Unmarshal(claims["email"], &p.Email) // a non-string email is no email
	p.EmailVerified = truthy(claims["email_verified"])
	return p, nil
}

// maxUnix clamps NumericDates so that time arithmetic cannot overflow (year ~36800).
const maxUnix = 1 << 40

// numericDate decodes a JWT NumericDate (a JSON number, possibly fractional). ok is false when
// the claim is absent or null; err is set for any other non-number.
func numericDate(raw json.RawMessage) (t time.Time, ok bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return time.Time{}, false, err
	}
	f = min(max(f, 0), maxUnix)
	return time.Unix(int64(f), 0), true, nil
}

// roles accepts a list of strings (other elements are ignored) or a single string.
func roles(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil
		}
		return []string{one}
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) != nil {
		return nil
	}
	var out []string
	for _, m := range many {
		var r string
		if json.Unmarshal(m, &r) == nil && r != "" {
			out = append(out, r)
		}
	}
	return out
}

// truthy accepts true and "true" (some IdPs send email_verified as a string).
func truthy(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && strings.EqualFold(s, "true")
}
