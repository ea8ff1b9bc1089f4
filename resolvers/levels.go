package resolvers

import (
	"context"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/verify"
)

// Verification levels (docs/attestation.md, "Verification levels"): the db and verify packages
// speak db.Level and db.GPUJudgement; these map them to the schema's types.

// deviceLevel is Device.verificationLevel.
func deviceLevel(d *db.Device) model.VerificationLevel { return model.VerificationLevel(d.DeviceLevel) }

// gpuLevel is GPU.verificationLevel.
func gpuLevel(g *db.GPU) model.VerificationLevel { return model.VerificationLevel(g.GPULevel) }

// filterByLevel sets the verificationLevel filter; nil leaves the level unfiltered.
func filterByLevel(f *db.DeviceFilter, l *model.VerificationLevel) error {
	if l == nil {
		f.Level = nil
		return nil
	}
	v := db.Level(*l)
	f.Level = &v
	return nil
}

// byLevel is NetworkStats.byVerificationLevel.
func byLevel(s *db.NetworkStats) []model.VerificationLevelCount {
	out := make([]model.VerificationLevelCount, 0, len(s.ByLevel))
	for _, c := range s.ByLevel {
		out = append(out, model.VerificationLevelCount{Level: model.VerificationLevel(c.Level), Devices: c.Devices, Gpus: c.GPUs})
	}
	return out
}

// attestationLevel is Attestation.level.
func attestationLevel(a *db.Attestation) model.VerificationLevel {
	return model.VerificationLevel(a.GivenLevel())
}

// attestationGPUs is Attestation.gpus (owner-only: Attestation is reached through
// DevicePrivate alone). It returns an error only for a stored value that does not decode.
func attestationGPUs(a *db.Attestation) ([]model.GpuEvidence, error) {
	js, err := db.DecodeGPUJudgements(a.GPUFacts)
	if err != nil {
		return nil, err
	}
	return gpuEvidence(js), nil
}

func gpuEvidence(js []db.GPUJudgement) []model.GpuEvidence {
	out := make([]model.GpuEvidence, 0, len(js))
	for _, j := range js {
		e := model.GpuEvidence{Index: j.Index, UUID: j.UUID, Level: model.VerificationLevel(j.Level),
			EvidenceSubmitted: j.EvidenceSubmitted, Reasons: j.Reasons, RevocationChecked: j.RevocationChecked,
			MeasurementsChecked: j.MeasurementsChecked, CertificateSerials: j.CertificateSerials}
		if e.Reasons == nil {
			e.Reasons = []string{}
		}
		if e.CertificateSerials == nil {
			e.CertificateSerials = []string{}
		}
		if j.Root != "" {
			r := model.AttestationRoot(j.Root)
			e.Root = &r
		}
		if j.DriverVersion != "" {
			v := j.DriverVersion
			e.DriverVersion = &v
		}
		if j.VBIOSVersion != "" {
			v := j.VBIOSVersion
			e.VbiosVersion = &v
		}
		out = append(out, e)
	}
	return out
}

// submitProof runs submitProof: the input's evidence goes to the verify service with the proof.
func (r *Resolver) submitProof(ctx context.Context, input model.ProofInput) (*model.ProofResult, error) {
	sub := verify.Submission{ChallengeID: input.ChallengeID, Counter: input.Counter,
		Snapshot: input.Snapshot, SnapshotHash: input.SnapshotHash, Signature: input.Signature}
	for _, e := range input.Evidence {
		sub.Evidence = append(sub.Evidence, verify.GPUEvidence{Index: e.Index, Report: e.Report, CertificateChain: e.CertificateChain})
	}
	v, err := r.Workers.Proof(ctx, sub)
	if err != nil {
		return nil, err
	}
	return &model.ProofResult{Verdict: v.Verdict, Reasons: v.Reasons, Verification: v.Level.State(),
		Level: model.VerificationLevel(v.Level), Gpus: gpuEvidence(v.GPUs)}, nil
}
