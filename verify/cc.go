package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"runtime"
	"slices"
	"sync"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
)

// Limits of the confidential-computing evidence of one proof (docs/security.md, "Workers").
// Breaking one refuses the whole submission with ErrInvalid before its challenge is touched.
const (
	// MaxEvidenceEntries is the most evidence entries one proof may carry: the most GPUs a
	// snapshot may list (attest.MaxSnapshotGPUs).
	MaxEvidenceEntries = attest.MaxSnapshotGPUs
	// MaxEvidenceBytes bounds a report and a certificate chain, each, decoded (a PEM chain as
	// sent). NVML's buffers are 8 KiB for the report and 4-5 KiB for a chain.
	MaxEvidenceBytes = 16 << 10
)

// GPUEvidence is one GPU's confidential-computing evidence as the worker submits it (the
// GpuEvidenceInput of submitProof).
type GPUEvidence struct {
	Index            int    // the GPU's position in the snapshot (its NVML index)
	Report           string // base64 of the SPDM GET_MEASUREMENTS request and response
	CertificateChain string // PEM, or base64 of concatenated DER, leaf first
}

// parseEvidence decodes and checks the evidence entries of a proof whose snapshot lists gpus
// GPUs. It returns an ErrInvalid error for more than MaxEvidenceEntries entries, an index the
// snapshot does not have, an index given twice, or a report or chain that is not decodable or is
// over MaxEvidenceBytes; otherwise the entries by index.
func parseEvidence(in []GPUEvidence, gpus int) (map[int]nvidia.Evidence, error) {
	if len(in) > MaxEvidenceEntries {
		return nil, db.Invalidf("evidence has %d entries; at most %d (one per GPU)", len(in), MaxEvidenceEntries)
	}
	out := make(map[int]nvidia.Evidence, len(in))
	for _, e := range in {
		if e.Index < 0 || e.Index >= gpus {
			return nil, db.Invalidf("evidence index %d is not a GPU of the snapshot (0..%d)", e.Index, gpus-1)
		}
		if _, dup := out[e.Index]; dup {
			return nil, db.Invalidf("evidence index %d is given twice", e.Index)
		}
		report, err := decodeBounded(e.Report)
		if err != nil {
			return nil, db.Invalidf("evidence %d: report %v", e.Index, err)
		}
		chain, err := decodeChain(e.CertificateChain)
		if err != nil {
			return nil, db.Invalidf("evidence %d: certificateChain %v", e.Index, err)
		}
		out[e.Index] = nvidia.Evidence{Report: report, Chain: chain}
	}
	return out, nil
}

// decodeBounded decodes base64 of at most MaxEvidenceBytes, checking the length before decoding.
func decodeBounded(s string) ([]byte, error) {
	if len(s) > base64.StdEncoding.EncodedLen(MaxEvidenceBytes) {
		return nil, errTooLarge
	}
	b, err := decodeB64(s)
	switch {
	case err != nil || len(b) == 0:
		return nil, errNotBase64
	case len(b) > MaxEvidenceBytes:
		return nil, errTooLarge
	}
	return b, nil
}

// decodeChain accepts PEM (kept as sent: the verifier parses it) or base64 DER.
func decodeChain(s string) ([]byte, error) {
	t := bytes.TrimSpace([]byte(s))
	if !bytes.HasPrefix(t, []byte("-----BEGIN")) {
		return decodeBounded(s)
	}
	if len(t) > MaxEvidenceBytes {
		return nil, errTooLarge
	}
	if blk, _ := pem.Decode(t); blk == nil {
		return nil, errBadPEM
	}
	return t, nil
}

type evidenceError string

func (e evidenceError) Error() string { return string(e) }

const (
	errTooLarge  evidenceError = "is over 16 KiB decoded"
	errNotBase64 evidenceError = "must be non-empty base64"
	errBadPEM    evidenceError = "is not PEM (or base64 of DER)"
)

// ccJudged is what the evidence of a proof established, one entry per snapshot GPU: the facts
// shown to the owner and whether the GPU may be ATTESTED if the proof passes.
type ccJudged struct {
	gpus       []db.GPUJudgement
	attestable []bool
	bindings   []db.HardwareBinding
}

// judgeEvidence verifies each GPU's evidence against the nonce of this challenge, device key and
// GPU index (attest.CCNonce), then the hardware identities across the proof's GPUs and against
// those other GPUs attested with before. Each failure is a finding on that GPU (it flags the
// proof). A GPU without evidence is judged on its report alone: SELF_REPORTED at best. It
// returns only the store's errors.
func (s *Service) judgeEvidence(ctx context.Context, p deviceauth.Principal, ch db.IssuedChallenge, proof attest.Proof,
	evidence map[int]nvidia.Evidence) ([]attest.Finding, ccJudged, error) {
	n := len(proof.Snapshot.GPUs)
	j := ccJudged{gpus: make([]db.GPUJudgement, n), attestable: make([]bool, n)}
	results := make([]nvidia.Result, n)
	// Verification is CPU work (signatures, chains): spread over the cores, outside any
	// database transaction.
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, ev := range evidence {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			nonce := attest.CCNonce(proof.ChallengeID, ch.Nonce, p.PublicKey, i)
			results[i] = s.cfg.CC.Verify(ctx, ev, nonce[:])
		}()
	}
	wg.Wait()

	reasons := make([][]attest.Reason, n)
	hwOf := make([]string, n)
	byHW := map[string][]int{}
	var hwIDs, uuids []string
	for i, g := range proof.Snapshot.GPUs {
		uuid := attest.UUIDKey(g.UUID)
		if uuid == "" {
			uuid = g.UUID
		}
		j.gpus[i] = db.GPUJudgement{Index: i, UUID: uuid, Reasons: []string{}, CertificateSerials: []string{}}
		if _, ok := evidence[i]; !ok {
			continue
		}
		r := results[i]
		f := &j.gpus[i]
		f.EvidenceSubmitted = true
		f.Root, f.RevocationChecked, f.MeasurementsChecked = string(r.Root), r.RevocationChecked, r.MeasurementsChecked
		f.DriverVersion, f.VBIOSVersion = r.DriverVersion, r.VBIOSVersion
		if r.CertificateSerials != nil {
			f.CertificateSerials = r.CertificateSerials
		}
		reasons[i] = append(reasons[i], r.Reasons...)
		if r.OK() && r.HardwareID == "" || len(r.HardwareID) > db.MaxHardwareIDLen {
			// Verified evidence without a usable identity cannot be bound to one GPU.
			reasons[i] = append(reasons[i], attest.ReasonCCEvidenceMalformed)
		}
		if len(reasons[i]) == 0 {
			hwOf[i] = r.HardwareID
			byHW[r.HardwareID] = append(byHW[r.HardwareID], i)
			hwIDs, uuids = append(hwIDs, r.HardwareID), append(uuids, uuid)
		}
	}
	// One GPU's hardware for two GPUs of this proof: one real CC GPU must not vouch for others.
	for _, idx := range byHW {
		if len(idx) > 1 {
			for _, i := range idx {
				reasons[i] = append(reasons[i], attest.ReasonCCHardwareReused)
			}
		}
	}
	bound, err := s.db.HardwareBindings(ctx, hwIDs, uuids)
	if err != nil {
		return nil, ccJudged{}, err
	}
	for i, hw := range hwOf {
		if hw == "" {
			continue
		}
		uuid := j.gpus[i].UUID
		for _, b := range bound {
			switch {
			case b.HardwareID == hw && b.UUID != uuid:
				// The hardware attested earlier as another GPU (of this device or another): the
				// earlier binding keeps it, like a UUID claim.
				reasons[i] = append(reasons[i], attest.ReasonCCHardwareReused)
			case b.UUID == uuid && b.HardwareID != hw:
				reasons[i] = append(reasons[i], attest.ReasonCCHardwareChanged)
			}
		}
	}
	var findings []attest.Finding
	for i := range j.gpus {
		f := &j.gpus[i]
		for _, r := range reasons[i] {
			if !slices.Contains(f.Reasons, string(r)) {
				f.Reasons = append(f.Reasons, string(r))
				findings = append(findings, attest.Finding{Reason: r, GPU: f.UUID, Detail: r.Description()})
			}
		}
		if !f.EvidenceSubmitted || len(f.Reasons) > 0 {
			continue
		}
		// Configured requirements: evidence whose measurements or revocation could not be
		// checked verifies (the facts say what was not checked) but does not make the GPU
		// ATTESTED.
		if (s.cfg.RequireRIMs && !f.MeasurementsChecked) || (s.cfg.RequireRevocation && !f.RevocationChecked) {
			continue
		}
		j.attestable[i] = true
		j.bindings = append(j.bindings, db.HardwareBinding{HardwareID: hwOf[i], UUID: f.UUID})
	}
	return findings, j, nil
}

// levels sets each GPU's level and returns the device's, once the proof's verdict is known:
// a flagged proof makes the device and every GPU FLAGGED; a passing proof makes a GPU ATTESTED
// when its evidence verified (and met the configured requirements), SELF_REPORTED otherwise,
// and the device ATTESTED only when every GPU of the snapshot is. See docs/attestation.md,
// "Verification levels".
func (j *ccJudged) levels(flagged bool) db.Level {
	if flagged {
		for i := range j.gpus {
			j.gpus[i].Level = db.LevelFlagged
		}
		j.bindings = nil
		return db.LevelFlagged
	}
	device := db.LevelAttested
	if len(j.gpus) == 0 {
		device = db.LevelSelfReported
	}
	for i := range j.gpus {
		if j.attestable[i] {
			j.gpus[i].Level = db.LevelAttested
		} else {
			j.gpus[i].Level = db.LevelSelfReported
			device = db.LevelSelfReported
		}
	}
	return device
}
