// Package nvidia verifies NVIDIA confidential-computing evidence: a GPU's SPDM GET_MEASUREMENTS
// report over a nonce, signed with a per-GPU key whose certificate chain ends in NVIDIA's Device
// Identity CA (pinned here), compared with reference measurements from NVIDIA's signed RIMs and,
// where a responder is configured, checked for revocation. It also makes evidence of the same
// shape for simulated hosts, under gpugate's simulation CA. See docs/attestation.md.
//
// It uses the standard library's crypto, golang.org/x/crypto/ocsp for revocation and goxmldsig
// for the RIMs' XML signatures; no external process.
package nvidia

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/internal/ttlcache"
)

// ErrNotImplemented was returned by the interim stubs; nothing returns it any more. It stays so
// that code written against the stubs still compiles.
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
	Root                Root     // "" unless the chain verified
	HardwareID          string   // stable per-GPU identity from the chain; "" unless it verified
	CertificateSerials  []string // hex, leaf first, of the verified path (root included)
	CertificateSubjects []string // the same certificates' subjects
	DriverVersion       string
	VBIOSVersion        string
	MeasurementsChecked bool
	RevocationChecked   bool
}

// OK reports whether the evidence verified.
func (r Result) OK() bool { return len(r.Reasons) == 0 }

// Verifier verifies evidence; safe for concurrent use.
type Verifier struct {
	opts    Options
	anchors []trustAnchor
	chains  *ttlcache.LRU[[32]byte, *chainFacts]
}

// Chain-cache bounds: an 8-GPU host presents 8 chains; 4096 covers some 500 such hosts. An entry
// lives at most chainCacheTTL (so a changed trust decision is never stale long) and never past
// the earliest NotAfter of its chain.
const (
	chainCacheSize = 4096
	chainCacheTTL  = time.Hour
)

// New returns a Verifier. It returns one that fails every chain with CC_CHAIN_UNTRUSTED if the
// simulation CA was asked for and cannot be built (it always can).
func New(opts Options) *Verifier {
	v := &Verifier{opts: opts, chains: ttlcache.New[[32]byte, *chainFacts](chainCacheSize, chainCacheTTL)}
	if v.opts.Now == nil {
		v.opts.Now = time.Now
	}
	v.anchors = append(v.anchors, trustAnchor{cert: nvidiaDeviceRoot, root: RootNVIDIA})
	if opts.TrustSimulation {
		if r, err := SimulationRoot(); err == nil {
			v.anchors = append(v.anchors, trustAnchor{cert: r, root: RootSimulation})
		}
	}
	for _, c := range opts.ExtraRoots {
		if c != nil {
			v.anchors = append(v.anchors, trustAnchor{cert: c, root: RootConfigured})
		}
	}
	return v
}

// Verify checks ev against the expected 32-byte nonce: the report parses, its request carries
// nonce, the chain verifies to a trusted root at Options.Now, the leaf's FWID is the report's,
// the report's signature verifies with the leaf key, and (when configured) the measurements
// match the RIMs and no certificate is revoked. Every failure is a reason in the Result (a
// malformed report or chain stops there); it returns no error and never panics.
func (v *Verifier) Verify(ctx context.Context, ev Evidence, nonce []byte) Result {
	var res Result
	fail := func(r attest.Reason) Result {
		res.Reasons = append(res.Reasons, r)
		res.Root, res.HardwareID = "", ""
		return res
	}
	rep, err := ParseReport(ev.Report)
	if err != nil {
		return fail(attest.ReasonCCEvidenceMalformed)
	}
	res.DriverVersion, res.VBIOSVersion = rep.DriverVersion(), rep.VBIOSVersion()
	if len(nonce) != attest.CCNonceBytes || !bytes.Equal(rep.RequestNonce, nonce) {
		res.Reasons = append(res.Reasons, attest.ReasonCCNonceMismatch)
	}
	now := v.opts.Now()
	facts, reason := v.chainFacts(ev.Chain, now)
	if reason != "" {
		return fail(reason)
	}
	// Copies: the facts are shared through the cache with every later caller.
	res.CertificateSerials, res.CertificateSubjects = slices.Clone(facts.serials), slices.Clone(facts.subjects)
	if facts.fwid == nil || !bytes.Equal(facts.fwid, rep.FWID()) {
		res.Reasons = append(res.Reasons, attest.ReasonCCIdentityMismatch)
	}
	if !verifyP384(facts.leafKey, rep.Signed, rep.Signature) {
		res.Reasons = append(res.Reasons, attest.ReasonCCSignatureInvalid)
	}
	if len(res.Reasons) > 0 {
		return res
	}
	checked, mismatch := v.opts.RIMs.check(rep, now)
	res.MeasurementsChecked = checked
	if mismatch {
		return fail(attest.ReasonCCMeasurementMismatch)
	}
	if v.opts.Revocation != nil {
		revoked, checked := v.revocation(ctx, now, facts)
		res.RevocationChecked = checked
		if revoked {
			return fail(attest.ReasonCCCertRevoked)
		}
	}
	res.Root, res.HardwareID = facts.root, facts.hardwareID
	return res
}

// revocation asks the responder about every certificate of the path but the leaf and the root,
// as nvtrust does: the FMC leaf is made by the GPU at boot and never registered with NVIDIA,
// and the root is pinned. revoked is true when any is revoked; checked is true when every one
// got a fresh, verified answer.
func (v *Verifier) revocation(ctx context.Context, now time.Time, f *chainFacts) (revoked, checked bool) {
	if len(f.ocspTargets) < 2 {
		return false, false
	}
	checked = true
	for _, t := range f.ocspTargets[1:] {
		r, err := v.opts.Revocation.revoked(ctx, now, t, f.path)
		if err != nil {
			checked = false
			continue
		}
		if r {
			return true, true
		}
	}
	return false, checked
}

// chainFacts returns the cached facts of the chain's bytes, or parses and verifies the chain
// and caches a success until the earliest NotAfter (and at most chainCacheTTL); a cached entry
// is used only while Options.Now is inside every validity period of its path, so the cache never
// changes a verdict. Failures are not cached: they may depend on the clock.
func (v *Verifier) chainFacts(raw []byte, now time.Time) (*chainFacts, attest.Reason) {
	key := sha256.Sum256(raw)
	if f, ok := v.chains.Get(key); ok && !now.Before(f.notBefore) && !now.After(f.notAfter) {
		return f, ""
	}
	certs, err := ParseChain(raw)
	if err != nil {
		return nil, attest.ReasonCCEvidenceMalformed
	}
	f, reason := verifyChain(certs, v.anchors, now)
	if reason != "" {
		return nil, reason
	}
	v.chains.Add(key, f)
	return f, ""
}

// verifyP384 reports whether sig (r‖s, 48 bytes each) is key's ECDSA signature of SHA-384(msg).
func verifyP384(key *ecdsa.PublicKey, msg, sig []byte) bool {
	if key == nil || len(sig) != spdmSignatureLen {
		return false
	}
	h := sha512.Sum384(msg)
	r := new(big.Int).SetBytes(sig[:48])
	s := new(big.Int).SetBytes(sig[48:])
	return ecdsa.Verify(key, h[:], r, s)
}
