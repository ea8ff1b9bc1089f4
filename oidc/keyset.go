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
	"strings"
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
// fails closed otherwise, keeps the cached keys when a fetch fails, and refetches a set older
// than maxAge so that keys the issuer withdrew stop verifying (docs/resilience.md "Identity
// provider faults").
type keySet struct {
	issuer     string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	maxAge     time.Duration
	now        func() time.Time
	log        *slog.Logger
	// discover finds the jwks_uri; it runs again on refresh while discovery has not succeeded
	// (the issuer was unreachable when the gateway started).
	discover func(context.Context) (string, error)

	group singleflight.Group

	mu          sync.RWMutex
	jwksURL     string            // "" until discovery succeeded
	keys        []jose.JSONWebKey // public signing keys usable with at least one of algs
	gen         uint64            // incremented whenever keys is replaced
	lastAttempt time.Time         // last fetch attempt, successful or not (rate limit)
	fetchedAt   time.Time         // last successful fetch (age of keys)
	failed      bool              // the last attempt failed: the issuer is unavailable
	inFlight    bool              // a fetch is under way: callers join it
}

const (
	// pendingRetryInterval is the least time between two attempts to reach an issuer of which
	// no key is cached yet (unreachable at start), when MinRefreshInterval is longer: its tokens
	// are all refused meanwhile, so recovery should not wait a full minute.
	pendingRetryInterval = 5 * time.Second
	// staleRefreshWait bounds how long a request waits for the refetch of a key set older than
	// MaxKeyAge before it is verified against the cached keys: long enough for an issuer that
	// answers, short enough that a hanging one adds at most this to the requests meanwhile.
	staleRefreshWait = time.Second
)

// unavailableError marks a failure to reach the issuer (transport error, timeout, HTTP 5xx or
// 429), as opposed to an answer that shows a misconfiguration.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

func unavailable(err error) error { return &unavailableError{err} }

// transientStatus reports whether an HTTP status says the issuer is unavailable for now.
func transientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
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

	k.refreshIfStale(ctx)
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
// are kept), if it was rate limited after a failed attempt, or if ctx ended while waiting; nil
// when the fetch succeeded or was rate limited after a successful one.
func (k *keySet) refresh(ctx context.Context) error {
	if due, failed, inFlight := k.state(); !due && !inFlight {
		if failed {
			return ErrProviderUnavailable // the issuer could not be asked: not the token's fault
		}
		return nil
	}
	select {
	case <-ctx.Done():
		return ErrProviderUnavailable
	case r := <-k.startRefresh():
		return r.Err
	}
}

// refreshIfStale refetches a key set older than maxAge (rate limited like refresh), so that a
// key the issuer withdrew stops verifying even when no unknown kid ever triggers a refetch. The
// request waits for that fetch at most staleRefreshWait: if the issuer does not answer by then
// (or fails), the cached keys are used, as during any outage.
func (k *keySet) refreshIfStale(ctx context.Context) {
	k.mu.RLock()
	stale := len(k.keys) > 0 && k.now().Sub(k.fetchedAt) >= k.maxAge && k.dueLocked()
	k.mu.RUnlock()
	if !stale {
		return
	}
	ch := k.startRefresh()
	t := time.NewTimer(staleRefreshWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// startRefresh starts (or joins) the shared fetch. The result's Err is nil or
// ErrProviderUnavailable.
func (k *keySet) startRefresh() <-chan singleflight.Result {
	return k.group.DoChan("jwks", func() (any, error) {
		// Claim the slot under the lock: a caller that read a stale lastAttempt just before the
		// previous flight finished must not start a second fetch within the interval.
		k.mu.Lock()
		if !k.dueLocked() {
			failed := k.failed
			k.mu.Unlock()
			if failed {
				return nil, ErrProviderUnavailable
			}
			return nil, nil
		}
		k.lastAttempt = k.now()
		k.inFlight = true
		jwksURL := k.jwksURL
		k.mu.Unlock()
		defer func() {
			k.mu.Lock()
			k.inFlight = false
			k.mu.Unlock()
		}()

		keys, jwksURL, err := k.fetchFrom(context.Background(), jwksURL)
		if err != nil {
			k.mu.Lock()
			k.failed = true
			k.mu.Unlock()
			k.log.Warn("oidc: JWKS refresh failed; keeping cached keys",
				slog.String("issuer", k.issuer), slog.String("jwks_uri", jwksURL), slog.Any("err", err))
			return nil, ErrProviderUnavailable
		}
		k.store(keys, jwksURL)
		k.log.Info("oidc: JWKS refreshed", slog.String("issuer", k.issuer), slog.Int("keys", len(keys)))
		return nil, nil
	})
}

// fetchFrom fetches the JWKS at jwksURL, running discovery first when jwksURL is empty. It
// returns the keys and the jwks_uri used.
func (k *keySet) fetchFrom(ctx context.Context, jwksURL string) ([]jose.JSONWebKey, string, error) {
	if jwksURL == "" {
		u, err := k.discover(ctx)
		if err != nil {
			return nil, "", err
		}
		jwksURL = u
	}
	keys, err := k.fetch(ctx, jwksURL)
	return keys, jwksURL, err
}

// state reports whether a fetch is due, whether the last attempt failed, and whether one is
// under way (whose outcome a caller should wait for rather than guess).
func (k *keySet) state() (due, failed, inFlight bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.dueLocked(), k.failed, k.inFlight
}

func (k *keySet) dueLocked() bool {
	interval := k.minRefresh
	if len(k.keys) == 0 {
		interval = min(interval, pendingRetryInterval)
	}
	return k.lastAttempt.IsZero() || k.now().Sub(k.lastAttempt) >= interval
}

// store replaces the cached keys: a key missing from the new set no longer verifies.
func (k *keySet) store(keys []jose.JSONWebKey, jwksURL string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
	k.gen++
	k.jwksURL = jwksURL
	k.fetchedAt = k.now()
	k.failed = false
}

// load runs discovery and fetches the JWKS once (at start-up) and caches it. The error is an
// *unavailableError when the issuer could not be reached; the key set then stays empty and
// every token of the issuer triggers a (rate-limited) new attempt.
func (k *keySet) load(ctx context.Context) error {
	k.mu.Lock()
	k.lastAttempt = k.now()
	k.mu.Unlock()
	keys, jwksURL, err := k.fetchFrom(ctx, "")
	if err != nil {
		k.mu.Lock()
		k.failed = true
		k.mu.Unlock()
		return err
	}
	k.store(keys, jwksURL)
	return nil
}

// discover GETs the issuer's discovery document and returns its jwks_uri. The document's
// "issuer" must equal issuerURL exactly (OpenID Connect Discovery §4.3; Auth0's trailing slash
// included). Transport failures, timeouts and HTTP 5xx/429 are *unavailableError; any other
// failure (404, not JSON, another issuer, a bad jwks_uri) is a misconfiguration.
func discover(ctx context.Context, client *http.Client, issuerURL string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	wellKnown := strings.TrimSuffix(issuerURL, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wellKnown, nil)
	if err != nil {
		return "", fmt.Errorf("discovery for issuer %q: %w", issuerURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", unavailable(fmt.Errorf("discovery for issuer %q: %w", issuerURL, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return "", unavailable(fmt.Errorf("discovery for issuer %q: reading: %w", issuerURL, err))
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("discovery for issuer %q: %s from %s", issuerURL, resp.Status, wellKnown)
		if transientStatus(resp.StatusCode) {
			return "", unavailable(err)
		}
		return "", err
	}
	if len(body) > maxJWKSBytes {
		return "", fmt.Errorf("discovery for issuer %q: document larger than %d bytes", issuerURL, maxJWKSBytes)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURL string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery for issuer %q: decoding %s: %w", issuerURL, wellKnown, err)
	}
	if doc.Issuer != issuerURL {
		return "", fmt.Errorf("discovery for issuer %q: the document names issuer %q (they must match exactly)", issuerURL, doc.Issuer)
	}
	if err := checkHTTPURL(doc.JWKSURL); err != nil {
		return "", fmt.Errorf("discovery for issuer %q: jwks_uri: %w", issuerURL, err)
	}
	return doc.JWKSURL, nil
}

// fetch GETs and parses the JWKS. It returns an error for transport failures, a status other than
// 200, an oversized or unparsable body, or a set without any key usable with the pinned algorithms;
// an *unavailableError for transport failures, timeouts and HTTP 5xx/429.
func (k *keySet) fetch(ctx context.Context, jwksURL string) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, unavailable(fmt.Errorf("fetching JWKS: %w", err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, unavailable(fmt.Errorf("reading JWKS: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("fetching JWKS: status %s", resp.Status)
		if transientStatus(resp.StatusCode) {
			return nil, unavailable(err)
		}
		return nil, err
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
