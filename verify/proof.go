package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/guard"
)

// Challenge issues a proof-of-work challenge to the device that signed the request. It returns
// the deviceWrite errors or the store's (too many open challenges among them).
func (s *Service) Challenge(ctx context.Context) (*db.IssuedChallenge, error) {
	var c db.IssuedChallenge
	err := s.deviceWrite(ctx, "requestChallenge", func(ctx context.Context, p deviceauth.Principal) error {
		var err error
		c, err = s.db.CreateChallenge(ctx, p.DeviceID, s.cfg.Difficulty, s.cfg.ChallengeTTL)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// Submission is a proof as the worker sends it (the fields of the submitProof input).
type Submission struct {
	ChallengeID  string
	Counter      string  // decimal uint64 found by the proof-of-work search
	Snapshot     string  // the GPU snapshot as JSON; hashed here, never trusted as sent
	SnapshotHash *string // base64 SHA-256 of the canonical snapshot the work was done over
	Signature    string  // base64 Ed25519 signature of the proof transcript
	// Evidence is the confidential-computing evidence of GPUs in CC mode (cc.go).
	Evidence []GPUEvidence
}

// Verdict is the outcome of a proof and the device's verification level after it.
type Verdict struct {
	Verdict      db.AttestationVerdict
	Reasons      []string // reason codes (attest.Reason), empty when passed
	Verification db.VerificationState
	Level        db.Level
	GPUs         []db.GPUJudgement // how each GPU was judged, by index; empty if refused before judging
}

// Proof checks a submitted proof and stores its verdict. Malformed input is refused before the
// challenge is touched (a db.ErrInvalid error, or the evidence budget's); everything after that
// is a verdict (FLAGGED with reasons), never an error, so the owner sees why. A retry of a
// proof already judged gets its original verdict and stores nothing. It returns the
// deviceWrite errors or the store's.
func (s *Service) Proof(ctx context.Context, in Submission) (*Verdict, error) {
	counter, err := strconv.ParseUint(in.Counter, 10, 64)
	if err != nil {
		return nil, db.Invalidf("counter must be a decimal unsigned 64-bit integer")
	}
	sig, err := decodeB64(in.Signature)
	if err != nil || len(sig) > 128 {
		return nil, db.Invalidf("signature must be base64")
	}
	var claimedHash []byte
	if in.SnapshotHash != nil {
		if claimedHash, err = decodeB64(*in.SnapshotHash); err != nil || len(claimedHash) != 32 {
			return nil, db.Invalidf("snapshotHash must be the base64 of 32 bytes")
		}
	}
	if len(in.Snapshot) > db.MaxStoredSnapshotBytes { // before parsing: no host needs more
		return nil, db.CheckSnapshotSize(len(in.Snapshot), db.SnapshotBudgetGPUs)
	}
	snap, err := attest.ParseSnapshot([]byte(in.Snapshot))
	if err != nil {
		return nil, db.Invalidf("snapshot: %v", err)
	}
	if err := db.CheckSnapshotSize(len(in.Snapshot), len(snap.GPUs)); err != nil {
		return nil, err
	}
	challengeID, err := db.ParseDeviceID(in.ChallengeID) // challenge ids are UUIDs too
	if err != nil {
		return nil, db.Invalidf("challengeId is not a challenge ID")
	}
	evidence, err := parseEvidence(in.Evidence, len(snap.GPUs))
	if err != nil {
		return nil, err
	}
	proof := attest.Proof{ChallengeID: challengeID, Counter: counter, Snapshot: snap, SnapshotHash: claimedHash, Signature: sig}
	var res Verdict
	err = s.deviceWrite(ctx, "submitProof", func(ctx context.Context, p deviceauth.Principal) error {
		res, err = s.decide(ctx, p, proof, evidence)
		if err == nil && res.Verdict == db.VerdictFlagged {
			guard.Flag(ctx, strings.Join(res.Reasons, ","))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// decide consumes the proof's challenge, judges the proof and stores the verdict; a proof
// whose challenge does not check out (unknown, expired, used, another device's) is stored as
// that one finding, unless it is a retry of a proof already judged. The judging, evidence
// verification included, happens before the challenge-consuming transaction.
func (s *Service) decide(ctx context.Context, p deviceauth.Principal, proof attest.Proof, evidence map[int]nvidia.Evidence) (Verdict, error) {
	challengeID := proof.ChallengeID
	rec := db.ProofRecord{DeviceID: p.DeviceID, ChallengeID: challengeID, Snapshot: &proof.Snapshot, ProofHash: db.ProofHash(proof)}
	// The GPU claims of other devices are read with the challenge (one round trip); a second
	// judgement reads them again.
	ch, reason, claims, err := s.openChallengeClaims(ctx, p.DeviceID, challengeID, proof.Snapshot)
	if err != nil {
		return Verdict{}, err
	}
	var v Verdict
	if reason == "" {
		var consumed bool
		// Twice at most: a concurrent proof that bound one of this proof's GPU hardware
		// identities after it was judged makes the store refuse the record (nothing written,
		// challenge still open); judged again, the proof sees that binding.
		for attempt := 0; ; attempt++ {
			var cc ccJudged
			rec.Findings, rec.Accomplices, cc, err = s.judge(ctx, p, ch, proof, evidence, claims)
			claims = nil
			if err != nil {
				return Verdict{}, err
			}
			rec.Level = cc.levels(attest.Flagged(rec.Findings))
			rec.GPUs, rec.Bindings = cc.gpus, cc.bindings
			v.Level, v.GPUs = rec.Level, rec.GPUs
			consumed, v.Verdict, v.Reasons, v.Verification, err = s.consumeAndRecord(ctx, rec)
			if errors.Is(err, db.ErrHardwareContended) && attempt == 0 {
				continue
			}
			if err != nil {
				return Verdict{}, err
			}
			break
		}
		if !consumed { // a concurrent submission or the clock got there first
			if _, reason, err = s.db.OpenChallenge(ctx, p.DeviceID, challengeID); err != nil {
				return Verdict{}, err
			}
			if reason == "" {
				reason = attest.ReasonChallengeReplayed
			}
		}
	}
	if reason != "" {
		// A retry of a proof already judged (lost response, client or proxy retry) gets its
		// original verdict and stores nothing; only a different proof is a finding.
		var seen bool
		if v.Verdict, v.Reasons, v.Verification, seen, err = s.db.PriorVerdict(ctx, p.DeviceID, challengeID, rec.ProofHash); err != nil {
			return Verdict{}, err
		}
		if seen {
			// The original level and GPU judgements too: a retry is judged once.
			if v.Level, v.GPUs, _, err = s.db.PriorJudgement(ctx, p.DeviceID, challengeID, rec.ProofHash); err != nil {
				return Verdict{}, err
			}
			return v, nil
		}
		// Refused before the challenge checked out: the finding and the submission's hash
		// are kept, never its snapshot (anyone with a key could otherwise store a payload
		// per made-up challenge id).
		rec.Snapshot = nil
		rec.Findings, rec.Accomplices = []attest.Finding{{Reason: reason, Detail: reason.Description()}}, nil
		rec.Level, rec.GPUs, rec.Bindings = "", nil, nil
		if v.Verdict, v.Reasons, v.Verification, err = s.db.RecordProof(ctx, rec); err != nil {
			return Verdict{}, err
		}
		v.Level, v.GPUs = db.LevelFlagged, nil
		if v.Verdict == db.VerdictPassed { // no finding of a refusal passes; kept consistent regardless
			v.Level = db.LevelSelfReported
		}
	}
	if v.GPUs == nil {
		v.GPUs = []db.GPUJudgement{}
	}
	return v, nil
}

// consumeAndRecord stores a judged proof's verdict through the batching writer, or alone when
// batching is off. It returns db.ConsumeAndRecord's results and errors.
func (s *Service) consumeAndRecord(ctx context.Context, rec db.ProofRecord) (bool, db.AttestationVerdict, []string, db.VerificationState, error) {
	if s.verdicts == nil {
		return s.db.ConsumeAndRecord(ctx, rec)
	}
	return s.verdicts.ConsumeAndRecord(ctx, rec)
}

// openChallengeClaims reads the challenge and the GPU claims through the writer's prepared
// statement, or directly when batching is off. It returns db.OpenChallengeClaims's results.
func (s *Service) openChallengeClaims(ctx context.Context, deviceID, challengeID string, snap attest.Snapshot) (db.IssuedChallenge, attest.Reason, *db.Claims, error) {
	if s.verdicts == nil {
		return s.db.OpenChallengeClaims(ctx, deviceID, challengeID, snap)
	}
	return s.verdicts.OpenChallengeClaims(ctx, deviceID, challengeID, snap)
}

// judge runs every check on a proof whose challenge is open: the work and signature, the
// host-level counterfeit rules, the changes since enrollment and the GPU identities other
// devices hold (after letting the device take over the claims the rules now give it). Each
// check adds attest.Findings; a further kind of evidence is one more check here. Identity
// conflicts go to the audit log for an admin. Confidential-computing evidence is verified
// (judgeEvidence) only for a proof whose work and signature hold. pre, when set, holds the GPU
// claims read with the challenge (db.OpenChallengeClaims). It returns only the store's errors.
func (s *Service) judge(ctx context.Context, p deviceauth.Principal, ch db.IssuedChallenge, proof attest.Proof,
	evidence map[int]nvidia.Evidence, pre *db.Claims) ([]attest.Finding, []db.Accomplice, ccJudged, error) {
	if err := attest.VerifyProof(p.PublicKey, ch.Nonce, ch.Difficulty, proof); err != nil {
		reason := attest.ReasonForError(err)
		if reason == "" {
			reason = attest.ReasonMalformedProof
		}
		return []attest.Finding{{Reason: reason, Detail: reason.Description()}}, nil, ccJudged{}, nil
	}
	findings := attest.CheckSnapshotWith(proof.Snapshot, attest.Policy{AllowSimulated: s.cfg.AllowSimulatedGPUs})
	ccFindings, cc, err := s.judgeEvidence(ctx, p, ch, proof, evidence)
	if err != nil {
		return nil, nil, ccJudged{}, err
	}
	findings = append(findings, ccFindings...)
	enrolled, ok, err := s.enrollmentSnapshot(ctx, p.DeviceID)
	if err != nil {
		return nil, nil, ccJudged{}, err
	}
	if ok {
		findings = append(findings, attest.CompareEnrollment(enrolled, proof.Snapshot)...)
	}
	var claims []attest.Finding
	var accomplices []db.Accomplice
	if pre != nil {
		claims, accomplices = pre.Findings, pre.Accomplices
	} else if claims, accomplices, err = s.db.GPUClaims(ctx, p.DeviceID, proof.Snapshot); err != nil {
		return nil, nil, ccJudged{}, err
	}
	if ok && slices.ContainsFunc(claims, func(f attest.Finding) bool { return f.Reason == attest.ReasonUUIDOnAnotherDevice }) {
		// A claim may have become this device's since enrollment (its holder, a removed device of
		// the same owner, was released from quarantine): apply the claim rules again to the GPUs
		// it enrolled with and still reports, then judge what is left.
		uuids, _ := proof.Snapshot.IdentityKeys()
		if err := s.db.ReclaimGPUs(ctx, p.DeviceID, enrolled, uuids); err != nil {
			return nil, nil, ccJudged{}, err
		}
		if claims, accomplices, err = s.db.GPUClaims(ctx, p.DeviceID, proof.Snapshot); err != nil {
			return nil, nil, ccJudged{}, err
		}
	}
	for _, a := range accomplices {
		// Not a verdict on the earlier device: anyone can list public UUIDs. An admin decides.
		s.guard.Flagged(ctx, guard.Write{Op: "submitProof", Actor: "device:" + p.DeviceID, Target: a.DeviceID}, string(a.Reason))
	}
	return append(findings, claims...), accomplices, cc, nil
}

// enrollmentSnapshot returns the (immutable) snapshot a device enrolled with, cached.
func (s *Service) enrollmentSnapshot(ctx context.Context, deviceID string) (attest.Snapshot, bool, error) {
	if snap, ok := s.enrolled.Get(deviceID); ok {
		return snap, true, nil
	}
	snap, ok, err := s.db.EnrollmentSnapshot(ctx, deviceID)
	if err == nil && ok {
		s.enrolled.Add(deviceID, snap)
	}
	return snap, ok, err
}

// decodeB64 accepts any of the four base64 alphabets; it returns an error if none decodes s.
func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not base64")
}
