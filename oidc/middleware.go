package oidc

import (
	"errors"
	"net/http"
	"strings"
)

// Middleware authenticates requests by their Authorization header:
//   - no Authorization header: the request passes to next unchanged (anonymous);
//   - exactly one "Bearer <token>" (scheme case-insensitive) whose token Verify accepts: next
//     runs with the Principal in the request context (see PrincipalFrom);
//   - anything else (invalid token, another scheme, an empty token, repeated headers): reject is
//     called with an error wrapping ErrUnauthenticated (ErrInvalidAuthorizationHeader or one
//     of Verify's errors) and next is not.
//
// reject renders the refusal (the gateway writes a GraphQL-shaped error). If reject is nil, a
// plain 401 (503 for ErrProviderUnavailable) with a WWW-Authenticate header is written.
func (v *Verifier) Middleware(reject func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	if reject == nil {
		reject = defaultReject
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			values := r.Header.Values("Authorization")
			if len(values) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			raw, ok := bearerToken(values)
			if !ok {
				reject(w, r, ErrInvalidAuthorizationHeader)
				return
			}
			p, err := v.Verify(r.Context(), raw)
			if err != nil {
				reject(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
		})
	}
}

// bearerToken extracts the token of a single "Bearer <token>" header value.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

func defaultReject(w http.ResponseWriter, _ *http.Request, err error) {
	status := http.StatusUnauthorized
	if errors.Is(err, ErrProviderUnavailable) {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	http.Error(w, err.Error(), status)
}
