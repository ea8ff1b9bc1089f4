// Package oidc authenticates API callers by their OAuth 2.0 / OpenID Connect access tokens (JWTs)
// and carries the resulting Principal in the request context.
//
// A Verifier trusts a fixed list of issuers, each with its own API audience, roles claim and pinned
// signing algorithms. Tokens are routed to their issuer by the (unverified) "iss" claim and then
// fully verified with github.com/coreos/go-oidc/v3 against a key set that caches the issuer's JWKS
// and refetches it on an unknown key id at most once per Config.MinRefreshInterval, so forged key
// ids cannot make the gateway hammer the identity provider.
//
// Only access tokens are bearer tokens: an issuer's ID tokens, signed with the same keys, are
// refused by their "typ" header, their ID-token-only claims and their audience, as
// IssuerConfig.TokenType says for that issuer (see docs/security.md).
//
// Only a verified token creates a Principal; headers such as X-User-Id mean nothing here.
package oidc

import (
	"context"
	"slices"
)

// Principal is a caller authenticated by a verified access token.
type Principal struct {
	Issuer, Subject string
	Email           string
	EmailVerified   bool
	Roles           []string
}

// HasRole reports whether the principal holds role r. It returns false for a nil principal.
func (p *Principal) HasRole(r string) bool {
	return p != nil && slices.Contains(p.Roles, r)
}

// principalKey is the unexported context key: no other package can set or overwrite it.
type principalKey struct{}

// NewContext returns a copy of ctx carrying p. A nil p yields a context in which PrincipalFrom
// reports no principal.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal stored by NewContext. It returns (nil, false) when the
// request is anonymous (no principal, or a nil one, in ctx).
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
