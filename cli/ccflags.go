package cli

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/resolvers"
)

// ccFlags configure the verification of GPUs' confidential-computing evidence
// (docs/attestation.md, "Verification levels" and the operator sections).
type ccFlags struct {
	trustSimulation   *bool
	extraRoots        *string
	rimBundle         *string
	ocspURL           *string
	ocspTimeout       *time.Duration
	requireRIMs       *bool
	requireRevocation *bool

	// Loaded by load (so a bad value fails at startup, before anything listens).
	roots []*x509.Certificate
	rims  *nvidia.RIMBundle
}

func addCCFlags(f *envFlags) *ccFlags {
	return &ccFlags{
		trustSimulation: f.Bool("cc-trust-simulation", "GPUGATE_CC_TRUST_SIMULATION", false,
			"trust gpugate's simulation CA for GPU evidence, so simulated CC hosts can be ATTESTED (default: on in zero-config mode only; a gateway given --database-url never trusts it unless this is set)"),
		extraRoots: f.String("cc-extra-roots", "GPUGATE_CC_EXTRA_ROOTS", "",
			"PEM file of further roots GPU certificate chains may end in (their root shows as CONFIGURED); NVIDIA's Device Identity CA is always trusted"),
		rimBundle: f.String("cc-rim-bundle", "GPUGATE_CC_RIM_BUNDLE", "",
			"directory of NVIDIA reference integrity manifests (RIMs) to compare GPU measurements with (empty: measurements not compared)"),
		ocspURL: f.String("cc-ocsp-url", "GPUGATE_CC_OCSP_URL", "",
			"OCSP responder checking GPU certificates' revocation, e.g. https://ocsp.ndis.nvidia.com (empty: revocation not checked, recorded as revocationChecked=false)"),
		ocspTimeout: f.Duration("cc-ocsp-timeout", "GPUGATE_CC_OCSP_TIMEOUT", 5*time.Second,
			"how long one OCSP request may take before revocation counts as not checked"),
		requireRIMs: f.Bool("cc-require-rims", "GPUGATE_CC_REQUIRE_RIMS", false,
			"a GPU whose measurements could not be compared with RIMs stays SELF_REPORTED instead of ATTESTED"),
		requireRevocation: f.Bool("cc-require-revocation", "GPUGATE_CC_REQUIRE_REVOCATION", false,
			"a GPU whose certificates' revocation could not be checked stays SELF_REPORTED instead of ATTESTED"),
	}
}

// load reads the roots file and the RIM bundle and checks the OCSP settings. It returns an error
// naming the flag for a file that cannot be read or holds no certificate, a bundle that does
// not load, a URL that is not absolute http(s), or a non-positive timeout.
func (c *ccFlags) load() error {
	if *c.extraRoots != "" {
		roots, err := readRoots(*c.extraRoots)
		if err != nil {
			return fmt.Errorf("--cc-extra-roots: %w", err)
		}
		c.roots = roots
	}
	if *c.rimBundle != "" {
		b, err := nvidia.LoadRIMBundle(*c.rimBundle, time.Now)
		if err != nil {
			return fmt.Errorf("--cc-rim-bundle %s: %w", *c.rimBundle, err)
		}
		c.rims = b
	}
	if *c.ocspURL != "" {
		u, err := url.Parse(*c.ocspURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--cc-ocsp-url must be an absolute http(s) URL, got %q", *c.ocspURL)
		}
	}
	if *c.ocspTimeout <= 0 {
		return errors.New("--cc-ocsp-timeout must be positive")
	}
	if *c.requireRIMs && c.rims == nil {
		return errors.New("--cc-require-rims needs --cc-rim-bundle: without reference values no GPU could be ATTESTED")
	}
	if *c.requireRevocation && *c.ocspURL == "" {
		return errors.New("--cc-require-revocation needs --cc-ocsp-url: without a responder no GPU could be ATTESTED")
	}
	return nil
}

// readRoots returns the certificates of a PEM file; an error if it cannot be read, holds a
// block that is not a certificate, or none at all.
func readRoots(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator's root certificates file (a flag)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: a %q PEM block; only CERTIFICATE blocks belong here", path, blk.Type)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return out, nil
}

// apply sets the verifier and the requirements of w. The simulation CA is trusted when
// --cc-trust-simulation says so, or by default in zero-config mode (embedded: the gateway runs
// its own PostgreSQL, no --database-url). It returns an error for OCSP settings the verifier
// refuses.
func (c *ccFlags) apply(w *resolvers.WorkerConfig, explicit map[string]bool, embedded bool, log *slog.Logger) error {
	trustSim := *c.trustSimulation
	if !explicit["cc-trust-simulation"] {
		trustSim = embedded
	}
	opts := nvidia.Options{TrustSimulation: trustSim, ExtraRoots: c.roots, RIMs: c.rims, Now: time.Now}
	if *c.ocspURL != "" {
		checker, err := newOCSPChecker(*c.ocspURL, *c.ocspTimeout)
		if err != nil {
			return fmt.Errorf("--cc-ocsp-url: %w", err)
		}
		opts.Revocation = checker
	}
	w.CC = nvidia.New(opts)
	w.RequireRIMs, w.RequireRevocation = *c.requireRIMs, *c.requireRevocation
	log.Info("GPU evidence verification", "trust_simulation_ca", trustSim, "extra_roots", len(c.roots),
		"rim_bundle", *c.rimBundle != "", "ocsp", *c.ocspURL, "require_rims", *c.requireRIMs,
		"require_revocation", *c.requireRevocation)
	if trustSim && !embedded {
		log.Warn("--cc-trust-simulation: simulated GPUs can be ATTESTED on this gateway; never set it in production")
	}
	return nil
}

// newOCSPChecker returns the revocation checker for a responder (nvidia.ErrOCSPURL for a bad URL).
func newOCSPChecker(url string, timeout time.Duration) (*nvidia.OCSPChecker, error) {
	return nvidia.NewOCSPChecker(nvidia.OCSPOptions{URL: url, Timeout: timeout})
}
