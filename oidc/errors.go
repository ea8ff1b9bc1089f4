package oidc

import "errors"

// ErrUnauthenticated is wrapped by every error Verify and Middleware report: check it with
// errors.Is. The more specific errors below say why; their messages are safe to show to clients.
var ErrUnauthenticated = errors.New("unauthenticated")

// Reasons a token or Authorization header is refused. Each wraps ErrUnauthenticated and is
// returned as is (compare with errors.Is), so its Error() never carries token contents.
var (
	// ErrMalformedToken: not a compact JWS, larger than MaxTokenSize, or missing/mistyped
	// required claims (exp, sub, aud).
	ErrMalformedToken = authError("malformed access token")
	// ErrIssuerNotTrusted: the token's "iss" is not exactly one of the configured issuers.
	ErrIssuerNotTrusted = authError("access token issuer not trusted")
	// ErrAlgorithmNotAllowed: the "alg" header is not pinned for the issuer (HS*, "none", ...).
	ErrAlgorithmNotAllowed = authError("access token signature algorithm not allowed")
	// ErrUnknownSigningKey: no key with the token's "kid" in the issuer's JWKS, even after the
	// (rate-limited) refetch.
	ErrUnknownSigningKey = authError("access token signing key unknown")
	// ErrSignatureInvalid: the key named by "kid" (or, without kid, every key of the alg) does
	// not verify the signature: forged, tampered or signed by another issuer's key.
	ErrSignatureInvalid = authError("access token signature invalid")
	// ErrIDToken: the token is its issuer's ID token, not an access token: it carries a claim only
	// ID tokens carry (nonce, at_hash, c_hash, s_hash) and is not typed "at+jwt" (never for an
	// issuer of IssuerConfig.TokenType "id-token"). An ID token tells a client who signed in; it
	// is not a credential for the API.
	ErrIDToken = authError("an ID token is not an access token")
	// ErrTokenType: the "typ" header is not an access token's: not "at+jwt" at an issuer
	// configured with TokenType "at+jwt"; neither absent, "JWT" nor "at+jwt" at the others
	// (e.g. "logout+jwt").
	ErrTokenType = authError(`not an access token: the "typ" header names another token type`)
	// ErrAudienceMismatch: "aud" lacks the issuer's configured API audience (e.g. a token for
	// another API, or an ID token not recognised as one).
	ErrAudienceMismatch = authError("access token audience mismatch")
	// ErrTokenExpired: "exp" is past by more than the allowed clock skew.
	ErrTokenExpired = authError("access token expired")
	// ErrTokenNotYetValid: "nbf" or "iat" lies in the future beyond the allowed clock skew.
	ErrTokenNotYetValid = authError("access token not yet valid")
	// ErrProviderUnavailable: the issuer's JWKS could not be fetched when an unknown key had to be
	// looked up (or the request was cancelled meanwhile). Callers may map it to 503.
	ErrProviderUnavailable = authError("identity provider unavailable")
	// ErrInvalidAuthorizationHeader: an Authorization header that is not exactly one
	// "Bearer <token>" (other scheme, empty token, repeated header).
	ErrInvalidAuthorizationHeader = authError(`authorization header must be "Bearer <access token>"`)
)

// verifyError is a client-safe message that unwraps to ErrUnauthenticated.
type verifyError struct{ msg string }

func authError(msg string) error { return &verifyError{msg: msg} }

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return ErrUnauthenticated }
