package nvidia

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
)

// testChain is a chain of NVIDIA's shape (leaf, per-device "BROM", ICA, identity, root) made in
// the test with fresh keys; tweak adjusts certificate i's template (0 = leaf) before signing.
type testChain struct {
	keys  [5]*ecdsa.PrivateKey
	certs [5]*x509.Certificate
	fwid  []byte
}

var (
	tcFrom = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tcTo   = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tcNow  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func newTestChain(t testing.TB, tweak func(i int, tmpl *x509.Certificate)) *testChain {
	t.Helper()
	tc := &testChain{fwid: bytes.Repeat([]byte{0xf1}, 48)}
	names := []string{"TEST GSP FMC LF", "TEST GSP BROM", "TEST Provisioner ICA 1", "TEST GH100 Identity", "TEST Device Identity CA"}
	for i := 4; i >= 0; i-- {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tc.keys[i] = k
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(1000 + i)), Subject: pkix.Name{CommonName: names[i], Organization: []string{"gpugate test"}},
			NotBefore: tcFrom, NotAfter: tcTo, SignatureAlgorithm: x509.ECDSAWithSHA384,
		}
		if i == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			ext, err := diceExtension(&k.PublicKey, tc.fwid)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.ExtraExtensions = []pkix.Extension{ext}
		} else {
			tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
		if tweak != nil {
			tweak(i, tmpl)
		}
		parent, signer := tmpl, k
		if i < 4 {
			parent, signer = tc.certs[i+1], tc.keys[i+1]
		}
		var pub any = &k.PublicKey
		if pk, ok := tmpl.PublicKey.(*ecdsa.PublicKey); ok { // a tweak may substitute the key
			pub = pk
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		if tc.certs[i], err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	}
	return tc
}

func (tc *testChain) pem(certs ...*x509.Certificate) []byte {
	if certs == nil {
		certs = tc.certs[:]
	}
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// gpu returns a simulated GPU signing with the test chain's leaf key.
func (tc *testChain) gpu(t testing.TB) *SimulatedGPU {
	t.Helper()
	vb, _ := encodeVBIOS("96.00.9f.00.01")
	return &SimulatedGPU{leafKey: tc.keys[0], chain: tc.pem(), driver: "550.90.07", vbios: vb, fwid: tc.fwid,
		measurements: SimulatedMeasurements("550.90.07", "96.00.9f.00.01")}
}

func testNonce(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func verifyWith(t testing.TB, ev Evidence, nonce []byte, opts Options) Result {
	t.Helper()
	return New(opts).Verify(context.Background(), ev, nonce)
}

func TestTestCAChain(t *testing.T) {
	tc := newTestChain(t, nil)
	ev, err := tc.gpu(t).Evidence(testNonce(1))
	if err != nil {
		t.Fatal(err)
	}
	// Another root than NVIDIA's (or the simulation CA) is not trusted...
	if r := verifyWith(t, ev, testNonce(1), Options{Now: fixedClock(tcNow), TrustSimulation: true}); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCChainUntrusted}) {
		t.Fatalf("unpinned root: %v", r.Reasons)
	}
	// ...unless configured.
	r := verifyWith(t, ev, testNonce(1), Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{tc.certs[4]}})
	if !r.OK() || r.Root != RootConfigured || len(r.CertificateSerials) != 5 || r.CertificateSerials[0] != "3E8" {
		t.Fatalf("configured root: %+v", r)
	}
	// The NVIDIA fixture does not verify under the configured root only... it still does under
	// the pinned NVIDIA root, whatever else is configured.
	fev, fnonce := loadFixture(t)
	if r := verifyWith(t, fev, fnonce, Options{Now: fixedClock(fixtureTime), ExtraRoots: []*x509.Certificate{tc.certs[4]}}); !r.OK() || r.Root != RootNVIDIA {
		t.Fatalf("fixture with extra root: %+v", r)
	}
	// A chain that claims NVIDIA's root (same names) but is signed by another key.
	fake := newTestChain(t, func(i int, tmpl *x509.Certificate) {
		if i == 4 {
			tmpl.Subject = nvidiaDeviceRoot.Subject
			tmpl.SubjectKeyId = nvidiaDeviceRoot.SubjectKeyId
		}
	})
	fevFake, _ := fake.gpu(t).Evidence(testNonce(1))
	if r := verifyWith(t, fevFake, testNonce(1), Options{Now: fixedClock(tcNow)}); !hasReason(r, attest.ReasonCCChainUntrusted) {
		t.Fatalf("fake NVIDIA root: %v", r.Reasons)
	}
	// Without the root in the chain, the fake leads nowhere either.
	fevFake.Chain = fake.pem(fake.certs[:4]...)
	if r := verifyWith(t, fevFake, testNonce(1), Options{Now: fixedClock(tcNow)}); !hasReason(r, attest.ReasonCCChainUntrusted) {
		t.Fatalf("fake NVIDIA root, omitted: %v", r.Reasons)
	}
}

func TestTestCAValidity(t *testing.T) {
	for _, tc := range []struct {
		name string
		cert int
		from time.Time
		to   time.Time
		want attest.Reason
	}{
		{"leaf expired", 0, tcFrom, tcNow.Add(-time.Second), attest.ReasonCCCertExpired},
		{"ICA expired", 2, tcFrom, tcNow.Add(-time.Hour), attest.ReasonCCCertExpired},
		{"root expired", 4, tcFrom, tcNow.Add(-time.Hour), attest.ReasonCCCertExpired},
		{"leaf not yet valid", 0, tcNow.Add(time.Second), tcTo, attest.ReasonCCCertNotYetValid},
		{"identity not yet valid", 3, tcNow.Add(time.Hour), tcTo, attest.ReasonCCCertNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := newTestChain(t, func(i int, tmpl *x509.Certificate) {
				if i == tc.cert {
					tmpl.NotBefore, tmpl.NotAfter = tc.from, tc.to
				}
			})
			ev, _ := ch.gpu(t).Evidence(testNonce(2))
			opts := Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}}
			if r := verifyWith(t, ev, testNonce(2), opts); !slices.Equal(r.Reasons, []attest.Reason{tc.want}) {
				t.Fatalf("%v, want %s", r.Reasons, tc.want)
			}
			// The root omitted from the chain: the pinned/configured copy is checked as well.
			ev.Chain = ch.pem(ch.certs[:4]...)
			if r := verifyWith(t, ev, testNonce(2), opts); !slices.Equal(r.Reasons, []attest.Reason{tc.want}) {
				t.Fatalf("without root: %v, want %s", r.Reasons, tc.want)
			}
		})
	}
}

// TestChainCacheFollowsClock: a cached chain is not used outside its validity.
func TestChainCacheFollowsClock(t *testing.T) {
	ch := newTestChain(t, func(i int, tmpl *x509.Certificate) {
		if i == 2 {
			tmpl.NotAfter = tcNow.Add(time.Hour)
		}
	})
	ev, _ := ch.gpu(t).Evidence(testNonce(3))
	now := tcNow
	v := New(Options{Now: func() time.Time { return now }, ExtraRoots: []*x509.Certificate{ch.certs[4]}})
	if r := v.Verify(context.Background(), ev, testNonce(3)); !r.OK() {
		t.Fatal(r.Reasons)
	}
	if v.chains.Len() != 1 {
		t.Fatalf("cache holds %d chains", v.chains.Len())
	}
	now = tcNow.Add(2 * time.Hour)
	if r := v.Verify(context.Background(), ev, testNonce(3)); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCCertExpired}) {
		t.Fatalf("after the ICA expired: %v", r.Reasons)
	}
	now = tcFrom.Add(-time.Hour)
	if r := v.Verify(context.Background(), ev, testNonce(3)); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCCertNotYetValid}) {
		t.Fatalf("before validity: %v", r.Reasons)
	}
	// The report signature is verified on every call, cached chain or not.
	now = tcNow
	bad := slices.Clone(ev.Report)
	bad[60] ^= 1 // inside measurement block 1
	if r := v.Verify(context.Background(), Evidence{Report: bad, Chain: ev.Chain}, testNonce(3)); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCSignatureInvalid}) {
		t.Fatalf("tampered report with cached chain: %v", r.Reasons)
	}
}

func TestTestCAShapes(t *testing.T) {
	opts := func(ch *testChain) Options {
		return Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{ch.certs[4]}}
	}
	t.Run("leaf without FWID", func(t *testing.T) {
		ch := newTestChain(t, func(i int, tmpl *x509.Certificate) {
			if i == 0 {
				tmpl.ExtraExtensions = nil
			}
		})
		ev, _ := ch.gpu(t).Evidence(testNonce(4))
		if r := verifyWith(t, ev, testNonce(4), opts(ch)); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCIdentityMismatch}) {
			t.Fatal(r.Reasons)
		}
	})
	t.Run("report FWID differs", func(t *testing.T) {
		ch := newTestChain(t, nil)
		g := ch.gpu(t)
		g.fwid = bytes.Repeat([]byte{0xf2}, 48)
		ev, _ := g.Evidence(testNonce(4))
		if r := verifyWith(t, ev, testNonce(4), opts(ch)); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCIdentityMismatch}) {
			t.Fatal(r.Reasons)
		}
	})
	t.Run("intermediate not a CA", func(t *testing.T) {
		ch := newTestChain(t, func(i int, tmpl *x509.Certificate) {
			if i == 2 {
				tmpl.IsCA = false
				tmpl.BasicConstraintsValid = false
				tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			}
		})
		ev, _ := ch.gpu(t).Evidence(testNonce(4))
		if r := verifyWith(t, ev, testNonce(4), opts(ch)); !hasReason(r, attest.ReasonCCChainUntrusted) {
			t.Fatal(r.Reasons)
		}
	})
	t.Run("leaf key P-256", func(t *testing.T) {
		k256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ch := newTestChain(t, func(i int, tmpl *x509.Certificate) {
			if i == 0 {
				tmpl.PublicKey = &k256.PublicKey
			}
		})
		ev, _ := ch.gpu(t).Evidence(testNonce(4))
		if r := verifyWith(t, ev, testNonce(4), opts(ch)); r.OK() {
			t.Fatal("P-256 leaf verified")
		}
	})
	t.Run("order", func(t *testing.T) {
		ch := newTestChain(t, nil)
		ev, _ := ch.gpu(t).Evidence(testNonce(4))
		c := ch.certs
		for _, order := range [][]*x509.Certificate{
			{c[0], c[2], c[1], c[3], c[4]},
			{c[0], c[1], c[2], c[3], c[4], c[4]},
			{c[1], c[2], c[3], c[4]},
			{c[0], c[1], c[3], c[4]},
		} {
			ev.Chain = ch.pem(order...)
			if r := verifyWith(t, ev, testNonce(4), opts(ch)); r.OK() {
				t.Fatalf("order %v verified", order)
			}
		}
	})
	t.Run("leaf signed by another device", func(t *testing.T) {
		a, b := newTestChain(t, nil), newTestChain(t, nil)
		// b's leaf presented with a's device certificate: a mix of two GPUs.
		ev, _ := b.gpu(t).Evidence(testNonce(4))
		ev.Chain = a.pem(b.certs[0], a.certs[1], a.certs[2], a.certs[3], a.certs[4])
		if r := verifyWith(t, ev, testNonce(4), Options{Now: fixedClock(tcNow), ExtraRoots: []*x509.Certificate{a.certs[4], b.certs[4]}}); !hasReason(r, attest.ReasonCCChainUntrusted) {
			t.Fatal(r.Reasons)
		}
	})
	t.Run("hardware id ignores leaf", func(t *testing.T) {
		// Two leaves (two firmware versions) under one device certificate: one HardwareID.
		ch := newTestChain(t, nil)
		ev, _ := ch.gpu(t).Evidence(testNonce(4))
		r1 := verifyWith(t, ev, testNonce(4), opts(ch))
		k2, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		fwid2 := bytes.Repeat([]byte{0xf3}, 48)
		ext, _ := diceExtension(&k2.PublicKey, fwid2)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "TEST GSP FMC LF 2"},
			NotBefore: tcFrom, NotAfter: tcTo, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtraExtensions: []pkix.Extension{ext},
		}, ch.certs[1], &k2.PublicKey, ch.keys[1])
		if err != nil {
			t.Fatal(err)
		}
		leaf2, _ := x509.ParseCertificate(der)
		g := ch.gpu(t)
		g.leafKey, g.fwid, g.chain = k2, fwid2, ch.pem(leaf2, ch.certs[1], ch.certs[2], ch.certs[3], ch.certs[4])
		ev2, _ := g.Evidence(testNonce(4))
		r2 := verifyWith(t, ev2, testNonce(4), opts(ch))
		if !r1.OK() || !r2.OK() || r1.HardwareID != r2.HardwareID || r1.CertificateSerials[0] == r2.CertificateSerials[0] {
			t.Fatalf("%+v\n%+v", r1, r2)
		}
	})
}

// TestFixtureFlippedCertificateBytes flips every byte of every certificate's DER in the fixture
// chain (each certificate is one signed object, and the root must be the pinned one).
func TestFixtureFlippedCertificateBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("flips about 4,000 bytes")
	}
	ev, nonce := loadFixture(t)
	certs, err := ParseChain(ev.Chain)
	if err != nil {
		t.Fatal(err)
	}
	v := New(Options{Now: fixedClock(fixtureTime)})
	for ci, c := range certs {
		for i := range c.Raw {
			der := slices.Clone(c.Raw)
			der[i] ^= 0x01
			var chain bytes.Buffer
			for cj, other := range certs {
				b := other.Raw
				if cj == ci {
					b = der
				}
				_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: b})
			}
			if r := v.Verify(context.Background(), Evidence{Report: ev.Report, Chain: chain.Bytes()}, nonce); r.OK() {
				t.Fatalf("certificate %d byte %d flipped: verified", ci, i)
			}
		}
	}
}
