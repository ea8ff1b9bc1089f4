package oidc

// Fuzz target for the identity provider's key set (docs/security.md, "Fuzzing"): the JWKS is
// outside input fetched over the network. FuzzVerify (bench_test.go) covers the access tokens.

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzParseJWKS: parseJWKS never panics, and every key it keeps is public, valid, meant for
// signatures and usable with one of the pinned algorithms (never a symmetric or private key).
func FuzzParseJWKS(f *testing.F) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	set := func(keys ...jose.JSONWebKey) []byte {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(set(jose.JSONWebKey{Key: rk.Public(), KeyID: "r", Algorithm: "RS256", Use: "sig"}, jose.JSONWebKey{Key: ek.Public(), KeyID: "e"}), uint8(0))
	f.Add(set(jose.JSONWebKey{Key: rk, KeyID: "private"}), uint8(0))
	f.Add(set(jose.JSONWebKey{Key: edk.Public(), KeyID: "ed", Algorithm: "EdDSA"}), uint8(1))
	f.Add(set(jose.JSONWebKey{Key: []byte("symmetric"), KeyID: "oct"}), uint8(2))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"},{"kty":"EC","crv":"P-256","x":"","y":""},null,1]}`), uint8(0))
	f.Add([]byte(`{"keys":null}`), uint8(0))
	pinned := [][]jose.SignatureAlgorithm{{jose.RS256}, {jose.EdDSA, jose.ES256}, {jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.EdDSA}}
	f.Fuzz(func(t *testing.T, body []byte, which uint8) {
		algs := pinned[int(which)%len(pinned)]
		keys, err := parseJWKS(body, algs)
		if err != nil {
			if keys != nil {
				t.Fatalf("parseJWKS returned keys with %v", err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("parseJWKS returned no keys and no error")
		}
		for _, k := range keys {
			if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
				t.Fatalf("kept key %+v", k)
			}
			fits := false
			for _, alg := range algs {
				fits = fits || keyFitsAlg(&k, alg)
			}
			if !fits {
				t.Fatalf("kept key %q, usable with none of %v", k.KeyID, algs)
			}
		}
	})
}
