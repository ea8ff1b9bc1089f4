package nvidia

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/gpugate/gpugate/attest"
)

// ocspResponder is an in-process OCSP responder for a test chain: it answers for the
// certificate of the requested serial, signed by that certificate's issuer (or by a delegated
// responder), with the status and times the test sets.
type ocspResponder struct {
	ch       *testChain
	mu       sync.Mutex
	status   map[string]int // serial (hex) → ocsp.Good/Revoked/Unknown; default Good
	signWith *ecdsa.PrivateKey
	delegate *x509.Certificate
	next     time.Duration // NextUpdate - ThisUpdate; 0: none
	this     time.Time
	requests atomic.Int32
	fail     bool
}

func (o *ocspResponder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	body, _ := io.ReadAll(r.Body)
	req, err := ocsp.ParseRequest(body)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil || o.fail {
		http.Error(w, "no", http.StatusInternalServerError)
		return
	}
	for i, c := range o.ch.certs[:4] {
		if c.SerialNumber.Cmp(req.SerialNumber) != 0 {
			continue
		}
		st, ok := o.status[c.SerialNumber.Text(16)]
		if !ok {
			st = ocsp.Good
		}
		tmpl := ocsp.Response{Status: st, SerialNumber: c.SerialNumber, ThisUpdate: o.this, RevokedAt: o.this.Add(-time.Hour)}
		if o.next != 0 {
			tmpl.NextUpdate = o.this.Add(o.next)
		}
		issuer, key := o.ch.certs[i+1], o.ch.keys[i+1]
		var responder *x509.Certificate = issuer
		if o.signWith != nil {
			key = o.signWith
		}
		if o.delegate != nil {
			responder = o.delegate
			tmpl.Certificate = o.delegate // embedded in the response
		}
		resp, err := ocsp.CreateResponse(issuer, responder, tmpl, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(resp)
		return
	}
	http.Error(w, "unknown serial", http.StatusNotFound)
}

func newOCSPFixture(t *testing.T) (*testChain, *ocspResponder, *OCSPChecker, Evidence) {
	ch := newTestChain(t, nil)
	o := &ocspResponder{ch: ch, status: map[string]int{}, this: tcNow.Add(-time.Minute), next: 12 * time.Hour}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	c, err := NewOCSPChecker(OCSPOptions{URL: srv.URL, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ch.gpu(t).Evidence(testNonce(5))
	if err != nil {
		t.Fatal(err)
	}
	return ch, o, c, ev
}

func TestOCSPGoodRevokedAndCached(t *testing.T) {
	ch, o, c, ev := newOCSPFixture(t)
	now := tcNow
	v := New(Options{Now: func() time.Time { return now }, ExtraRoots: []*x509.Certificate{ch.certs[4]}, Revocation: c})
	r := v.Verify(context.Background(), ev, testNonce(5))
	if !r.OK() || !r.RevocationChecked {
		t.Fatalf("all good: %+v", r)
	}
	// The device, ICA and identity certificates are asked about; not the leaf, not the root.
	if n := o.requests.Load(); n != 3 {
		t.Fatalf("%d OCSP requests, want 3", n)
	}
	// Cached: no new requests until the answers' nextUpdate.
	if r := v.Verify(context.Background(), ev, testNonce(5)); !r.OK() || !r.RevocationChecked || o.requests.Load() != 3 {
		t.Fatalf("cached: %+v after %d requests", r, o.requests.Load())
	}
	// After nextUpdate the responder is asked again, and now says the device cert is revoked.
	o.mu.Lock()
	o.status[ch.certs[1].SerialNumber.Text(16)] = ocsp.Revoked
	o.this = tcNow.Add(13 * time.Hour)
	o.mu.Unlock()
	now = tcNow.Add(13 * time.Hour)
	r = v.Verify(context.Background(), ev, testNonce(5))
	if !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCCertRevoked}) || !r.RevocationChecked || r.HardwareID != "" {
		t.Fatalf("revoked: %+v", r)
	}
}

func TestOCSPRevokedIntermediate(t *testing.T) {
	for _, idx := range []int{1, 2, 3} {
		ch, o, c, ev := newOCSPFixture(t)
		o.status[ch.certs[idx].SerialNumber.Text(16)] = ocsp.Revoked
		r := New(Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}, Revocation: c}).Verify(context.Background(), ev, testNonce(5))
		if !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCCertRevoked}) {
			t.Fatalf("certificate %d revoked: %+v", idx, r)
		}
	}
}

func TestOCSPUncheckable(t *testing.T) {
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name string
		set  func(o *ocspResponder)
	}{
		{"responder error", func(o *ocspResponder) { o.fail = true }},
		{"status unknown", func(o *ocspResponder) { o.status[o.ch.certs[2].SerialNumber.Text(16)] = ocsp.Unknown }},
		{"stale answer", func(o *ocspResponder) { o.this, o.next = tcNow.Add(-48*time.Hour), time.Hour }},
		{"answer from the future", func(o *ocspResponder) { o.this = tcNow.Add(time.Hour) }},
		{"signed by another key", func(o *ocspResponder) { o.signWith = otherKey }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, o, c, ev := newOCSPFixture(t)
			tc.set(o)
			r := New(Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}, Revocation: c}).Verify(context.Background(), ev, testNonce(5))
			if !r.OK() || r.RevocationChecked {
				t.Fatalf("%+v", r)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		ch := newTestChain(t, nil)
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c, _ := NewOCSPChecker(OCSPOptions{URL: url, Timeout: time.Second})
		ev, _ := ch.gpu(t).Evidence(testNonce(5))
		r := New(Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}, Revocation: c}).Verify(context.Background(), ev, testNonce(5))
		if !r.OK() || r.RevocationChecked {
			t.Fatalf("%+v", r)
		}
	})
	// No responder configured: nothing claimed.
	ch, _, _, ev := newOCSPFixture(t)
	if r := New(Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}}).Verify(context.Background(), ev, testNonce(5)); !r.OK() || r.RevocationChecked {
		t.Fatalf("no responder: %+v", r)
	}
}

// TestOCSPDelegatedResponder: a responder certificate for OCSP signing issued above every
// certificate asked about (here by the root) is accepted; one without the OCSP-signing usage,
// or issued by a certificate of the path itself (the identity CA answering for itself, or a GPU's
// device key answering for its CAs), is not.
func TestOCSPDelegatedResponder(t *testing.T) {
	for _, tc := range []struct {
		issuer  int
		withEKU bool
		checked bool
	}{{4, true, true}, {4, false, false}, {3, true, false}, {1, true, false}} {
		ch, o, c, ev := newOCSPFixture(t)
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(999), Subject: pkix.Name{CommonName: "TEST OCSP responder"},
			NotBefore: tcFrom, NotAfter: tcTo, KeyUsage: x509.KeyUsageDigitalSignature}
		if tc.withEKU {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ch.certs[tc.issuer], &k.PublicKey, ch.keys[tc.issuer])
		if err != nil {
			t.Fatal(err)
		}
		o.delegate, _ = x509.ParseCertificate(der)
		o.signWith = k
		r := New(Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}, Revocation: c}).Verify(context.Background(), ev, testNonce(5))
		if !r.OK() || r.RevocationChecked != tc.checked {
			t.Fatalf("%+v: %+v", tc, r)
		}
	}
}

func TestOCSPCheckerURL(t *testing.T) {
	for _, u := range []string{"", "ocsp.ndis.nvidia.com", "ftp://x", "http://"} {
		if _, err := NewOCSPChecker(OCSPOptions{URL: u}); !errors.Is(err, ErrOCSPURL) {
			t.Errorf("%q: %v", u, err)
		}
	}
}
