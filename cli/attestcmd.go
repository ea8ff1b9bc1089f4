package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
)

// AttestMain is `gpugate attest verify`: verify one GPU's confidential-computing evidence
// offline, print the verdict and the facts checked, and exit 0 only when it verifies.
type AttestMain struct {
	report, chain, nonce, rimDir, ocspURL, extraRoots string
	trustSimulation                                   bool
	ocspTimeout                                       time.Duration
	out                                               io.Writer // os.Stdout unless a test sets it
	now                                               func() time.Time
}

// maxEvidenceFileBytes bounds what the command reads of --report and --chain (hex doubles the
// 16 KiB binary limits the verifier enforces itself).
const maxEvidenceFileBytes = 64 << 10

const attestSummary = `Verify one NVIDIA GPU's confidential-computing evidence offline: the SPDM
GET_MEASUREMENTS report (--report, hex or binary) and its certificate chain (--chain, PEM, DER
or hex). Without --nonce the nonce the report carries is used (and printed): that proves the
report is genuine, not that it is fresh. Exits 0 only when the evidence verifies.`

// ParseFlags reads `verify` and its flags; it returns flag.ErrHelp after --help and an error
// for a missing subcommand, --report or --chain.
func (m *AttestMain) ParseFlags(args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"verify", "--help"}
	}
	if len(args) == 0 || args[0] != "verify" {
		return errors.New("usage: gpugate attest verify --report FILE --chain FILE [--nonce HEX] [--rim-bundle DIR] [--ocsp-url URL] [--trust-simulation]")
	}
	f := flag.NewFlagSet("attest verify", flag.ContinueOnError)
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: gpugate attest verify --report FILE --chain FILE [flags]\n\n%s\n\nFlags:\n", attestSummary)
		f.PrintDefaults()
	}
	f.StringVar(&m.report, "report", "", "the attestation report: SPDM GET_MEASUREMENTS request+response, hex or binary")
	f.StringVar(&m.chain, "chain", "", "the GPU's certificate chain, leaf first: PEM, DER or hex")
	f.StringVar(&m.nonce, "nonce", "", "the expected 32-byte nonce (64 hex digits); default: the one the report carries")
	f.StringVar(&m.rimDir, "rim-bundle", "", "directory of NVIDIA RIMs (*.swidtag) to compare the measurements with")
	f.StringVar(&m.ocspURL, "ocsp-url", "", "OCSP responder to check revocation with (e.g. http://ocsp.ndis.nvidia.com)")
	f.DurationVar(&m.ocspTimeout, "ocsp-timeout", nvidia.DefaultOCSPTimeout, "timeout of one OCSP request")
	f.StringVar(&m.extraRoots, "extra-roots", "", "PEM file of further trusted roots (besides NVIDIA's pinned root)")
	f.BoolVar(&m.trustSimulation, "trust-simulation", false, "also trust gpugate's simulation CA (simulated GPUs; never for real evidence)")
	if err := parseFlags(f, args[1:]); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see gpugate attest verify --help)", f.Arg(0))
	}
	if m.report == "" || m.chain == "" {
		return errors.New("gpugate attest verify needs --report and --chain")
	}
	return nil
}

// Run verifies the evidence and prints the verdict. It returns exitCode(1) (after printing)
// when the evidence does not verify, and an error for unreadable files or bad flags.
func (m *AttestMain) Run(ctx context.Context) error {
	out := m.out
	if out == nil {
		out = os.Stdout
	}
	now := m.now
	if now == nil {
		now = time.Now
	}
	report, err := readEvidenceFile(m.report, false)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	chain, err := readEvidenceFile(m.chain, true)
	if err != nil {
		return fmt.Errorf("--chain: %w", err)
	}
	opts := nvidia.Options{TrustSimulation: m.trustSimulation, Now: now}
	if m.extraRoots != "" {
		if opts.ExtraRoots, err = readRoots(m.extraRoots); err != nil {
			return fmt.Errorf("--extra-roots: %w", err)
		}
	}
	if m.rimDir != "" {
		if opts.RIMs, err = nvidia.LoadRIMBundle(m.rimDir, now); err != nil {
			return fmt.Errorf("--rim-bundle: %w", err)
		}
	}
	if m.ocspURL != "" {
		if opts.Revocation, err = nvidia.NewOCSPChecker(nvidia.OCSPOptions{URL: m.ocspURL, Timeout: m.ocspTimeout}); err != nil {
			return fmt.Errorf("--ocsp-url: %w", err)
		}
	}
	var nonce []byte
	if m.nonce != "" {
		nonce, err = hex.DecodeString(strings.TrimSpace(m.nonce))
		if err != nil || len(nonce) != attest.CCNonceBytes {
			return fmt.Errorf("--nonce must be %d bytes in hex", attest.CCNonceBytes)
		}
		fmt.Fprintf(out, "nonce:          %x (expected, from --nonce)\n", nonce)
	} else if rep, perr := nvidia.ParseReport(report); perr == nil {
		nonce = rep.RequestNonce
		fmt.Fprintf(out, "nonce:          %x (taken from the report itself: proves it genuine, not fresh)\n", nonce)
	}
	r := nvidia.New(opts).Verify(ctx, nvidia.Evidence{Report: report, Chain: chain}, nonce)
	writeAttestResult(out, r, opts)
	if rep, perr := nvidia.ParseReport(report); perr == nil {
		// What an operator fetches for --rim-bundle (docs/attestation.md); GH100 for Hopper.
		d, v := rep.RIMIDs("GH100")
		fmt.Fprintf(out, "rim ids:        %s %s\n", orUnknown(d), orUnknown(v))
	}
	if !r.OK() {
		return exitCode(1)
	}
	return nil
}

// Close has nothing to release.
func (m *AttestMain) Close() error { return nil }

// writeAttestResult prints the verdict and every fact Verify established.
func writeAttestResult(w io.Writer, r nvidia.Result, opts nvidia.Options) {
	if r.OK() {
		fmt.Fprintf(w, "verdict:        VERIFIED (root %s)\n", r.Root)
	} else {
		fmt.Fprintln(w, "verdict:        NOT VERIFIED")
		for _, reason := range r.Reasons {
			fmt.Fprintf(w, "  reason:       %s: %s\n", reason, reason.Description())
		}
	}
	if r.HardwareID != "" {
		fmt.Fprintf(w, "gpu identity:   %s (SHA-256 of the per-device certificate's key)\n", r.HardwareID)
	}
	for i, s := range r.CertificateSerials {
		subj := ""
		if i < len(r.CertificateSubjects) {
			subj = r.CertificateSubjects[i]
		}
		fmt.Fprintf(w, "certificate %d:  serial %s  %s\n", i, s, subj)
	}
	fmt.Fprintf(w, "driver:         %s\n", orUnknown(r.DriverVersion))
	fmt.Fprintf(w, "vbios:          %s\n", orUnknown(r.VBIOSVersion))
	switch {
	case opts.RIMs == nil:
		fmt.Fprintln(w, "measurements:   not checked (no --rim-bundle)")
	case r.MeasurementsChecked && r.OK():
		fmt.Fprintln(w, "measurements:   match NVIDIA's reference values")
	case r.MeasurementsChecked:
		fmt.Fprintln(w, "measurements:   checked")
	default:
		fmt.Fprintln(w, "measurements:   not checked (no RIM in the bundle for this driver and VBIOS)")
	}
	switch {
	case opts.Revocation == nil:
		fmt.Fprintln(w, "revocation:     not checked (no --ocsp-url)")
	case r.RevocationChecked:
		fmt.Fprintln(w, "revocation:     checked by OCSP")
	default:
		fmt.Fprintln(w, "revocation:     not checked (the responder gave no usable answer)")
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(not in the report)"
	}
	return s
}

// readEvidenceFile reads path (at most maxEvidenceFileBytes): hex text is decoded, anything
// else (binary, or PEM when pemOK) is returned as is.
func readEvidenceFile(path string, pemOK bool) ([]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- the operator names the file to check on the command line
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEvidenceFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxEvidenceFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxEvidenceFileBytes)
	}
	t := bytes.TrimSpace(b)
	if pemOK && bytes.HasPrefix(t, []byte("-----BEGIN")) {
		return b, nil
	}
	if len(t) > 0 && len(t)%2 == 0 && isHex(t) {
		return hex.DecodeString(string(t))
	}
	return b, nil
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
