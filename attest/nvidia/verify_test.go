package nvidia

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/pem"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
)

// fixtureTime is inside every fixture certificate's validity (the ICA's starts 2022-03-01).
var fixtureTime = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func loadFixture(t testing.TB) (Evidence, []byte) {
	t.Helper()
	h, err := os.ReadFile("testdata/hopper-attestation-report.hex")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := os.ReadFile("testdata/hopper-cert-chain.pem")
	if err != nil {
		t.Fatal(err)
	}
	return Evidence{Report: rep, Chain: chain}, slices.Clone(rep[4:36])
}

func hasReason(r Result, want attest.Reason) bool { return slices.Contains(r.Reasons, want) }

func TestFixtureVerifies(t *testing.T) {
	ev, nonce := loadFixture(t)
	v := New(Options{Now: fixedClock(fixtureTime)})
	r := v.Verify(context.Background(), ev, nonce)
	if !r.OK() {
		t.Fatalf("reasons %v", r.Reasons)
	}
	if r.Root != RootNVIDIA {
		t.Errorf("root %q", r.Root)
	}
	if r.DriverVersion != "550.90.07" || r.VBIOSVersion != "96.00.9f.00.01" {
		t.Errorf("driver %q vbios %q", r.DriverVersion, r.VBIOSVersion)
	}
	want := []string{"53C22BA15E5D68088282DA074ED9FB37AA585771", "41431D480FE5E87274", "6AFE7184F92232C8DF7B242261776E56", "4C255EDE3BD001BF3F4A3B605FCA898A", "2D3670B1CA100411C1FEC0E82A065B54"}
	if !slices.Equal(r.CertificateSerials, want) {
		t.Errorf("serials %v", r.CertificateSerials)
	}
	if len(r.HardwareID) != 64 {
		t.Errorf("hardware id %q", r.HardwareID)
	}
	if r.MeasurementsChecked || r.RevocationChecked {
		t.Errorf("checked measurements/revocation without a bundle/responder: %+v", r)
	}
	// Again, from the chain cache: the same facts.
	if r2 := v.Verify(context.Background(), ev, nonce); !r2.OK() || r2.HardwareID != r.HardwareID {
		t.Fatalf("cached: %+v", r2)
	}
}

func TestFixtureDERChainVerifies(t *testing.T) {
	ev, nonce := loadFixture(t)
	var der []byte
	for rest := ev.Chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		der = append(der, b.Bytes...)
	}
	ev.Chain = der
	if r := New(Options{Now: fixedClock(fixtureTime)}).Verify(context.Background(), ev, nonce); !r.OK() {
		t.Fatalf("reasons %v", r.Reasons)
	}
}

func TestFixtureOtherNonce(t *testing.T) {
	ev, nonce := loadFixture(t)
	v := New(Options{Now: fixedClock(fixtureTime)})
	other := slices.Clone(nonce)
	other[0] ^= 1
	for _, n := range [][]byte{other, nil, nonce[:31], append(slices.Clone(nonce), 0)} {
		if r := v.Verify(context.Background(), ev, n); !hasReason(r, attest.ReasonCCNonceMismatch) || r.HardwareID != "" {
			t.Errorf("nonce %x: %+v", n, r)
		}
	}
}

func TestFixtureFlippedReportBytes(t *testing.T) {
	ev, nonce := loadFixture(t)
	v := New(Options{Now: fixedClock(fixtureTime)})
	for i := range ev.Report {
		bad := slices.Clone(ev.Report)
		bad[i] ^= 0x01
		n := nonce
		if i >= 4 && i < 36 { // the nonce itself: expect the flipped one, still must fail
			n = bad[4:36]
		}
		r := v.Verify(context.Background(), Evidence{Report: bad, Chain: ev.Chain}, n)
		if r.OK() || r.HardwareID != "" {
			t.Fatalf("byte %d flipped: verified", i)
		}
	}
}

func TestFixtureClock(t *testing.T) {
	ev, nonce := loadFixture(t)
	for _, tc := range []struct {
		at   time.Time
		want attest.Reason
	}{
		{time.Date(2022, 2, 1, 0, 0, 0, 0, time.UTC), attest.ReasonCCCertNotYetValid},
		{time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), attest.ReasonCCCertNotYetValid},
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), attest.ReasonCCCertExpired},
	} {
		r := New(Options{Now: fixedClock(tc.at)}).Verify(context.Background(), ev, nonce)
		if !hasReason(r, tc.want) {
			t.Errorf("at %v: %v, want %s", tc.at, r.Reasons, tc.want)
		}
	}
}

func TestFixtureNotTrustedWithoutRoot(t *testing.T) {
	ev, nonce := loadFixture(t)
	// The chain without its root verifies as well (the root is pinned, not taken from the chain).
	certs := strings.SplitAfter(string(ev.Chain), "-----END CERTIFICATE-----")
	short := Evidence{Report: ev.Report, Chain: []byte(strings.Join(certs[:4], ""))}
	if r := New(Options{Now: fixedClock(fixtureTime)}).Verify(context.Background(), short, nonce); !r.OK() {
		t.Fatalf("chain without root: %v", r.Reasons)
	}
}

func TestSizeLimits(t *testing.T) {
	ev, nonce := loadFixture(t)
	v := New(Options{Now: fixedClock(fixtureTime)})
	big := append(slices.Clone(ev.Report), make([]byte, 16<<10)...)
	if r := v.Verify(context.Background(), Evidence{Report: big, Chain: ev.Chain}, nonce); !hasReason(r, attest.ReasonCCEvidenceMalformed) {
		t.Errorf("big report: %v", r.Reasons)
	}
	nine := bytes.Repeat(ev.Chain[:bytes.Index(ev.Chain, []byte("-----END CERTIFICATE-----"))+26], 9)
	if len(nine) > 16<<10 {
		t.Fatalf("test chain too big: %d", len(nine))
	}
	if r := v.Verify(context.Background(), Evidence{Report: ev.Report, Chain: nine}, nonce); !hasReason(r, attest.ReasonCCEvidenceMalformed) {
		t.Errorf("9 certs: %v", r.Reasons)
	}
	if r := v.Verify(context.Background(), Evidence{Report: ev.Report, Chain: append(slices.Clone(ev.Chain), make([]byte, 16<<10)...)}, nonce); !hasReason(r, attest.ReasonCCEvidenceMalformed) {
		t.Errorf("big chain: %v", r.Reasons)
	}
	for _, c := range [][]byte{nil, []byte("junk"), ev.Chain[:100], append(slices.Clone(ev.Chain), "trailing"...)} {
		if r := v.Verify(context.Background(), Evidence{Report: ev.Report, Chain: c}, nonce); !hasReason(r, attest.ReasonCCEvidenceMalformed) {
			t.Errorf("chain %q: %v", c, r.Reasons)
		}
	}
	for _, rep := range [][]byte{nil, ev.Report[:40], ev.Report[:len(ev.Report)-1], append(slices.Clone(ev.Report), 0)} {
		if r := v.Verify(context.Background(), Evidence{Report: rep, Chain: ev.Chain}, nonce); !hasReason(r, attest.ReasonCCEvidenceMalformed) {
			t.Errorf("report of %d bytes: %v", len(rep), r.Reasons)
		}
	}
}

func TestSimulatedGPU(t *testing.T) {
	g, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("gpu-0 uuid + host key")})
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{7}, 32)
	ev, err := g.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{TrustSimulation: true}).Verify(context.Background(), ev, nonce)
	if !r.OK() || r.Root != RootSimulation || r.HardwareID == "" {
		t.Fatalf("trusted simulation: %+v", r)
	}
	if r.DriverVersion != "550.90.07" || r.VBIOSVersion != "96.00.9f.00.01" || len(r.CertificateSerials) != 5 {
		t.Errorf("facts %+v", r)
	}
	if r := New(Options{}).Verify(context.Background(), ev, nonce); !hasReason(r, attest.ReasonCCChainUntrusted) || r.Root != "" {
		t.Fatalf("untrusted simulation: %+v", r)
	}
	// The same seed is the same GPU (across restarts); another seed is another GPU.
	g2, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("gpu-0 uuid + host key"), VBIOSVersion: "96.00.74.00.1c", DriverVersion: "560.35.03"})
	if err != nil {
		t.Fatal(err)
	}
	ev2, _ := g2.Evidence(nonce)
	r2 := New(Options{TrustSimulation: true}).Verify(context.Background(), ev2, nonce)
	if !r2.OK() || r2.HardwareID != r.HardwareID || r2.VBIOSVersion != "96.00.74.00.1c" || r2.DriverVersion != "560.35.03" {
		t.Fatalf("same seed, new firmware: %+v vs %+v", r2, r)
	}
	g3, _ := NewSimulatedGPU(SimulationOptions{Seed: []byte("gpu-1")})
	ev3, _ := g3.Evidence(nonce)
	r3 := New(Options{TrustSimulation: true}).Verify(context.Background(), ev3, nonce)
	if !r3.OK() || r3.HardwareID == r.HardwareID {
		t.Fatalf("other seed: %+v", r3)
	}
	// GPU 1's chain with GPU 0's report (same firmware, so the same FWID): the leaf key is the
	// per-GPU binding, and it did not sign this report.
	if r := New(Options{TrustSimulation: true}).Verify(context.Background(), Evidence{Report: ev.Report, Chain: ev3.Chain}, nonce); !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCSignatureInvalid}) || r.HardwareID != "" {
		t.Fatalf("swapped chain: %+v", r)
	}
	// The same GPU's chain for other firmware: the FWIDs differ as well.
	if r := New(Options{TrustSimulation: true}).Verify(context.Background(), Evidence{Report: ev.Report, Chain: ev2.Chain}, nonce); !hasReason(r, attest.ReasonCCIdentityMismatch) || !hasReason(r, attest.ReasonCCSignatureInvalid) {
		t.Fatalf("other firmware's chain: %v", r.Reasons)
	}
	if _, err := g.Evidence(nonce[:31]); err == nil {
		t.Error("short nonce accepted")
	}
	if _, err := NewSimulatedGPU(SimulationOptions{}); err == nil {
		t.Error("empty seed accepted")
	}
	if _, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("x"), VBIOSVersion: "1.2"}); err == nil {
		t.Error("bad VBIOS accepted")
	}
}

// FuzzVerify feeds arbitrary reports and chains to Verify: it must never panic, and whatever
// verifies must carry the expected nonce and end in the pinned root. Run it with
// -fuzzminimizetime 1x: minimizing a 9 KB input through P-384 verification under coverage
// instrumentation takes minutes per new input and stalls the fuzzer.
func FuzzVerify(f *testing.F) {
	ev, nonce := loadFixture(f)
	f.Add(ev.Report, ev.Chain)
	v := New(Options{Now: fixedClock(fixtureTime)})
	f.Fuzz(func(t *testing.T, report, chain []byte) {
		r := v.Verify(context.Background(), Evidence{Report: report, Chain: chain}, nonce)
		if r.OK() && (!bytes.Equal(report[4:36], nonce) || r.Root != RootNVIDIA) {
			t.Fatalf("verified: %+v", r)
		}
	})
}
