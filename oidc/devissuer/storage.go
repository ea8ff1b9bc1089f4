package devissuer

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const (
	// authRequestTTL bounds how long a started sign-in (and its code) stays usable.
	authRequestTTL = 10 * time.Minute
	// codeTTL bounds the time between issuing an authorization code and redeeming it.
	codeTTL = 2 * time.Minute
)

var errNotFound = errors.New("not found or expired")

// storage is the in-memory op.Storage of the dev issuer: one public client,
// a fixed user list, pending auth requests, codes, and the ids of issued
// access tokens (for the userinfo endpoint).
type storage struct {
	opts      Options // normalized
	client    *client
	users     map[string]User // by username
	bySubject map[string]User
	key       signingKey

	mu       sync.Mutex
	requests map[string]*authRequest
	codes    map[string]issuedCode
	tokens   map[string]issuedToken // by jti
}

type issuedCode struct {
	requestID string
	issued    time.Time
}

type issuedToken struct {
	subject string
	scopes  []string
	expires time.Time
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

func newStorage(o Options) (*storage, error) {
	key, err := loadOrGenerateKey(o.KeyFile)
	if err != nil {
		return nil, err
	}
	s := &storage{
		opts:      o,
		client:    &client{id: o.ClientID, redirectURIs: o.RedirectURIs, ttl: o.TokenTTL},
		users:     make(map[string]User, len(o.Users)),
		bySubject: make(map[string]User, len(o.Users)),
		key:       key,
		requests:  make(map[string]*authRequest),
		codes:     make(map[string]issuedCode),
		tokens:    make(map[string]issuedToken),
	}
	for _, u := range o.Users {
		s.users[u.Username] = u
		s.bySubject[u.Subject] = u
	}
	return s, nil
}

// completeLogin marks the pending auth request id as signed in by user.
func (s *storage) completeLogin(id string, user User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok || req.expired(time.Now()) {
		return errors.New("sign-in request not found or expired; start the sign-in again")
	}
	if req.done {
		return errors.New("sign-in request already completed")
	}
	if req.clientID != s.client.id {
		return errors.New("sign-in request is for an unknown client")
	}
	req.subject = user.Subject
	req.done = true
	req.authTime = time.Now()
	return nil
}

// pendingRequest reports whether id names a live auth request awaiting login.
func (s *storage) pendingRequest(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	return ok && !req.done && !req.expired(time.Now()) && req.clientID == s.client.id
}

// pruneLocked drops expired auth requests, codes and tokens. s.mu must be held.
func (s *storage) pruneLocked(now time.Time) {
	for id, r := range s.requests {
		if r.expired(now) {
			delete(s.requests, id)
		}
	}
	for c, ic := range s.codes {
		if now.Sub(ic.issued) > codeTTL {
			delete(s.codes, c)
		}
	}
	for id, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, id)
		}
	}
}

// --- op.AuthStorage ---

func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if slices.Contains(req.Prompt, oidc.PromptNone) {
		return nil, oidc.ErrLoginRequired().WithDescription("no sessions: prompt=none cannot succeed")
	}
	if req.ClientID != s.client.id {
		return nil, oidc.ErrInvalidClient()
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("only response_type=code is supported")
	}
	if req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method=S256 is required")
	}
	now := time.Now()
	ar := &authRequest{
		id:           rand.Text(),
		created:      now,
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		state:        req.State,
		nonce:        req.Nonce,
		scopes:       slices.Clone([]string(req.Scopes)),
		responseMode: req.ResponseMode,
		challenge:    &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod},
		audience:     []string{s.opts.Audience},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	s.requests[ar.id] = ar
	return ar.snapshot(), nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requestLocked(id)
}

func (s *storage) requestLocked(id string) (op.AuthRequest, error) {
	req, ok := s.requests[id]
	if !ok || req.expired(time.Now()) {
		return nil, fmt.Errorf("auth request: %w", errNotFound)
	}
	return req.snapshot(), nil
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ic, ok := s.codes[code]
	if !ok || time.Since(ic.issued) > codeTTL {
		return nil, fmt.Errorf("code: %w", errNotFound)
	}
	return s.requestLocked(ic.requestID)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok || !req.done {
		return fmt.Errorf("auth request: %w", errNotFound)
	}
	s.codes[code] = issuedCode{requestID: id, issued: time.Now()}
	return nil
}

// DeleteAuthRequest is called once the code was redeemed: it makes the code single-use.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for c, ic := range s.codes {
		if ic.requestID == id {
			delete(s.codes, c)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	if _, ok := s.bySubject[req.GetSubject()]; !ok {
		return "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("unknown subject")
	}
	now := time.Now()
	id := rand.Text()
	exp := now.Add(s.opts.TokenTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	s.tokens[id] = issuedToken{subject: req.GetSubject(), scopes: slices.Clone(req.GetScopes()), expires: exp}
	return id, exp, nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType().WithDescription("refresh tokens are not supported")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, oidc.ErrInvalidGrant().WithDescription("refresh tokens are not supported")
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(_ context.Context, tokenOrID, _, clientID string) *oidc.Error {
	if clientID != s.client.id {
		return oidc.ErrInvalidClient()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, tokenOrID)
	return nil
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return &s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.key}}, nil
}

// --- op.OPStorage ---

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if clientID != s.client.id {
		return nil, fmt.Errorf("client %q: %w", clientID, errNotFound)
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("no confidential clients: the dev client is public (PKCE)")
}

// SetUserinfoFromScopes is deprecated in op; SetUserinfoFromRequest does the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(info, req.GetSubject(), scopes, false)
}

// SetUserinfoFromToken serves the userinfo endpoint. Only access tokens this
// instance issued (tracked by jti) are accepted: the ID token is signed by
// the same key but has no jti.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || t.subject != subject || time.Now().After(t.expires) {
		return errors.New("access token unknown or expired")
	}
	return s.setUserinfo(info, subject, t.scopes, true)
}

func (s *storage) setUserinfo(info *oidc.UserInfo, subject string, scopes []string, withRoles bool) error {
	u, ok := s.bySubject[subject]
	if !ok {
		return errors.New("unknown subject")
	}
	info.Subject = u.Subject
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeEmail:
			info.Email = u.Email
			info.EmailVerified = true
		case oidc.ScopeProfile:
			info.Name = u.Name
			info.PreferredUsername = u.Username
		}
	}
	if withRoles {
		info.AppendClaims(s.opts.RolesClaim, roles(u))
	}
	return nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not supported")
}

// GetPrivateClaimsFromRequest adds the user claims to the JWT access token,
// independent of the requested scopes: the API needs them on every token.
func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	return s.accessTokenClaims(req.GetSubject())
}

func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, _ []string) (map[string]any, error) {
	return s.accessTokenClaims(userID)
}

func (s *storage) accessTokenClaims(subject string) (map[string]any, error) {
	u, ok := s.bySubject[subject]
	if !ok {
		return nil, oidc.ErrInvalidGrant().WithDescription("unknown subject")
	}
	return map[string]any{
		"email":              u.Email,
		"email_verified":     true,
		"name":               u.Name,
		"preferred_username": u.Username,
		s.opts.RolesClaim:    roles(u),
	}, nil
}

func roles(u User) []string {
	if u.Roles == nil {
		return []string{} // always an array, never null
	}
	return slices.Clone(u.Roles)
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile grant is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile grant is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// --- keys ---

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ k signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.key.PublicKey }

// --- auth request ---

// authRequest implements op.AuthRequest. The storage hands out snapshots, so
// the library never reads a value that the login handler is mutating.
type authRequest struct {
	id           string
	created      time.Time
	clientID     string
	redirectURI  string
	state        string
	nonce        string
	scopes       []string
	responseMode oidc.ResponseMode
	challenge    *oidc.CodeChallenge
	audience     []string

	subject  string
	done     bool
	authTime time.Time
}

func (a *authRequest) snapshot() *authRequest {
	c := *a
	c.scopes = slices.Clone(a.scopes)
	c.audience = slices.Clone(a.audience)
	ch := *a.challenge
	c.challenge = &ch
	return &c
}

func (a *authRequest) expired(now time.Time) bool { return now.Sub(a.created) > authRequestTTL }

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return nil }
func (a *authRequest) GetAudience() []string                 { return a.audience }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.challenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return oidc.ResponseTypeCode }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.done }

// --- client ---

// client is the single public (native) client: no secret, PKCE required,
// authorization code only, JWT access tokens. As an op.ApplicationTypeNative
// client, a registered loopback redirect URI (http://127.0.0.1/cb,
// http://localhost/cb, http://[::1]/cb) matches any port and any loopback
// host with the same path and query (RFC 8252 §7.3).
type client struct {
	id           string
	redirectURIs []string
	ttl          time.Duration
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                       { return c.id }
func (c *client) RedirectURIs() []string              { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *client) LoginURL(id string) string {
	return loginPath + "?" + loginParamID + "=" + url.QueryEscape(id)
}
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return c.ttl }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
