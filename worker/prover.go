package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpugate/gpugate/attest"
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

// A Prover adds evidence bound to a challenge to the snapshot before the hash proof of work
// (attest.Prove, always run) hashes and signs it, so the evidence is covered by the proof.
// Today that is NVIDIA confidential-computing attestation (CCAttestation); a CUDA compute
// proof would be another implementation (its results would need a field in attest.Snapshot).
type Prover interface {
	// Name identifies the prover in logs.
	Name() string
	// Evidence adds the prover's evidence for ch to snap. It returns an error wrapping
	// ErrUnsupported when the host cannot produce it (logged, the proof proceeds) and any
	// other error when it failed (logged, the proof proceeds without this evidence).
	Evidence(ctx context.Context, ch Challenge, snap *attest.Snapshot) error
}

// CCAttestation collects NVIDIA confidential-computing evidence through NVML on hosts where
// CC is enabled (Hopper and later): per GPU, the attestation report from
// GetConfComputeGpuAttestationReport over the challenge nonce, and the certificate chains
// from GetConfComputeGpuCertificate. It fills snap.Attestation; the gateway stores it with
// the verdict (it does not verify the NVIDIA signatures yet).
type CCAttestation struct {
	NVML nvml.Interface
}

// Name implements Prover.
func (CCAttestation) Name() string { return "nvml-cc-attestation" }

// ccNonceSize is the size of nvmlConfComputeGpuAttestationReport_t.nonce.
const ccNonceSize = 32

// Evidence implements Prover. It returns an error wrapping ErrUnsupported when CC is not
// enabled on the system, when no GPU produced a report, or when the challenge nonce does not
// fit NVML's 32-byte nonce; an NVML error otherwise.
func (c CCAttestation) Evidence(_ context.Context, ch Challenge, snap *attest.Snapshot) (err error) {
	if len(ch.Nonce) != ccNonceSize {
		return fmt.Errorf("%w: the challenge nonce is %d bytes, NVML takes %d", ErrUnsupported, len(ch.Nonce), ccNonceSize)
	}
	shutdown, err := openNVML(c.NVML)
	if err != nil {
		return err
	}
	defer func() {
		if serr := shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	state, ret := guard(c.NVML.SystemGetConfComputeState)
	switch {
	case absent(ret):
		return fmt.Errorf("%w: NVML has no confidential computing", ErrUnsupported)
	case ret != nvml.SUCCESS:
		return &nvmlError{gpu: -1, call: "SystemGetConfComputeState", ret: ret}
	case state.CcFeature != nvml.CC_SYSTEM_FEATURE_ENABLED:
		return fmt.Errorf("%w: confidential computing is off", ErrUnsupported)
	}
	n, ret := guard(c.NVML.DeviceGetCount)
	if ret != nvml.SUCCESS {
		return &nvmlError{gpu: -1, call: "DeviceGetCount", ret: ret}
	}
	cc := &attest.CCReport{Nonce: bytes.Clone(ch.Nonce)}
	for i := range min(n, attest.MaxSnapshotGPUs) {
		dev, ret := guard(func() (nvml.Device, nvml.Return) { return c.NVML.DeviceGetHandleByIndex(i) })
		if ret != nvml.SUCCESS {
			return &nvmlError{gpu: i, call: "DeviceGetHandleByIndex", ret: ret}
		}
		uuid, ret := guard(dev.GetUUID)
		if ret != nvml.SUCCESS {
			return &nvmlError{gpu: i, call: "GetUUID", ret: ret}
		}
		var rep nvml.ConfComputeGpuAttestationReport
		copy(rep.Nonce[:], ch.Nonce)
		ret = guardRet(func() nvml.Return { return dev.GetConfComputeGpuAttestationReport(&rep) })
		if absent(ret) {
			continue // this GPU is not CC-capable
		}
		if ret != nvml.SUCCESS {
			return &nvmlError{gpu: i, call: "GetConfComputeGpuAttestationReport", ret: ret}
		}
		r := attest.CCGPUReport{UUID: uuid, Report: clip(rep.AttestationReport[:], rep.AttestationReportSize)}
		if rep.IsCecAttestationReportPresent != 0 {
			r.CECReport = clip(rep.CecAttestationReport[:], rep.CecAttestationReportSize)
		}
		cert, ret := guard(dev.GetConfComputeGpuCertificate)
		switch {
		case ret == nvml.SUCCESS:
			r.CertChain = clip(cert.CertChain[:], cert.CertChainSize)
			r.AttestationCertChain = clip(cert.AttestationCertChain[:], cert.AttestationCertChainSize)
		case !absent(ret):
			return &nvmlError{gpu: i, call: "GetConfComputeGpuCertificate", ret: ret}
		}
		cc.GPUs = append(cc.GPUs, r)
	}
	if len(cc.GPUs) == 0 {
		return fmt.Errorf("%w: no GPU returned an attestation report", ErrUnsupported)
	}
	snap.Attestation = cc
	return nil
}

// clip copies the first n bytes of b (n bounded by len(b)).
func clip(b []byte, n uint32) []byte {
	return bytes.Clone(b[:min(int(n), len(b))])
}
