package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/worker/client"
)

// Challenge is a proof-of-work challenge as the gateway issued it.
type Challenge struct {
	ID         string
	Nonce      []byte
	Difficulty int
	ExpiresAt  time.Time
}

// ErrUnsupported is returned by a Prover whose evidence this host cannot produce; the proof
// goes ahead without it.
var ErrUnsupported = errors.New("not supported on this host")

// GPUEvidence is one GPU's confidential-computing evidence for one challenge, as NVML gave it.
// It travels with the proof (ProofInput.evidence), not in the snapshot: see docs/worker.md.
type GPUEvidence struct {
	Index  int    // NVML index; the nonce the report was requested for derives from it
	UUID   string // for logs; the gateway takes the GPU's UUID from the snapshot
	Report []byte // SPDM GET_MEASUREMENTS request followed by the signed response
	Chain  []byte // the attestation certificate chain, leaf first: PEM, or concatenated DER
}

// GPUError is one GPU whose evidence could not be collected. That GPU is proved without
// evidence (SELF_REPORTED at best); the others are not affected.
type GPUError struct {
	Index int
	UUID  string // "" when NVML did not say
	Err   error
}

func (e *GPUError) Error() string {
	if e.UUID == "" {
		return fmt.Sprintf("GPU %d: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("GPU %d (%s): %v", e.Index, e.UUID, e.Err)
}

func (e *GPUError) Unwrap() error { return e.Err }

// A Prover gathers evidence bound to a challenge, sent beside the snapshot in the proof. Today
// that is NVIDIA confidential-computing attestation (CCAttestation); a CUDA compute proof
// would be another implementation.
type Prover interface {
	// Name identifies the prover in logs.
	Name() string
	// Evidence returns the evidence for ch and the device key pub, one entry per GPU that
	// produced some. It returns an error wrapping ErrUnsupported when the host cannot produce
	// any (logged, the proof proceeds); otherwise the evidence it has together with a joined
	// *GPUError per GPU that failed (each logged, those GPUs are proved without evidence), or
	// another error when it could not even look (logged, the proof proceeds without evidence).
	Evidence(ctx context.Context, ch Challenge, pub ed25519.PublicKey) ([]GPUEvidence, error)
}

// CCAttestation collects NVIDIA confidential-computing evidence through NVML on hosts where CC
// is on (Hopper and later): per GPU, the attestation report from
// GetConfComputeGpuAttestationReport over attest.CCNonce(challenge, device key, NVML index)
// and the attestation certificate chain from GetConfComputeGpuCertificate. The gateway
// verifies both (docs/attestation.md).
type CCAttestation struct {
	NVML nvml.Interface
}

// Name implements Prover.
func (CCAttestation) Name() string { return "nvml-cc-attestation" }

// Evidence implements Prover. It returns an error wrapping ErrUnsupported when NVML has no
// confidential computing (ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND, a mock function left
// unset), when CC is off, or when no GPU is in CC mode; an NVML error when NVML cannot be
// opened or enumerated; otherwise the evidence and a *GPUError per GPU that failed, joined.
// A GPU that answers ERROR_NOT_SUPPORTED is not in CC mode: no evidence, no error. No NVML
// call can crash the worker from here: a panicking call is that GPU's error.
func (c CCAttestation) Evidence(_ context.Context, ch Challenge, pub ed25519.PublicKey) (ev []GPUEvidence, err error) {
	shutdown, err := openNVML(c.NVML)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	state, ret, perr := safe(c.NVML.SystemGetConfComputeState)
	switch {
	case perr != nil:
		return nil, fmt.Errorf("nvml SystemGetConfComputeState: %w", perr)
	case absent(ret):
		return nil, fmt.Errorf("%w: NVML has no confidential computing", ErrUnsupported)
	case ret != nvml.SUCCESS:
		return nil, &nvmlError{gpu: -1, call: "SystemGetConfComputeState", ret: ret}
	case state.CcFeature != nvml.CC_SYSTEM_FEATURE_ENABLED:
		return nil, fmt.Errorf("%w: confidential computing is off", ErrUnsupported)
	}
	n, ret, perr := safe(c.NVML.DeviceGetCount)
	switch {
	case perr != nil:
		return nil, fmt.Errorf("nvml DeviceGetCount: %w", perr)
	case ret != nvml.SUCCESS:
		return nil, &nvmlError{gpu: -1, call: "DeviceGetCount", ret: ret}
	}
	var errs []error
	for i := range min(n, attest.MaxSnapshotGPUs) {
		e, ok, err := c.gpu(i, ch, pub)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			ev = append(ev, e)
		}
	}
	if len(ev) == 0 && len(errs) == 0 {
		return nil, fmt.Errorf("%w: no GPU is in confidential-computing mode", ErrUnsupported)
	}
	return ev, errors.Join(errs...)
}

// gpu collects the evidence of the GPU at NVML index i: ok is false (and err nil) for a GPU
// not in CC mode; err is a *GPUError when collection failed.
func (c CCAttestation) gpu(i int, ch Challenge, pub ed25519.PublicKey) (ev GPUEvidence, ok bool, err error) {
	fail := func(format string, args ...any) (GPUEvidence, bool, error) {
		return GPUEvidence{}, false, &GPUError{Index: i, UUID: ev.UUID, Err: fmt.Errorf(format, args...)}
	}
	ev.Index = i
	dev, ret, perr := safe(func() (nvml.Device, nvml.Return) { return c.NVML.DeviceGetHandleByIndex(i) })
	if perr != nil || ret != nvml.SUCCESS {
		return fail("DeviceGetHandleByIndex: %v", orRet(perr, ret))
	}
	if uuid, ret, perr := safe(dev.GetUUID); perr == nil && ret == nvml.SUCCESS {
		ev.UUID = uuid // only for the logs
	}

	cert, ret, perr := safe(dev.GetConfComputeGpuCertificate)
	switch {
	case perr != nil:
		return fail("GetConfComputeGpuCertificate: %v", perr)
	case absent(ret):
		return GPUEvidence{}, false, nil // not in CC mode
	case ret != nvml.SUCCESS:
		return fail("GetConfComputeGpuCertificate: %s", ret.Error())
	}
	// The attestation chain (leaf: the key that signs the reports), not CertChain (the GPU's
	// device identity chain without the attestation leaf).
	ev.Chain = clip(cert.AttestationCertChain[:], cert.AttestationCertChainSize)
	if len(bytes.Trim(ev.Chain, "\x00 \r\n\t")) == 0 {
		return fail("GetConfComputeGpuCertificate returned an empty attestation certificate chain")
	}

	nonce := attest.CCNonce(ch.ID, ch.Nonce, pub, i)
	rep := new(nvml.ConfComputeGpuAttestationReport) // 12 KB: not on the stack of a loop
	rep.Nonce = nonce
	ret, perr = safeRet(func() nvml.Return { return dev.GetConfComputeGpuAttestationReport(rep) })
	switch {
	case perr != nil:
		return fail("GetConfComputeGpuAttestationReport: %v", perr)
	case absent(ret):
		return GPUEvidence{}, false, nil
	case ret != nvml.SUCCESS:
		return fail("GetConfComputeGpuAttestationReport: %s", ret.Error())
	}
	ev.Report = clip(rep.AttestationReport[:], rep.AttestationReportSize)
	if len(ev.Report) == 0 {
		return fail("GetConfComputeGpuAttestationReport returned an empty report")
	}
	if got, isSPDM := spdmRequestNonce(ev.Report); isSPDM && !bytes.Equal(got, nonce[:]) {
		// A driver that ignored the nonce: the gateway would flag the report (CC_NONCE_MISMATCH).
		return fail("the report was made for another nonce than the one requested")
	}
	return ev, true, nil
}

// spdmRequestNonce returns the nonce of the SPDM GET_MEASUREMENTS request that opens an NVML
// attestation report (SPDMVersion, RequestResponseCode 0xE0, Param1, Param2, Nonce[32], ...);
// isSPDM is false when the report does not start with one, and then nothing is checked here.
func spdmRequestNonce(report []byte) (nonce []byte, isSPDM bool) {
	const getMeasurements = 0xE0
	if len(report) < 4+attest.CCNonceBytes || report[0]>>4 != 1 || report[1] != getMeasurements {
		return nil, false
	}
	return report[4 : 4+attest.CCNonceBytes], true
}

// safe calls an NVML function: a mock function left unset reads as ERROR_NOT_SUPPORTED (see
// guard), and any other panic is returned as an error instead of crashing the worker.
// Evidence is optional, so nothing in its collection may stop the proof.
func safe[T any](f func() (T, nvml.Return)) (v T, ret nvml.Return, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, ret, err = zero, nvml.ERROR_UNKNOWN, fmt.Errorf("NVML call panicked: %v", p)
		}
	}()
	v, ret = guard(f)
	return v, ret, nil
}

func safeRet(f func() nvml.Return) (nvml.Return, error) {
	_, ret, err := safe(func() (struct{}, nvml.Return) { return struct{}{}, f() })
	return ret, err
}

func orRet(err error, ret nvml.Return) any {
	if err != nil {
		return err
	}
	return ret.Error()
}

// clip copies the first n bytes of b (n bounded by len(b)).
func clip(b []byte, n uint32) []byte {
	return bytes.Clone(b[:min(int(n), len(b))])
}

// EvidenceInput encodes one GPU's evidence as the gateway's GpuEvidenceInput: the report in
// base64, the chain as PEM text when NVML returned PEM (trailing NULs dropped), else as base64
// of its DER bytes.
func EvidenceInput(e GPUEvidence) client.GpuEvidenceInput {
	chain := bytes.TrimRight(e.Chain, "\x00")
	text := string(chain)
	if !bytes.HasPrefix(bytes.TrimLeft(chain, " \r\n\t"), []byte("-----BEGIN ")) {
		text = base64.StdEncoding.EncodeToString(chain)
	}
	return client.GpuEvidenceInput{Index: e.Index, Report: base64.StdEncoding.EncodeToString(e.Report), CertificateChain: text}
}
