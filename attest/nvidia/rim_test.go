package nvidia

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/beevik/etree"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/gpugate/gpugate/attest"
)

// rimSigner is a test RIM hierarchy of NVIDIA's shape: root → CA → signer.
type rimSigner struct {
	root, ca, leaf *x509.Certificate
	key            *ecdsa.PrivateKey
}

func newRIMSigner(t testing.TB, leafFrom, leafTo time.Time) *rimSigner {
	t.Helper()
	var s rimSigner
	var parent *x509.Certificate
	var parentKey *ecdsa.PrivateKey
	for i, name := range []string{"TEST CoRIM signing Root CA", "TEST Reference Value GH100 CA", "TEST RIM Signer"} {
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: name},
			NotBefore: tcFrom, NotAfter: tcTo, BasicConstraintsValid: true, IsCA: i < 2,
			KeyUsage: x509.KeyUsageCertSign}
		if i == 2 {
			tmpl.KeyUsage, tmpl.NotBefore, tmpl.NotAfter = x509.KeyUsageDigitalSignature, leafFrom, leafTo
		}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		parent, parentKey = c, k
		switch i {
		case 0:
			s.root = c
		case 1:
			s.ca = c
		case 2:
			s.leaf, s.key = c, k
		}
	}
	return &s
}

// rimEntry is one Resource of a test RIM: active with alternatives, or inactive.
type rimEntry struct {
	active bool
	alts   [][]byte
}

// sign returns a SWID-tag RIM in NVIDIA's layout for version with entries (by 0-based index),
// signed like NVIDIA's: enveloped XML-DSig, C14N 1.1, ECDSA-SHA384 as r‖s, chain in KeyInfo.
func (s *rimSigner) sign(t testing.TB, version string, entries map[int]rimEntry) []byte {
	t.Helper()
	doc := etree.NewDocument()
	si := doc.CreateElement("SoftwareIdentity")
	si.CreateAttr("xmlns", "http://standards.iso.org/iso/19770/-2/2015/schema.xsd")
	si.CreateAttr("xmlns:ns0", "http://standards.iso.org/iso/19770/-2/2015/schema.xsd")
	si.CreateAttr("xmlns:ns2", "http://www.w3.org/2001/04/xmlenc#sha384")
	for _, kv := range [][2]string{{"corpus", "false"}, {"name", "GH100"}, {"patch", "false"}, {"supplemental", "false"},
		{"tagId", hex.EncodeToString([]byte(version))}, {"version", "1.0"}, {"tagVersion", "0"}} {
		si.CreateAttr(kv[0], kv[1])
	}
	ent := si.CreateElement("ns0:Entity")
	ent.CreateAttr("name", "NVIDIA Corporation")
	ent.CreateAttr("role", "softwareCreator tagCreator")
	meta := si.CreateElement("ns0:Meta")
	meta.CreateAttr("xmlns:ns1", "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/")
	meta.CreateAttr("colloquialVersion", version)
	meta.CreateAttr("edition", "GPU")
	meta.CreateAttr("product", "GH100")
	meta.CreateAttr("ns1:BindingSpec", "RIMIM")
	payload := si.CreateElement("ns0:Payload")
	payload.CreateAttr("xmlns:SHA384", "http://www.w3.org/2001/04/xmlenc#sha384")
	n := 64
	for k := range entries {
		n = max(n, k+1)
	}
	for i := range n {
		e, ok := entries[i]
		r := payload.CreateElement("ns0:Resource")
		r.CreateAttr("type", "Measurement")
		r.CreateAttr("index", strconv.Itoa(i))
		r.CreateAttr("active", map[bool]string{true: "True", false: "False"}[ok && e.active])
		alts := e.alts
		if len(alts) == 0 {
			alts = [][]byte{make([]byte, 48)}
		}
		r.CreateAttr("alternatives", strconv.Itoa(len(alts)))
		for j, a := range alts {
			r.CreateAttr("ns2:Hash"+strconv.Itoa(j), hex.EncodeToString(a))
		}
		r.CreateAttr("name", fmt.Sprintf("Measurement_%d", i))
		r.CreateAttr("size", "48")
	}
	ctx, err := dsig.NewSigningContext(s.key, [][]byte{s.leaf.Raw, s.ca.Raw, s.root.Raw})
	if err != nil {
		t.Fatal(err)
	}
	ctx.Hash = crypto.SHA384
	ctx.Canonicalizer = dsig.MakeC14N11Canonicalizer()
	if err := ctx.SetSignatureMethod(dsig.ECDSASHA384SignatureMethod); err != nil {
		t.Fatal(err)
	}
	signed, err := ctx.SignEnveloped(si)
	if err != nil {
		t.Fatal(err)
	}
	// goxmldsig writes an ASN.1 ECDSA signature; NVIDIA's RIMs (and XML-DSig) carry r‖s.
	sv := signed.FindElement(".//SignatureValue")
	der, _ := base64.StdEncoding.DecodeString(sv.Text())
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 96)
	rs.R.FillBytes(raw[:48])
	rs.S.FillBytes(raw[48:])
	sv.SetText(base64.StdEncoding.EncodeToString(raw))
	out := etree.NewDocument()
	out.SetRoot(signed)
	b, err := out.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// simRIMs returns a driver RIM (indices 0..31) and a VBIOS RIM (32..63) matching the simulated
// firmware's measurements.
func simRIMs(t testing.TB, s *rimSigner, driver, vbios string) (drv, vb []byte) {
	ms := SimulatedMeasurements(driver, vbios)
	d, v := map[int]rimEntry{}, map[int]rimEntry{}
	for i, m := range ms {
		if i < 32 {
			d[i] = rimEntry{active: true, alts: [][]byte{m}}
		} else {
			v[i] = rimEntry{active: true, alts: [][]byte{m}}
		}
	}
	return s.sign(t, driver, d), s.sign(t, vbios, v)
}

func writeDir(t testing.TB, files map[string][]byte) string {
	dir := t.TempDir()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func simEvidence(t testing.TB, driver, vbios string) (Evidence, []byte) {
	g, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("rim test gpu"), DriverVersion: driver, VBIOSVersion: vbios})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := g.Evidence(testNonce(9))
	if err != nil {
		t.Fatal(err)
	}
	return ev, testNonce(9)
}

func TestRIMBundleMatches(t *testing.T) {
	s := newRIMSigner(t, tcFrom, tcTo)
	drv, vb := simRIMs(t, s, "550.90.07", "96.00.9F.00.01")
	dir := writeDir(t, map[string][]byte{"NV_GPU_DRIVER_GH100_550.90.07.swidtag": drv, "NV_GPU_VBIOS_SIM_96009F0001.swidtag": vb, "README.txt": []byte("ignored")})
	b, err := LoadRIMBundleWithRoots(dir, fixedClock(tcNow), []*x509.Certificate{s.root})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Files(); len(got) != 2 {
		t.Fatalf("files %v", got)
	}
	ev, nonce := simEvidence(t, "550.90.07", "96.00.9f.00.01")
	r := verifyWith(t, ev, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcNow)})
	if !r.OK() || !r.MeasurementsChecked {
		t.Fatalf("%+v", r)
	}
	// Other firmware: no RIM for it, so nothing is compared (and said so).
	ev2, _ := simEvidence(t, "560.35.03", "96.00.74.00.1c")
	if r := verifyWith(t, ev2, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcNow)}); !r.OK() || r.MeasurementsChecked {
		t.Fatalf("unknown firmware: %+v", r)
	}
	// The same driver with another VBIOS: the driver half matches, the VBIOS is unknown.
	ev3, _ := simEvidence(t, "550.90.07", "96.00.74.00.1c")
	// (The simulated measurements depend on both versions, so the driver half mismatches: a
	// certain failure even without the VBIOS RIM.)
	if r := verifyWith(t, ev3, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcNow)}); !hasReason(r, attest.ReasonCCMeasurementMismatch) || !r.MeasurementsChecked {
		t.Fatalf("half known: %+v", r)
	}
	// The RIM expired since the bundle was loaded: not used.
	if r := verifyWith(t, ev, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcTo.Add(time.Hour))}); !r.OK() || r.MeasurementsChecked {
		t.Fatalf("expired RIM: %+v", r)
	}
}

func TestRIMMismatchAndAlternatives(t *testing.T) {
	s := newRIMSigner(t, tcFrom, tcTo)
	ms := SimulatedMeasurements("550.90.07", "96.00.9f.00.01")
	ev, nonce := simEvidence(t, "550.90.07", "96.00.9f.00.01")
	load := func(drvEntries map[int]rimEntry) *RIMBundle {
		_, vb := simRIMs(t, s, "550.90.07", "96.00.9F.00.01")
		b, err := LoadRIMBundleWithRoots(writeDir(t, map[string][]byte{"d.swidtag": s.sign(t, "550.90.07", drvEntries), "v.xml": vb}),
			fixedClock(tcNow), []*x509.Certificate{s.root})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := bytes.Repeat([]byte{0xee}, 48)
	for _, tc := range []struct {
		name    string
		entries map[int]rimEntry
		ok      bool
	}{
		{"second alternative", map[int]rimEntry{3: {true, [][]byte{other, ms[3]}}}, true},
		{"inactive index differs", map[int]rimEntry{3: {true, [][]byte{ms[3]}}, 4: {false, [][]byte{other}}}, true},
		{"one value differs", map[int]rimEntry{3: {true, [][]byte{ms[3]}}, 4: {true, [][]byte{other}}}, false},
		{"index the report lacks", map[int]rimEntry{3: {true, [][]byte{ms[3]}}, 100: {true, [][]byte{other}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := verifyWith(t, ev, nonce, Options{TrustSimulation: true, RIMs: load(tc.entries), Now: fixedClock(tcNow)})
			if !r.MeasurementsChecked || r.OK() != tc.ok || (!tc.ok && !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCMeasurementMismatch})) {
				t.Fatalf("%+v", r)
			}
		})
	}
	// Only the VBIOS RIM, which mismatches: a certain mismatch. Which matches: unchecked.
	bad := map[int]rimEntry{40: {true, [][]byte{other}}}
	b, err := LoadRIMBundleWithRoots(writeDir(t, map[string][]byte{"v.swidtag": s.sign(t, "96.00.9F.00.01", bad)}), fixedClock(tcNow), []*x509.Certificate{s.root})
	if err != nil {
		t.Fatal(err)
	}
	if r := verifyWith(t, ev, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcNow)}); !hasReason(r, attest.ReasonCCMeasurementMismatch) {
		t.Fatalf("VBIOS only, mismatching: %+v", r)
	}
	good := map[int]rimEntry{40: {true, [][]byte{ms[40]}}}
	b, _ = LoadRIMBundleWithRoots(writeDir(t, map[string][]byte{"v.swidtag": s.sign(t, "96.00.9F.00.01", good)}), fixedClock(tcNow), []*x509.Certificate{s.root})
	if r := verifyWith(t, ev, nonce, Options{TrustSimulation: true, RIMs: b, Now: fixedClock(tcNow)}); !r.OK() || r.MeasurementsChecked {
		t.Fatalf("VBIOS only, matching: %+v", r)
	}
}

func TestRIMBundleRejects(t *testing.T) {
	s := newRIMSigner(t, tcFrom, tcTo)
	drv, _ := simRIMs(t, s, "550.90.07", "96.00.9F.00.01")
	roots := []*x509.Certificate{s.root}
	load := func(b []byte, now time.Time, roots []*x509.Certificate) error {
		_, err := LoadRIMBundleWithRoots(writeDir(t, map[string][]byte{"r.swidtag": b}), fixedClock(now), roots)
		return err
	}
	if err := load(drv, tcNow, roots); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	// A changed reference value (signed content), flipped hex digit by hex digit in one hash.
	i := bytes.Index(drv, []byte(`index="5"`))
	j := i + bytes.Index(drv[i:], []byte(`Hash0="`)) + len(`Hash0="`)
	for k := j; k < j+96; k += 7 {
		bad := slices.Clone(drv)
		bad[k] = map[bool]byte{true: 'a', false: '0'}[bad[k] == '0']
		if err := load(bad, tcNow, roots); !errors.Is(err, ErrRIM) {
			t.Fatalf("hash digit %d changed: %v", k-j, err)
		}
	}
	// The version (what the RIM is looked up by) changed.
	if err := load(bytes.Replace(drv, []byte(`colloquialVersion="550.90.07"`), []byte(`colloquialVersion="550.90.08"`), 1), tcNow, roots); !errors.Is(err, ErrRIM) {
		t.Fatalf("version changed: %v", err)
	}
	// A flipped signature byte.
	sv := bytes.Index(drv, []byte("<ds:SignatureValue>")) + len("<ds:SignatureValue>")
	bad := slices.Clone(drv)
	bad[sv+10] ^= 0x01
	if err := load(bad, tcNow, roots); !errors.Is(err, ErrRIM) {
		t.Fatalf("signature changed: %v", err)
	}
	// Another root: NVIDIA's (the default) or a stranger's.
	if _, err := LoadRIMBundle(writeDir(t, map[string][]byte{"r.swidtag": drv}), fixedClock(tcNow)); !errors.Is(err, ErrRIM) {
		t.Fatalf("under NVIDIA's root: %v", err)
	}
	if err := load(drv, tcNow, []*x509.Certificate{newRIMSigner(t, tcFrom, tcTo).root}); !errors.Is(err, ErrRIM) {
		t.Fatalf("another root: %v", err)
	}
	// Outside the signer's validity.
	short := newRIMSigner(t, tcNow.Add(-time.Hour), tcNow.Add(time.Hour))
	sd, _ := simRIMs(t, short, "550.90.07", "96.00.9F.00.01")
	if err := load(sd, tcNow.Add(2*time.Hour), []*x509.Certificate{short.root}); !errors.Is(err, ErrRIM) {
		t.Fatalf("expired signer: %v", err)
	}
	if err := load(sd, tcNow.Add(-2*time.Hour), []*x509.Certificate{short.root}); !errors.Is(err, ErrRIM) {
		t.Fatalf("not yet valid signer: %v", err)
	}
	// Unsigned, not XML, empty directory.
	unsigned := drv[:bytes.Index(drv, []byte("<ds:Signature"))]
	unsigned = append(slices.Clone(unsigned), "</SoftwareIdentity>"...)
	for name, b := range map[string][]byte{"unsigned": unsigned, "not XML": []byte("{}"), "empty": nil} {
		if err := load(b, tcNow, roots); !errors.Is(err, ErrRIM) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := LoadRIMBundleWithRoots(t.TempDir(), fixedClock(tcNow), roots); !errors.Is(err, ErrRIM) {
		t.Errorf("empty directory: %v", err)
	}
	if _, err := LoadRIMBundleWithRoots(filepath.Join(t.TempDir(), "missing"), fixedClock(tcNow), roots); !errors.Is(err, ErrRIM) {
		t.Errorf("missing directory: %v", err)
	}
	// A second signed SoftwareIdentity wrapped around a genuine signature: only the verified
	// element counts, so the outer one's values are never read.
	wrapped := append([]byte(`<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd"><Meta colloquialVersion="550.90.07"/><Payload/>`), drv...)
	wrapped = append(wrapped, "</SoftwareIdentity>"...)
	if err := load(wrapped, tcNow, roots); !errors.Is(err, ErrRIM) {
		t.Errorf("wrapped: %v", err)
	}
}

func TestFixtureAgainstForeignRIMs(t *testing.T) {
	ev, nonce := loadFixture(t)
	s := newRIMSigner(t, tcFrom, tcTo)
	drv, vb := simRIMs(t, s, "550.90.07", "96.00.9F.00.01")
	b, err := LoadRIMBundleWithRoots(writeDir(t, map[string][]byte{"d.swidtag": drv, "v.swidtag": vb}), fixedClock(tcNow), []*x509.Certificate{s.root})
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's driver and VBIOS versions are 550.90.07 and 96.00.9f.00.01, but these RIMs
	// hold the simulation's values for them: the real GPU's measurements mismatch.
	r := New(Options{Now: fixedClock(fixtureTime), RIMs: b}).Verify(context.Background(), ev, nonce)
	if !hasReason(r, attest.ReasonCCMeasurementMismatch) || !r.MeasurementsChecked {
		t.Fatalf("%+v", r)
	}
}
