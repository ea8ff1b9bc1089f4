package oidc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestMiddleware(t *testing.T) {
	e := newEnv(t)
	valid := sign(t, "a-rsa", "a-rsa", jose.RS256, e.claimsA())
	principalA := &Principal{Issuer: e.A.Issuer, Subject: "user-a", Email: "a@example.com", EmailVerified: true, Roles: []string{"owner", "admin"}}

	tests := []struct {
		name          string
		headers       map[string][]string
		wantNext      bool
		wantPrincipal *Principal // nil: anonymous (when next runs)
		wantErr       error      // passed to reject
	}{
		{"no Authorization header: anonymous", nil, true, nil, nil},
		{"forged X-User-Id alone: still anonymous", map[string][]string{"X-User-Id": {"admin"}, "X-Roles": {"admin"}}, true, nil, nil},
		{"Bearer valid", map[string][]string{"Authorization": {"Bearer " + valid}}, true, principalA, nil},
		{"bearer scheme is case-insensitive", map[string][]string{"Authorization": {"bearer " + valid}}, true, principalA, nil},
		{"Bearer valid plus forged X-User-Id: identity from the token", map[string][]string{"Authorization": {"Bearer " + valid}, "X-User-Id": {"someone-else"}}, true, principalA, nil},
		{"Bearer garbage", map[string][]string{"Authorization": {"Bearer garbage"}}, false, nil, ErrMalformedToken},
		{"Bearer expired", map[string][]string{"Authorization": {"Bearer " + sign(t, "a-rsa", "a-rsa", jose.RS256, with(e.claimsA(), "exp", e.Clock.Now().Unix()-3600))}}, false, nil, ErrTokenExpired},
		{"Basic credentials", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}}, false, nil, ErrInvalidAuthorizationHeader},
		{"token without scheme", map[string][]string{"Authorization": {valid}}, false, nil, ErrInvalidAuthorizationHeader},
		{"empty bearer", map[string][]string{"Authorization": {"Bearer "}}, false, nil, ErrInvalidAuthorizationHeader},
		{"bare Bearer", map[string][]string{"Authorization": {"Bearer"}}, false, nil, ErrInvalidAuthorizationHeader},
		{"empty header value", map[string][]string{"Authorization": {""}}, false, nil, ErrInvalidAuthorizationHeader},
		{"two tokens in one header", map[string][]string{"Authorization": {"Bearer " + valid + " " + valid}}, false, nil, ErrInvalidAuthorizationHeader},
		{"repeated Authorization headers", map[string][]string{"Authorization": {"Bearer " + valid, "Bearer " + valid}}, false, nil, ErrInvalidAuthorizationHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				nextCalled bool
				gotP       *Principal
				gotOK      bool
				rejectErr  error
				rejected   bool
			)
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nextCalled = true
				gotP, gotOK = PrincipalFrom(r.Context())
				w.WriteHeader(http.StatusNoContent)
			})
			reject := func(w http.ResponseWriter, _ *http.Request, err error) {
				rejected, rejectErr = true, err
				w.WriteHeader(http.StatusUnauthorized)
			}
			req := httptest.NewRequest(http.MethodPost, "/graphql", nil)
			for k, vs := range tt.headers {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			rec := httptest.NewRecorder()
			e.V.Middleware(reject)(next).ServeHTTP(rec, req)

			if nextCalled != tt.wantNext {
				t.Fatalf("next called = %v, want %v", nextCalled, tt.wantNext)
			}
			if tt.wantNext {
				if rejected {
					t.Fatalf("reject called with %v", rejectErr)
				}
				if gotOK != (tt.wantPrincipal != nil) || !reflect.DeepEqual(gotP, tt.wantPrincipal) {
					t.Fatalf("PrincipalFrom = %+v, %v; want %+v", gotP, gotOK, tt.wantPrincipal)
				}
				return
			}
			if !rejected {
				t.Fatal("reject not called")
			}
			if rejectErr != tt.wantErr || !errors.Is(rejectErr, ErrUnauthenticated) { //nolint:errorlint
				t.Fatalf("reject err = %v, want %v", rejectErr, tt.wantErr)
			}
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status = %d", rec.Code)
			}
		})
	}
}

func TestMiddlewareDefaultReject(t *testing.T) {
	e := newEnv(t)
	req := httptest.NewRequest(http.MethodPost, "/graphql", nil)
	req.Header.Set("Authorization", "Bearer garbage")
	rec := httptest.NewRecorder()
	e.V.Middleware(nil)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Fatal("next called")
	})).ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("status %d, WWW-Authenticate %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}

func TestContext(t *testing.T) {
	ctx := context.Background()
	if p, ok := PrincipalFrom(ctx); ok || p != nil {
		t.Fatalf("empty context: %v, %v", p, ok)
	}
	if p, ok := PrincipalFrom(NewContext(ctx, nil)); ok || p != nil {
		t.Fatalf("nil principal: %v, %v", p, ok)
	}
	// A value under a look-alike key from another package means nothing.
	type principalKey struct{}
	if _, ok := PrincipalFrom(context.WithValue(ctx, principalKey{}, &Principal{Subject: "x"})); ok {
		t.Fatal("foreign key accepted")
	}
	want := &Principal{Subject: "s", Roles: []string{"admin"}}
	p, ok := PrincipalFrom(NewContext(ctx, want))
	if !ok || p != want {
		t.Fatalf("round trip: %v, %v", p, ok)
	}
	if !p.HasRole("admin") || p.HasRole("owner") {
		t.Fatal("HasRole")
	}
	var nilP *Principal
	if nilP.HasRole("admin") {
		t.Fatal("nil principal has a role")
	}
}
