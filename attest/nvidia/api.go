// Package nvidia verifies NVIDIA confidential-computing evidence: a GPU's SPDM GET_MEASUREMENTS
// report over a nonce, signed with a per-GPU key whose certificate chain ends in NVIDIA's Device
// Identity CA (pinned here), compared with reference measurements from NVIDIA's signed RIMs and,
// where a responder is configured, checked for revocation. It also makes evidence of the same
// shape for simulated hosts, under gpugate's simulation CA. See docs/attestation.md.
//
// It uses only the standard library's crypto (and golang.org/x/crypto/ocsp); no external process.
package nvidia

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/gpugate/gpugate/attest"
)

// ErrNotImplemented is returned by the interim stubs (issue 8 in progress).
var ErrNotImplemented = errors.New("nvidia: not implemented yet")

// Root names the trusted root a chain ended in.
type Root string

// The roots a chain may end in.
const (
	RootNVIDIA     Root = "NVIDIA"     // NVIDIA Device Identity CA, pinned
	RootSimulation Root = "SIMULATION" // gpugate's simulation CA, for simulated hosts
	RootConfigured Root = "CONFIGURED" // an extra root the operator configured
)

// Evidence is one GPU's confidential-computing evidence as a worker submits it.
type Evidence struct {
	Report []byte // SPDM GET_MEASUREMENTS request followed by the response (binary)
	Chain  []byte // the attestation certificate chain, leaf first: PEM or concatenated DER
}

// Options configure a Verifier. The zero value trusts NVIDIA's pinned root only, checks no
// measurements and no revocation, and uses time.Now.
type Options struct {
	TrustSimulation bool                // also trust gpugate's simulation CA (dev mode, or explicit)
	ExtraRoots      []*x509.Certificate // further roots, only by explicit configuration
	RIMs            *RIMBundle          // reference measurements; nil: not compared
	Revocation      *OCSPChecker        // nil: revocation not checked
	Now             func() time.Time    // the clock validity periods are checked against
}

// Result is what Verify found. Reasons is empty when the evidence verified.
type Result struct {
	Reasons             []attest.Reason
	Root                Root   // "" unless the chain verified
	HardwareID          string // stable per-GPU identity from the chain; "" unless it verified
	CertificateSerials  []string
	DriverVersion       string
	VBIOSVersion        string
	MeasurementsChecked bool
	RevocationChecked   bool
}

// OK reports whether the evidence verified.
func (r Result) OK() bool { return len(r.Reasons) == 0 }

// Verifier verifies evidence; safe for concurrent use.
type Verifier struct{ opts Options }

// New returns a Verifier.
func New(opts Options) *Verifier { return &Verifier{opts: opts} }

// Verify checks ev against the expected 32-byte nonce. Every failure is a reason in the Result;
// it returns no error.
func (v *Verifier) Verify(ctx context.Context, ev Evidence, nonce []byte) Result {
	return Result{Reasons: []attest.Reason{attest.ReasonCCEvidenceMalformed}}
}

// RIMBundle holds reference measurements loaded from a local directory of NVIDIA RIMs.
type RIMBundle struct{}

// LoadRIMBundle reads and verifies the RIMs in dir against NVIDIA's RIM root.
func LoadRIMBundle(dir string, now func() time.Time) (*RIMBundle, error) {
	return nil, ErrNotImplemented
}

// OCSPChecker checks certificates' revocation through a responder, with a cache.
type OCSPChecker struct{}

// SimulatedGPU makes evidence for one simulated GPU under the simulation CA.
type SimulatedGPU struct{}

// SimulationOptions describe a simulated GPU: Seed (e.g. its UUID and the host's key) derives its
// key and certificates, so the same GPU keeps its identity across restarts.
type SimulationOptions struct {
	Seed          []byte
	DriverVersion string
	VBIOSVersion  string
}

// NewSimulatedGPU returns the simulated GPU for opts.
func NewSimulatedGPU(opts SimulationOptions) (*SimulatedGPU, error) { return nil, ErrNotImplemented }

// Evidence returns a report signed over nonce and the GPU's chain (PEM).
func (g *SimulatedGPU) Evidence(nonce []byte) (Evidence, error) { return Evidence{}, ErrNotImplemented }
