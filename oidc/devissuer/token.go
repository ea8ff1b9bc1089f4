package devissuer

import (
	"context"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/crypto"
	httphelper "github.com/zitadel/oidc/v3/pkg/http"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// accessTokenType is the "typ" header of the access tokens (RFC 9068 §2.1). The library types
// every JWT it signs "JWT" and gives the ID token the access token's audience plus the client
// id, so the gateway could not tell the two apart; this package issues both itself.
const accessTokenType = "at+jwt"

// codeExchange returns an interceptor that answers the authorization_code grant at the token
// endpoint with an RFC 9068 access token (typ "at+jwt", aud the API) and an ID token for the
// client alone (aud the client id). The library still parses and validates the request (client,
// code, PKCE, redirect URI) and answers every other grant, all of which the client refuses.
func codeExchange(provider func() *op.Provider, st *storage) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := provider()
			if r.URL.Path != p.TokenEndpoint().Relative() || r.FormValue("grant_type") != string(oidc.GrantTypeCode) {
				next.ServeHTTP(w, r)
				return
			}
			req, err := op.ParseAccessTokenRequest(r, p.Decoder())
			if err == nil && req.Code == "" {
				err = oidc.ErrInvalidRequest().WithDescription("code missing")
			}
			var (
				authReq op.AuthRequest
				client  op.Client
			)
			if err == nil {
				authReq, client, err = op.ValidateAccessTokenRequest(r.Context(), req, p)
			}
			var resp *oidc.AccessTokenResponse
			if err == nil {
				resp, err = st.tokenResponse(r.Context(), op.IssuerFromContext(r.Context()), authReq, client, req.Code)
			}
			if err != nil {
				op.RequestError(w, r, err, nil)
				return
			}
			w.Header().Set("Cache-Control", "no-store") // RFC 6749 §5.1
			httphelper.MarshalJSON(w, resp)
		})
	}
}

// tokenResponse issues the access and ID tokens for a validated, signed-in auth request and
// makes its code unusable. It returns an OAuth error (oidc.Error) for an unknown subject, or the
// signing error.
func (s *storage) tokenResponse(ctx context.Context, issuer string, authReq op.AuthRequest, client op.Client, code string) (*oidc.AccessTokenResponse, error) {
	id, exp, err := s.CreateAccessToken(ctx, authReq)
	if err != nil {
		return nil, err
	}
	claims := oidc.NewAccessTokenClaims(issuer, authReq.GetSubject(), []string{s.opts.Audience}, exp, id, client.GetID(), 0)
	claims.AuthTime = oidc.FromTime(authReq.GetAuthTime())
	claims.Scopes = authReq.GetScopes()
	if claims.Claims, err = s.accessTokenClaims(authReq.GetSubject()); err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: s.key.SignatureAlgorithm(),
		Key:       &jose.JSONWebKey{Key: s.key.key, KeyID: s.key.id},
	}, (&jose.SignerOptions{}).WithType(accessTokenType))
	if err != nil {
		return nil, err
	}
	accessToken, err := crypto.Sign(claims, signer)
	if err != nil {
		return nil, err
	}
	// The library's ID token, with at_hash and c_hash, addressed to the client only.
	idToken, err := op.CreateIDToken(ctx, issuer, clientOnly{authReq}, client.IDTokenLifetime(), accessToken, code, s, client)
	if err != nil {
		return nil, err
	}
	if err := s.DeleteAuthRequest(ctx, authReq.GetID()); err != nil {
		return nil, err
	}
	return &oidc.AccessTokenResponse{
		AccessToken: accessToken,
		IDToken:     idToken,
		TokenType:   oidc.BearerToken,
		ExpiresIn:   uint64(max(time.Until(exp), 0).Seconds()),
		Scope:       authReq.GetScopes(),
	}, nil
}

// clientOnly is an auth request as its ID token sees it: with no audience of its own, the
// library addresses the ID token to the client id alone (OpenID Connect Core §2), never to the
// API. It still is an op.AuthRequest, so the ID token keeps the request's nonce.
type clientOnly struct{ op.AuthRequest }

func (clientOnly) GetAudience() []string { return nil }
