package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

const (
	// maxJWKSBytes bounds a JWKS response body.
	maxJWKSBytes = 1 << 20
	// fetchTimeout bounds one JWKS fetch even if Config.HTTPClient has no timeout.
	fetchTimeout = 30 * time.Second
)

// keySet implements go-oidc's KeySet for one issuer. Unlike go-oidc's RemoteKeySet it refetches
// the JWKS on an unknown "kid" at most once per minRefresh (concurrent callers share one fetch),
// fails closed otherwise, and keeps the cached keys when a fetch fails.
type keySet struct {
	issuer     string
	jwksURL    string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	now        func() time.Time
	log        *slog.Logger

	group singleflight.Group

	mu          sync.RWMutex
	keys        []jose.JSONWebKey // public signing keys usable with at least one of algs
	gen         uint64            // incremented whenever keys is replaced
	lastAttempt time.Time         // last fetch attempt, successful or not (rate limit)
}

// sigState carries the pre-parsed token from Verifier.Verify into VerifySignature (go-oidc calls
// it with our context) and the key set's classified error back out: go-oidc wraps key-set errors
// with %v, which would lose the sentinel.
type sigState struct {
	raw     string
	jws     *jose.JSONWebSignature
	err     error
	payload []byte
}

type sigStateKey struct{}

// VerifySignature verifies the token's signature with a cached (or, for an unknown kid, freshly
// fetched) key and returns the verified payload. Errors are this package's sentinels.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	st, _ := ctx.Value(sigStateKey{}).(*sigState)
	var jws *jose.JSONWebSignature
	if st != nil && st.jws != nil && st.raw == raw {
		jws = st.jws
	} else {
		var err error
		if jws, err = jose.ParseSignedCompact(raw, k.algs); err != nil {
			return nil, ErrMalformedToken
		}
	}
	payload, err := k.verify(ctx, jws)
	if st != nil {
		st.err, st.payload = err, payload
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		return nil, ErrMalformedToken
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)
	if !algAllowed(k.algs, alg) { // go-jose and go-oidc check this too; defence in depth
		return nil, ErrAlgorithmNotAllowed
	}

	keys, gen := k.snapshot()
	if payload, found, err := tryKeys(jws, keys, h.KeyID, alg); found {
		return payload, err
	}
	// Unknown kid (or, without a kid, no key verified): the issuer may have rotated its keys.
	if err := k.refresh(ctx); err != nil {
		return nil, err
	}
	if keys, newGen := k.snapshot(); newGen != gen {
		if payload, found, err := tryKeys(jws, keys, h.KeyID, alg); found {
			return payload, err
		}
	}
	if h.KeyID == "" {
		return nil, ErrSignatureInvalid
	}
	return nil, ErrUnknownSigningKey
}

// tryKeys verifies jws with the candidate keys: those with the token's kid or, for a token without
// kid, those compatible with its alg. found reports whether any candidate decided the outcome:
// a kid that is present but whose key does not verify is a bad signature, not a reason to refetch.
func tryKeys(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string, alg jose.SignatureAlgorithm) (payload []byte, found bool, err error) {
	for i := range keys {
		key := &keys[i]
		if kid != "" {
			if key.KeyID != kid {
				continue
			}
			found = true
		}
		if !keyFitsAlg(key, alg) {
			continue
		}
		if p, err := jws.Verify(key.Key); err == nil {
			return p, true, nil
		}
	}
	if found {
		return nil, true, ErrSignatureInvalid
	}
	return nil, false, nil
}

func (k *keySet) snapshot() ([]jose.JSONWebKey, uint64) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys, k.gen
}

// refresh refetches the JWKS unless a fetch was attempted within minRefresh. Concurrent callers
// share one fetch. It returns ErrProviderUnavailable if the shared fetch failed (the cached keys
// are kept) or ctx ended while waiting, and nil when the fetch succeeded or was rate limited.
func (k *keySet) refresh(ctx context.Context) error {
	if !k.refreshDue() {
		return nil
	}
	ch := k.group.DoChan("jwks", func() (any, error) {
		// Claim the slot under the lock: a caller that read a stale lastAttempt just before the
		// previous flight finished must not start a second fetch within the interval.
		k.mu.Lock()
		if !k.dueLocked() {
			k.mu.Unlock()
			return nil, nil
		}
		k.lastAttempt = k.now()
		k.mu.Unlock()

		keys, err := k.fetch(context.Background())
		if err != nil {
			k.log.Warn("oidc: JWKS refresh failed; keeping cached keys",
				slog.String("issuer", k.issuer), slog.String("jwks_uri", k.jwksURL), slog.Any("err", err))
			return nil, ErrProviderUnavailable
		}
		k.store(keys)
		k.log.Info("oidc: JWKS refreshed", slog.String("issuer", k.issuer), slog.Int("keys", len(keys)))
		return nil, nil
	})
	select {
	case <-ctx.Done():
		return ErrProviderUnavailable
	case r := <-ch:
		return r.Err
	}
}

func (k *keySet) refreshDue() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.dueLocked()
}

func (k *keySet) dueLocked() bool {
	return k.lastAttempt.IsZero() || k.now().Sub(k.lastAttempt) >= k.minRefresh
}

func (k *keySet) store(keys []jose.JSONWebKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
	k.gen++
}

// load fetches the JWKS once (at start-up) and caches it.
func (k *keySet) load(ctx context.Context) error {
	k.mu.Lock()
	k.lastAttempt = k.now()
	k.mu.Unlock()
	keys, err := k.fetch(ctx)
	if err != nil {
		return err
	}
	k.store(keys)
	return nil
}

// fetch GETs and parses the JWKS. It returns an error for transport failures, a status other than
// 200, an oversized or unparsable body, or a set without any key usable with the pinned algorithms.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching JWKS: status %s", resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body, k.algs)
}

// parseJWKS keeps the public signing keys usable with at least one of algs. Keys of unsupported
// types, encryption keys, symmetric keys and keys advertising another algorithm are skipped.
func parseJWKS(body []byte, algs []jose.SignatureAlgorithm) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(raw, &jwk); err != nil {
			continue // unsupported kty/curve or invalid: ignore, as RFC 7517 §5 asks
		}
		if jwk.Use != "" && jwk.Use != "sig" {
			continue
		}
		pub := jwk.Public() // a private key published by mistake still only verifies
		if !pub.Valid() || !pub.IsPublic() {
			continue // symmetric or broken key
		}
		for _, alg := range algs {
			if keyFitsAlg(&pub, alg) {
				keys = append(keys, pub)
				break
			}
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS has no key usable with the pinned algorithms")
	}
	return keys, nil
}

// keyFitsAlg reports whether key may verify a signature made with alg: the key's own "alg" (if
// any) must match, and the key type (and curve) must be the one alg uses.
func keyFitsAlg(key *jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if key.Algorithm != "" && key.Algorithm != string(alg) {
		return false
	}
	switch pk := key.Key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pk.Curve == elliptic.P256()
		case jose.ES384:
			return pk.Curve == elliptic.P384()
		case jose.ES512:
			return pk.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

func algAllowed(algs []jose.SignatureAlgorithm, alg jose.SignatureAlgorithm) bool {
	for _, a := range algs {
		if a == alg {
			return true
		}
	}
	return false
}
