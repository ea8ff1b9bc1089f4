package nvidia

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/gpugate/gpugate/internal/ttlcache"
)

// OCSP defaults (see docs/attestation.md, "OCSP").
const (
	// DefaultOCSPTimeout bounds one responder round trip; a slow responder leaves the evidence
	// revocation-unchecked rather than stalling proof ingestion.
	DefaultOCSPTimeout = 5 * time.Second
	// DefaultOCSPCacheSize bounds the cached answers (one per certificate: an 8-GPU host has 8
	// device certificates and shares its ICA and identity certificates).
	DefaultOCSPCacheSize = 4096
	// ocspDefaultLifetime is how long an answer without nextUpdate is reused.
	ocspDefaultLifetime = time.Hour
	// ocspMaxLifetime caps any cached answer, whatever its nextUpdate says.
	ocspMaxLifetime = 24 * time.Hour
	// ocspClockSkew is how far in the future a responder's thisUpdate may be.
	ocspClockSkew = 5 * time.Minute
	// maxOCSPResponseBytes bounds what is read from the responder.
	maxOCSPResponseBytes = 64 << 10
)

// ErrOCSPURL is returned by NewOCSPChecker for a responder URL that is not absolute http(s).
var ErrOCSPURL = errors.New("nvidia: the OCSP responder URL must be an absolute http or https URL")

// OCSPOptions configure an OCSPChecker.
type OCSPOptions struct {
	URL       string        // the responder (NVIDIA's is http://ocsp.ndis.nvidia.com, or a relay)
	Timeout   time.Duration // per request; 0: DefaultOCSPTimeout
	CacheSize int           // 0: DefaultOCSPCacheSize
	Client    *http.Client  // nil: a client with Timeout
}

// OCSPChecker checks certificates' revocation through a responder, with a cache. It is safe for
// concurrent use.
type OCSPChecker struct {
	url     string
	timeout time.Duration
	client  *http.Client
	cache   *ttlcache.LRU[string, ocspAnswer]
}

type ocspAnswer struct {
	revoked bool
	until   time.Time // reuse the answer until then (by the verifier's clock)
}

// NewOCSPChecker returns a checker for o. It returns ErrOCSPURL for a URL that is not absolute
// http or https.
func NewOCSPChecker(o OCSPOptions) (*OCSPChecker, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, ErrOCSPURL
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultOCSPTimeout
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultOCSPCacheSize
	}
	client := o.Client
	if client == nil {
		client = &http.Client{Timeout: o.Timeout}
	}
	return &OCSPChecker{url: o.URL, timeout: o.Timeout, client: client, cache: ttlcache.New[string, ocspAnswer](o.CacheSize, ocspMaxLifetime)}, nil
}

// errOCSPUnknown: the responder gave no usable good/revoked answer.
var errOCSPUnknown = errors.New("nvidia: revocation status unknown")

// revoked reports whether target.cert is revoked according to the responder, the answer
// verified to the path's root (top) at now. It returns errOCSPUnknown (wrapped) when the
// responder cannot be reached or gives no fresh, verifiable good/revoked answer.
func (c *OCSPChecker) revoked(ctx context.Context, now time.Time, t ocspTarget, path []*x509.Certificate) (bool, error) {
	key := string(cacheKey(t))
	if a, ok := c.cache.Get(key); ok && now.Before(a.until) {
		return a.revoked, nil
	}
	req, err := ocsp.CreateRequest(t.cert, t.issuer, &ocsp.RequestOptions{Hash: crypto.SHA384})
	if err != nil {
		return false, fmt.Errorf("%w: %v", errOCSPUnknown, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(req))
	if err != nil {
		return false, fmt.Errorf("%w: %v", errOCSPUnknown, err)
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	hreq.Header.Set("Accept", "application/ocsp-response")
	resp, err := c.client.Do(hreq)
	if err != nil {
		return false, fmt.Errorf("%w: %v", errOCSPUnknown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%w: responder status %d", errOCSPUnknown, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponseBytes+1))
	if err != nil || len(body) > maxOCSPResponseBytes {
		return false, fmt.Errorf("%w: unreadable response", errOCSPUnknown)
	}
	r, err := ocsp.ParseResponseForCert(body, t.cert, nil)
	if err != nil {
		return false, fmt.Errorf("%w: %v", errOCSPUnknown, err)
	}
	if err := checkResponder(r, t, path, now); err != nil {
		return false, fmt.Errorf("%w: %v", errOCSPUnknown, err)
	}
	if now.Add(ocspClockSkew).Before(r.ThisUpdate) || (!r.NextUpdate.IsZero() && now.After(r.NextUpdate)) {
		return false, fmt.Errorf("%w: stale response", errOCSPUnknown)
	}
	var a ocspAnswer
	switch r.Status {
	case ocsp.Good:
	case ocsp.Revoked:
		a.revoked = true
	default:
		return false, fmt.Errorf("%w: responder does not know the certificate", errOCSPUnknown)
	}
	a.until = now.Add(ocspDefaultLifetime)
	if !r.NextUpdate.IsZero() {
		a.until = r.NextUpdate
	}
	a.until = minTime(a.until, now.Add(ocspMaxLifetime))
	c.cache.Add(key, a)
	return a.revoked, nil
}

// checkResponder returns nil when r is signed by the certificate's issuer, or by a responder
// certificate for OCSP signing that chains, at now, to the same root through certificates
// strictly above the one asked about (x/crypto/ocsp checked that the embedded responder
// certificate signed r). Certificates below or equal to it are excluded: a key extracted from
// one GPU, or the key of a revoked CA itself, must not vouch for that CA.
func checkResponder(r *ocsp.Response, t ocspTarget, path []*x509.Certificate, now time.Time) error {
	if r.Certificate == nil || r.Certificate.Equal(t.issuer) {
		return r.CheckSignatureFrom(t.issuer)
	}
	// RFC 6960 4.2.2.2: a delegated responder carries id-kp-OCSPSigning. (x509.Verify would let
	// a certificate without any extended key usage pass for every usage.)
	if !slices.Contains(r.Certificate.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("responder certificate is not for OCSP signing")
	}
	i := slices.Index(path, t.cert)
	if i < 0 || i+1 >= len(path) {
		return errors.New("certificate not in its path")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(path[len(path)-1])
	for _, c := range path[i+1 : len(path)-1] {
		inter.AddCert(c)
	}
	_, err := r.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
	return err
}

func cacheKey(t ocspTarget) []byte {
	h := sha256.Sum256(t.issuer.RawSubjectPublicKeyInfo)
	return append(h[:], t.cert.SerialNumber.Bytes()...)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
