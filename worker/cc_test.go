package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/worker/client"
)

const fakePEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

// ccMock is a simulated DGX H100 whose NVML reports confidential computing on, with fake
// evidence: each GPU's report is an SPDM-shaped request (version 1.1, GET_MEASUREMENTS) over
// the nonce it was asked for, and the nonces asked for are recorded by index. Tests replace a
// device's functions to make it fail.
type ccMock struct {
	*server.Server
	mu     sync.Mutex
	nonces map[int][32]byte
}

func newCCMock(t *testing.T) *ccMock {
	t.Helper()
	lib, err := Simulate("dgxh100", []byte("cc-mock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &ccMock{Server: lib.(*server.Server), nonces: map[int][32]byte{}}
	m.SystemGetConfComputeStateFunc = func() (nvml.ConfComputeSystemState, nvml.Return) {
		return nvml.ConfComputeSystemState{CcFeature: nvml.CC_SYSTEM_FEATURE_ENABLED}, nvml.SUCCESS
	}
	for i, nd := range m.Devices {
		d := nd.(*server.Device)
		d.GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
			var c nvml.ConfComputeGpuCertificate
			c.CertChainSize = uint32(copy(c.CertChain[:], "device chain"))
			c.AttestationCertChainSize = uint32(copy(c.AttestationCertChain[:], fakePEM))
			return c, nvml.SUCCESS
		}
		d.GetConfComputeGpuAttestationReportFunc = func(r *nvml.ConfComputeGpuAttestationReport) nvml.Return {
			m.mu.Lock()
			m.nonces[i] = r.Nonce
			m.mu.Unlock()
			rep := append([]byte{0x11, 0xE0, 0x01, 0xFF}, r.Nonce[:]...)
			rep = append(rep, fmt.Sprintf("response of GPU %d", i)...)
			r.AttestationReportSize = uint32(copy(r.AttestationReport[:], rep))
			return nvml.SUCCESS
		}
	}
	return m
}

func (m *ccMock) dev(i int) *server.Device { return m.Devices[i].(*server.Device) }

var (
	ccChallenge = Challenge{ID: "4b0f1a4e-1c7e-4d0c-9a53-0f5b1c2d3e4f", Nonce: bytes.Repeat([]byte{7}, 32)}
	ccPub       = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
)

// Each GPU is asked for a report over attest.CCNonce of the challenge, the device key and its
// own NVML index, and its evidence carries that index, the report and the attestation chain.
func TestCCEvidenceIsRequestedForEachIndexNonce(t *testing.T) {
	t.Parallel()
	m := newCCMock(t)
	ev, err := CCAttestation{NVML: m}.Evidence(context.Background(), ccChallenge, ccPub)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 8 {
		t.Fatalf("%d GPUs with evidence, want 8", len(ev))
	}
	for i, e := range ev {
		want := attest.CCNonce(ccChallenge.ID, ccChallenge.Nonce, ccPub, i)
		if e.Index != i || m.nonces[i] != want || !bytes.Equal(e.Report[4:36], want[:]) {
			t.Fatalf("GPU %d: index %d, nonce asked %x, want %x", i, e.Index, m.nonces[i], want)
		}
		if !strings.HasSuffix(string(e.Report), fmt.Sprintf("response of GPU %d", i)) || string(e.Chain) != fakePEM {
			t.Fatalf("GPU %d evidence: %q / %q", i, e.Report, e.Chain)
		}
		if e.UUID != m.dev(i).UUID {
			t.Fatalf("GPU %d UUID %q", i, e.UUID)
		}
	}
	if n := len(m.InitCalls()); n != 1 || len(m.ShutdownCalls()) != 1 {
		t.Fatalf("Init %d, Shutdown %d: want them paired", n, len(m.ShutdownCalls()))
	}
	// Another challenge, another key: other nonces.
	other := ccChallenge
	other.Nonce = bytes.Repeat([]byte{8}, 32)
	if _, err := (CCAttestation{NVML: m}).Evidence(context.Background(), other, ccPub); err != nil {
		t.Fatal(err)
	}
	if m.nonces[0] != attest.CCNonce(other.ID, other.Nonce, ccPub, 0) {
		t.Fatal("the nonce does not follow the challenge")
	}
}

// No CC on the system, CC off, or no GPU in CC mode: ErrUnsupported and no evidence. A GPU
// that answers ERROR_NOT_SUPPORTED (or ERROR_FUNCTION_NOT_FOUND, or whose mock function is
// unset) simply has none.
func TestCCEvidenceAbsentIsNotAFailure(t *testing.T) {
	t.Parallel()
	plain, _ := Simulate("dgxh100", []byte("x"), nil) // no ConfCompute function set at all
	if ev, err := (CCAttestation{NVML: plain}).Evidence(context.Background(), ccChallenge, ccPub); !errors.Is(err, ErrUnsupported) || ev != nil {
		t.Fatalf("no CC functions: %v %v", ev, err)
	}
	m := newCCMock(t)
	m.SystemGetConfComputeStateFunc = func() (nvml.ConfComputeSystemState, nvml.Return) {
		return nvml.ConfComputeSystemState{CcFeature: nvml.CC_SYSTEM_FEATURE_DISABLED}, nvml.SUCCESS
	}
	if ev, err := (CCAttestation{NVML: m}).Evidence(context.Background(), ccChallenge, ccPub); !errors.Is(err, ErrUnsupported) || ev != nil {
		t.Fatalf("CC off: %v %v", ev, err)
	}
	m.SystemGetConfComputeStateFunc = func() (nvml.ConfComputeSystemState, nvml.Return) {
		return nvml.ConfComputeSystemState{}, nvml.ERROR_NOT_SUPPORTED
	}
	if _, err := (CCAttestation{NVML: m}).Evidence(context.Background(), ccChallenge, ccPub); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NOT_SUPPORTED state: %v", err)
	}

	m = newCCMock(t)
	m.dev(1).GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
		return nvml.ConfComputeGpuCertificate{}, nvml.ERROR_NOT_SUPPORTED
	}
	m.dev(2).GetConfComputeGpuAttestationReportFunc = func(*nvml.ConfComputeGpuAttestationReport) nvml.Return {
		return nvml.ERROR_FUNCTION_NOT_FOUND
	}
	m.dev(3).GetConfComputeGpuCertificateFunc = nil // the mock panics "method is nil"
	ev, err := CCAttestation{NVML: m}.Evidence(context.Background(), ccChallenge, ccPub)
	if err != nil {
		t.Fatalf("GPUs without CC are not failures: %v", err)
	}
	if got := indices(ev); got != "0,4,5,6,7" {
		t.Fatalf("evidence for GPUs %s, want 0,4,5,6,7", got)
	}
	for i := range 8 {
		m.dev(i).GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
			return nvml.ConfComputeGpuCertificate{}, nvml.ERROR_NOT_SUPPORTED
		}
	}
	if ev, err := (CCAttestation{NVML: m}).Evidence(context.Background(), ccChallenge, ccPub); !errors.Is(err, ErrUnsupported) || ev != nil {
		t.Fatalf("no GPU in CC mode: %v %v", ev, err)
	}
}

// A GPU whose collection fails (an NVML error, a panicking function, an empty answer, a report
// over another nonce) is a *GPUError naming it; the other GPUs keep their evidence.
func TestCCEvidenceFailuresArePerGPU(t *testing.T) {
	t.Parallel()
	m := newCCMock(t)
	m.dev(1).GetConfComputeGpuAttestationReportFunc = func(*nvml.ConfComputeGpuAttestationReport) nvml.Return {
		return nvml.ERROR_NO_PERMISSION
	}
	m.dev(2).GetConfComputeGpuAttestationReportFunc = func(*nvml.ConfComputeGpuAttestationReport) nvml.Return {
		panic("driver bug")
	}
	m.dev(3).GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
		panic(errors.New("another bug"))
	}
	m.dev(4).GetConfComputeGpuCertificateFunc = func() (nvml.ConfComputeGpuCertificate, nvml.Return) {
		return nvml.ConfComputeGpuCertificate{}, nvml.SUCCESS // nothing in it
	}
	m.dev(5).GetConfComputeGpuAttestationReportFunc = func(r *nvml.ConfComputeGpuAttestationReport) nvml.Return {
		rep := append([]byte{0x11, 0xE0, 0, 0}, make([]byte, 40)...) // ignored the nonce
		r.AttestationReportSize = uint32(copy(r.AttestationReport[:], rep))
		return nvml.SUCCESS
	}
	m.dev(6).GetConfComputeGpuAttestationReportFunc = func(r *nvml.ConfComputeGpuAttestationReport) nvml.Return {
		return nvml.SUCCESS // size 0
	}
	ev, err := CCAttestation{NVML: m}.Evidence(context.Background(), ccChallenge, ccPub)
	if got := indices(ev); got != "0,7" {
		t.Fatalf("evidence for GPUs %s, want 0,7", got)
	}
	failed := map[int]string{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ge *GPUError
		if !errors.As(e, &ge) || ge.UUID != m.dev(ge.Index).UUID {
			t.Fatalf("not a GPUError naming its GPU: %v", e)
		}
		failed[ge.Index] = ge.Error()
	}
	for i, want := range map[int]string{1: "ERROR_NO_PERMISSION", 2: "driver bug", 3: "another bug", 4: "empty attestation certificate chain",
		5: "another nonce", 6: "empty report"} {
		if !strings.Contains(failed[i], want) {
			t.Errorf("GPU %d: %q, want it to say %q", i, failed[i], want)
		}
	}
	if len(failed) != 6 {
		t.Fatalf("failures: %v", failed)
	}
}

func indices(ev []GPUEvidence) string {
	var s []string
	for _, e := range ev {
		s = append(s, fmt.Sprint(e.Index))
	}
	return strings.Join(s, ",")
}

// The proof input carries one GpuEvidenceInput per GPU with evidence: its index, the report in
// base64 and the chain as PEM text, or base64 when NVML gave DER.
func TestProofInputCarriesTheEvidence(t *testing.T) {
	t.Parallel()
	snap, _ := Collect(newCCMock(t))
	p := attest.Proof{ChallengeID: "c", Counter: 7, Snapshot: snap, Signature: make([]byte, 64)}
	der := []byte{0x30, 0x82, 0x01, 0x00, 0xAA}
	in, err := ProofInput(p, []GPUEvidence{
		{Index: 0, Report: []byte("report 0"), Chain: append([]byte(fakePEM), 0, 0)},
		{Index: 5, Report: []byte("report 5"), Chain: der},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Evidence) != 2 || in.Evidence[0].Index != 0 || in.Evidence[1].Index != 5 {
		t.Fatalf("evidence: %+v", in.Evidence)
	}
	if r, _ := base64.StdEncoding.DecodeString(in.Evidence[1].Report); string(r) != "report 5" {
		t.Fatalf("report: %q", in.Evidence[1].Report)
	}
	if in.Evidence[0].CertificateChain != fakePEM {
		t.Fatalf("PEM chain: %q", in.Evidence[0].CertificateChain)
	}
	if c, _ := base64.StdEncoding.DecodeString(in.Evidence[1].CertificateChain); !bytes.Equal(c, der) {
		t.Fatalf("DER chain: %q", in.Evidence[1].CertificateChain)
	}
	if in, _ := ProofInput(p, nil); in.Evidence != nil {
		t.Fatal("no evidence must send none")
	}
}

// The agent sends each CC GPU's evidence with its proof; a GPU whose NVML call panics is sent
// without evidence, the worker says why in its log, and the run goes on to its verdict.
func TestAgentSendsEvidenceAndSurvivesAFailingGPU(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	m := newCCMock(t)
	m.dev(2).GetConfComputeGpuAttestationReportFunc = func(*nvml.ConfComputeGpuAttestationReport) nvml.Return {
		panic("driver bug")
	}
	var mu sync.Mutex
	var sent []client.GpuEvidenceInput
	var challenge Challenge
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, err := readBody(r)
		if err != nil {
			return nil, err
		}
		var req struct {
			OperationName string
			Variables     struct{ Input client.ProofInput }
		}
		if json.Unmarshal(body, &req) == nil && req.OperationName == "SubmitProof" {
			mu.Lock()
			sent = req.Variables.Input.Evidence
			mu.Unlock()
		}
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || req.OperationName != "RequestChallenge" {
			return resp, err
		}
		b, err := readAll(resp)
		var ch struct {
			Data struct{ RequestChallenge struct{ ID, Nonce string } }
		}
		if err == nil && json.Unmarshal(b, &ch) == nil {
			mu.Lock()
			challenge.ID = ch.Data.RequestChallenge.ID
			challenge.Nonce, _ = base64.StdEncoding.DecodeString(ch.Data.RequestChallenge.Nonce)
			mu.Unlock()
		}
		resp.Body = nopCloser(b)
		return resp, err
	})
	var logs bytes.Buffer
	o := g.options(t, "", keyPath(t, "key.json"), g.token(t, "alice"))
	o.NVML, o.Transport, o.Logger = m, rt, newTestLogger(&syncWriter{w: &logs})
	err := Run(context.Background(), o)
	var flagged *FlaggedError
	if err != nil && !errors.As(err, &flagged) {
		t.Fatalf("run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	k, err := LoadKeyFile(o.KeyFile)
	if err != nil || challenge.ID == "" {
		t.Fatalf("key file: %v; challenge %+v", err, challenge)
	}
	var idx []string
	for _, e := range sent {
		idx = append(idx, fmt.Sprint(e.Index))
		want := attest.CCNonce(challenge.ID, challenge.Nonce, k.PublicKey(), e.Index)
		rep, err := base64.StdEncoding.DecodeString(e.Report)
		if err != nil || !bytes.Equal(rep[4:36], want[:]) || e.CertificateChain != fakePEM ||
			!strings.HasSuffix(string(rep), fmt.Sprintf("response of GPU %d", e.Index)) {
			t.Fatalf("evidence of GPU %d: %+v", e.Index, e)
		}
	}
	if got := strings.Join(idx, ","); got != "0,1,3,4,5,6,7" {
		t.Fatalf("evidence sent for GPUs %s, want all but 2", got)
	}
	if !strings.Contains(logs.String(), "gpu=2") || !strings.Contains(logs.String(), "driver bug") {
		t.Fatalf("the log does not say why GPU 2 has no evidence:\n%s", logs.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// simEvidence collects the evidence of a simulated profile for ccChallenge and verifies each
// GPU's with the gateway's verifier (trusting the simulation CA as dev mode does, or not).
func simEvidence(t *testing.T, profile string, seed []byte, trustSim bool) (attest.Snapshot, []GPUEvidence, []nvidia.Result) {
	t.Helper()
	lib, err := Simulate(profile, seed, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Collect(lib)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := CCAttestation{NVML: lib}.Evidence(context.Background(), ccChallenge, ccPub)
	if err != nil || len(ev) != 8 {
		t.Fatalf("%s: %d GPUs with evidence, err %v", profile, len(ev), err)
	}
	v := nvidia.New(nvidia.Options{TrustSimulation: trustSim})
	var res []nvidia.Result
	for _, e := range ev {
		nonce := attest.CCNonce(ccChallenge.ID, ccChallenge.Nonce, ccPub, e.Index)
		res = append(res, v.Verify(context.Background(), nvidia.Evidence{Report: e.Report, Chain: e.Chain}, nonce[:]))
	}
	return snap, ev, res
}

// The genuine simulated CC hosts produce evidence the verifier accepts under the simulation CA
// (and only under it), with the driver and VBIOS the snapshot reports, one hardware identity
// per GPU, the same identities after a restart (same key) and others on another host.
func TestSimulatedCCHostsVerify(t *testing.T) {
	t.Parallel()
	for _, profile := range []string{"dgxh100-cc", "dgxh200-cc", "dgxb200-cc"} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			snap, _, res := simEvidence(t, profile, []byte("host A"), true)
			ids := map[string]bool{}
			for i, r := range res {
				if !r.OK() || r.Root != nvidia.RootSimulation || r.HardwareID == "" {
					t.Fatalf("GPU %d: %+v", i, r)
				}
				if r.DriverVersion != snap.DriverVersion || !strings.EqualFold(r.VBIOSVersion, snap.GPUs[i].VBIOSVersion) {
					t.Fatalf("GPU %d measured driver %q vbios %q; the snapshot says %q %q", i, r.DriverVersion, r.VBIOSVersion,
						snap.DriverVersion, snap.GPUs[i].VBIOSVersion)
				}
				ids[r.HardwareID] = true
			}
			if len(ids) != 8 {
				t.Fatalf("%d distinct hardware identities for 8 GPUs", len(ids))
			}
			_, _, again := simEvidence(t, profile, []byte("host A"), true)
			_, _, other := simEvidence(t, profile, []byte("host B"), true)
			for i := range res {
				if again[i].HardwareID != res[i].HardwareID {
					t.Fatalf("GPU %d changed identity across a restart", i)
				}
				if ids[other[i].HardwareID] {
					t.Fatalf("GPU %d of another host has this host's identity", i)
				}
			}
			_, _, prod := simEvidence(t, profile, []byte("host A"), false)
			for i, r := range prod {
				if r.OK() || !slices.Contains(r.Reasons, attest.ReasonCCChainUntrusted) {
					t.Fatalf("GPU %d verified without trusting the simulation CA: %+v", i, r)
				}
			}
		})
	}
}

// The CC counterfeits: "cloned" presents one GPU's verified identity for all eight (what the
// gateway flags as CC_HARDWARE_REUSED); "forged" signs under a CA of its own (CC_CHAIN_UNTRUSTED
// even where the simulation CA is trusted), with a valid signature by its own leaf.
func TestSimulatedCCCounterfeits(t *testing.T) {
	t.Parallel()
	_, _, cloned := simEvidence(t, "dgxh100-cc-cloned", []byte("host C"), true)
	for i, r := range cloned {
		if !r.OK() || r.HardwareID != cloned[0].HardwareID {
			t.Fatalf("cloned GPU %d: %+v (GPU 0: %s)", i, r, cloned[0].HardwareID)
		}
	}
	_, ev, forged := simEvidence(t, "dgxh100-cc-forged", []byte("host D"), true)
	for i, r := range forged {
		if !slices.Equal(r.Reasons, []attest.Reason{attest.ReasonCCChainUntrusted}) {
			t.Fatalf("forged GPU %d: %+v", i, r)
		}
	}
	// The forgery is only in the chain: under its own root the report verifies.
	chain, err := nvidia.ParseChain(ev[0].Chain)
	if err != nil {
		t.Fatal(err)
	}
	nonce := attest.CCNonce(ccChallenge.ID, ccChallenge.Nonce, ccPub, 0)
	r := nvidia.New(nvidia.Options{ExtraRoots: chain[len(chain)-1:]}).Verify(context.Background(),
		nvidia.Evidence{Report: ev[0].Report, Chain: ev[0].Chain}, nonce[:])
	if !r.OK() || r.Root != nvidia.RootConfigured {
		t.Fatalf("forged evidence under its own root: %+v", r)
	}
}

// BenchmarkCCEvidenceSimulated measures the worker's collection of 8 GPUs' evidence on a
// simulated CC host (identities already made) and reports the evidence's size on the wire.
func BenchmarkCCEvidenceSimulated(b *testing.B) {
	lib, _ := Simulate("dgxh100-cc", []byte("bench"), nil)
	p := CCAttestation{NVML: lib}
	ev, err := p.Evidence(context.Background(), ccChallenge, ccPub)
	if err != nil || len(ev) != 8 {
		b.Fatal(err)
	}
	in, _ := ProofInput(attest.Proof{}, ev)
	js, _ := json.Marshal(in.Evidence)
	for b.Loop() {
		if _, err := p.Evidence(context.Background(), ccChallenge, ccPub); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ev[0].Report)), "report-bytes/gpu")
	b.ReportMetric(float64(len(ev[0].Chain)), "chain-bytes/gpu")
	b.ReportMetric(float64(len(js))/8, "wire-bytes/gpu")
}

func TestFlattenNestedJoins(t *testing.T) {
	t.Parallel()
	a, b, c := errors.New("a"), &GPUError{Index: 1, Err: errors.New("b")}, errors.New("c")
	got := flatten(errors.Join(errors.Join(a, b), c))
	if len(got) != 3 || got[0] != a || got[1] != b || got[2] != c {
		t.Fatalf("flatten: %v", got)
	}
	if got := flatten(a); len(got) != 1 || got[0] != a {
		t.Fatalf("flatten of one error: %v", got)
	}
}
