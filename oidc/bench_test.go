package oidc

import (
	"context"
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures one verification with cached keys (no network).
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		token string
	}{
		{"RS256-2048", sign(b, "a-rsa", "a-rsa", jose.RS256, e.claimsA())},
		{"ES256", sign(b, "a-ec", "a-ec", jose.ES256, e.claimsA())},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.V.Verify(ctx, bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.V.Verify(ctx, bc.token); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("rejected-garbage", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.V.Verify(ctx, "eyJhbGciOiJub25lIn0.e30."); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}

// FuzzVerify: no input panics, every failure wraps ErrUnauthenticated, and an accepted input
// carries exactly the signed claims (base64 slack bits aside, only the signed token verifies).
func FuzzVerify(f *testing.F) {
	e := newEnv(f)
	valid := sign(f, "a-rsa", "a-rsa", jose.RS256, e.claimsA())
	for _, s := range []string{"", ".", "..", "a.b.c", valid, valid + "x", strings.Replace(valid, ".", "..", 1), "eyJhbGciOiJub25lIn0.e30.", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := e.V.Verify(context.Background(), raw)
		if err != nil {
			if p != nil || !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Verify(%q) = %v, %v", raw, p, err)
			}
			return
		}
		if p.Subject != "user-a" || p.Issuer != e.A.Issuer || len(p.Roles) != 2 {
			t.Fatalf("Verify(%q) accepted with principal %+v", raw, p)
		}
	})
}
