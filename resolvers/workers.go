package resolvers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/gpugate/gpugate/internal/ttlcache"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
)

// WorkerConfig holds the proof-of-work and heartbeat settings.
type WorkerConfig struct {
	Difficulty     int           // leading zero bits; default 16
	ChallengeTTL   time.Duration // default 2 min
	HeartbeatEvery time.Duration // what workers are told; default 30 s
	// HeartbeatBatchWait is how long a heartbeat may wait for others to share its write
	// (default 5 ms; negative: write each alone).
	HeartbeatBatchWait time.Duration
	// AllowSimulatedGPUs accepts the PCI ids only go-nvml's mock servers report (off: each is a
	// SIMULATED_GPU finding). The serve command turns it on in dev mode.
	AllowSimulatedGPUs bool

	// Per-device-key limits (token buckets), sized so a genuine worker (a heartbeat every
	// HeartbeatEvery, a proof every few minutes at most, retries) never meets them. Defaults:
	// heartbeats a burst of 20 then one per HeartbeatEvery/6 (5 s); challenges and proofs a
	// burst of 10 then one per 20 s. A negative Every disables a limit.
	HeartbeatRate, ChallengeRate, ProofRate Rate
	// EnrollmentTokenRate limits createEnrollmentToken per user (default a burst of 20, then one
	// per minute): every token enrolls a device whose snapshot (up to 644 KiB) and row outlive
	// it (removal is soft), so tokens are what bounds an account's enrollment flood.
	EnrollmentTokenRate Rate
	// AddressChurn is when a device's changing source address becomes a review finding.
	AddressChurn db.AddressChurn
	// AddressRefresh is how often an unchanged source address is written again to refresh its
	// last-seen time (default 10 min): the heartbeat path writes only when an address changes.
	AddressRefresh time.Duration
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Difficulty <= 0 {
		c.Difficulty = 16
	}
	if c.ChallengeTTL <= 0 {
		c.ChallengeTTL = 2 * time.Minute
	}
	if c.HeartbeatEvery <= 0 {
		c.HeartbeatEvery = 30 * time.Second
	}
	if c.HeartbeatBatchWait == 0 {
		c.HeartbeatBatchWait = 5 * time.Millisecond
	}
	if c.HeartbeatRate == (Rate{}) {
		c.HeartbeatRate = Rate{Every: c.HeartbeatEvery / 6, Burst: 20}
	}
	if c.ChallengeRate == (Rate{}) {
		c.ChallengeRate = Rate{Every: 20 * time.Second, Burst: 10}
	}
	if c.ProofRate == (Rate{}) {
		c.ProofRate = Rate{Every: 20 * time.Second, Burst: 10}
	}
	if c.EnrollmentTokenRate == (Rate{}) {
		c.EnrollmentTokenRate = Rate{Every: time.Minute, Burst: 20}
	}
	c.AddressChurn = c.AddressChurn.WithDefaults()
	if c.AddressRefresh <= 0 {
		c.AddressRefresh = 10 * time.Minute
	}
	return c
}

// rate returns the per-key limit of a worker operation.
func (c WorkerConfig) rate(op string) Rate {
	switch op {
	case "heartbeat":
		return c.HeartbeatRate
	case "requestChallenge":
		return c.ChallengeRate
	case "submitProof":
		return c.ProofRate
	case "createEnrollmentToken":
		return c.EnrollmentTokenRate
	}
	return Rate{}
}

// evidenceState is the in-process state of the worker limits: the token buckets and the
// (device, address) pairs written lately.
type evidenceState struct {
	limits    *limiter
	addresses *ttlcache.LRU[string, struct{}]
}

func newEvidenceState(c WorkerConfig) *evidenceState {
	refill := max(c.HeartbeatRate.Every*time.Duration(c.HeartbeatRate.Burst),
		c.ChallengeRate.Every*time.Duration(c.ChallengeRate.Burst), c.ProofRate.Every*time.Duration(c.ProofRate.Burst),
		c.EnrollmentTokenRate.Every*time.Duration(c.EnrollmentTokenRate.Burst))
	return &evidenceState{limits: newLimiter(refill),
		addresses: ttlcache.New[string, struct{}](200_000, c.AddressRefresh)}
}

// recordAddress stores the request's source address for the device when it is new or was last
// written more than AddressRefresh ago, so the hot heartbeat path writes only on a change. A
// churn finding goes to the audit log for review; the request is never refused for it.
func (r *Resolver) recordAddress(ctx context.Context, p deviceauth.Principal, w guard.Write) error {
	host, _, err := net.SplitHostPort(p.RemoteAddr)
	if err != nil || net.ParseIP(host) == nil {
		return nil
	}
	key := p.DeviceID + "|" + host
	if r.evidence.addresses.Contains(key) {
		return nil
	}
	f, err := r.DB.RecordAddress(ctx, p.DeviceID, host, r.Workers.AddressChurn)
	if err != nil {
		return err
	}
	r.evidence.addresses.Add(key, struct{}{})
	if f != nil {
		r.Guard.Denied(ctx, w, fmt.Sprintf("%s: %d distinct source networks within %s (limit %d); review, not blocked",
			db.ReasonAddressChurn, f.Distinct, r.Workers.AddressChurn.Window, r.Workers.AddressChurn.Limit))
	}
	return nil
}

const maxHeartbeatGPUs = 64

// deviceWrite runs one worker mutation through the guard, as the signing device.
func (r *Resolver) deviceWrite(ctx context.Context, op string, fn func(ctx context.Context, p deviceauth.Principal) error) error {
	p, ok := deviceauth.PrincipalFrom(ctx)
	if !ok { // the @device directive guarantees it; stay closed if a field forgot the directive
		return fmt.Errorf("sign the request with the device key: %w", deviceauth.ErrUnauthenticated)
	}
	w := guard.Write{Op: op, Actor: "device:" + p.DeviceID, Target: p.DeviceID}
	// The limit comes first: a limited request writes nothing, not even its address. It is kept
	// per device, not per key: an owner may add keys to a device (rotation), and each key must
	// not bring its own allowance.
	if err := r.evidence.limits.allow(op, p.DeviceID, r.Workers.rate(op)); err != nil {
		r.Guard.Denied(ctx, w, "rate limited")
		return err
	}
	if err := r.recordAddress(ctx, p, w); err != nil {
		return err
	}
	return r.Guard.Do(ctx, w, func(ctx context.Context) error { return fn(ctx, p) })
}

func (r *Resolver) enrollmentToken(ctx context.Context) (*model.EnrollmentToken, error) {
	u, err := r.currentUser(ctx)
	if err != nil {
		return nil, err
	}
	var out model.EnrollmentToken
	w := guard.Write{Op: "createEnrollmentToken", Actor: u.ID}
	if err := r.evidence.limits.allow(w.Op, "user:"+u.ID, r.Workers.rate(w.Op)); err != nil {
		r.Guard.Denied(ctx, w, "rate limited")
		return nil, err
	}
	err = r.Guard.Do(ctx, w, func(ctx context.Context) error {
		out.Token, out.ExpiresAt, err = r.DB.CreateEnrollmentToken(ctx, u.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (r *Resolver) enroll(ctx context.Context, in model.EnrollDeviceInput) (*model.EnrolledDevice, error) {
	e, ok := deviceauth.EnrollmentFrom(ctx)
	if !ok {
		r.deny(ctx, "", "", "unsigned enrollment")
		return nil, fmt.Errorf("sign the enrollment request with the key being enrolled: %w", deviceauth.ErrUnauthenticated)
	}
	pub, err := db.ParsePublicKey(in.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := e.VerifyEnrollment(pub); err != nil {
		r.deny(ctx, "", "", "bad enrollment signature")
		return nil, err
	}
	snap, err := attest.ParseSnapshot([]byte(in.Snapshot))
	if err != nil {
		return nil, db.Invalidf("snapshot: %v", err)
	}
	if err := db.CheckSnapshotSize(len(in.Snapshot), len(snap.GPUs)); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(e.RemoteAddr())
	var out model.EnrolledDevice
	err = r.Guard.Do(ctx, guard.Write{Op: "enrollDevice", Actor: "key:" + db.Fingerprint(pub)[:16]}, func(ctx context.Context) error {
		id, cred, err := r.DB.Enroll(ctx, db.Enrollment{Token: in.Token, PublicKey: pub, Name: deref(in.Name),
			Region: in.Region, Hostname: deref(in.Hostname), IP: host, Snapshot: snap})
		out = model.EnrolledDevice{DeviceID: id, CredentialID: cred}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (r *Resolver) challenge(ctx context.Context) (*model.Challenge, error) {
	var c db.IssuedChallenge
	err := r.deviceWrite(ctx, "requestChallenge", func(ctx context.Context, p deviceauth.Principal) error {
		var err error
		c, err = r.DB.CreateChallenge(ctx, p.DeviceID, r.Workers.Difficulty, r.Workers.ChallengeTTL)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &model.Challenge{ID: c.ID, Nonce: base64.StdEncoding.EncodeToString(c.Nonce),
		Difficulty: c.Difficulty, ExpiresAt: c.ExpiresAt}, nil
}

// proof checks a submitted proof and stores its verdict. Malformed input is refused before the
// challenge is touched; everything after that is a verdict (FLAGGED with reasons), never an error,
// so the owner sees why.
func (r *Resolver) proof(ctx context.Context, in model.ProofInput) (*model.ProofResult, error) {
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
	proof := attest.Proof{ChallengeID: challengeID, Counter: counter, Snapshot: snap, SnapshotHash: claimedHash, Signature: sig}
	var res model.ProofResult
	err = r.deviceWrite(ctx, "submitProof", func(ctx context.Context, p deviceauth.Principal) error {
		rec := db.ProofRecord{DeviceID: p.DeviceID, ChallengeID: challengeID, Snapshot: &snap, ProofHash: db.ProofHash(proof)}
		ch, reason, err := r.DB.OpenChallenge(ctx, p.DeviceID, challengeID)
		if err != nil {
			return err
		}
		var verdict db.AttestationVerdict
		var reasons []string
		var state db.VerificationState
		if reason == "" {
			rec.Findings, rec.Accomplices, err = r.judge(ctx, p, ch, proof)
			if err != nil {
				return err
			}
			var consumed bool
			if consumed, verdict, reasons, state, err = r.DB.ConsumeAndRecord(ctx, rec); err != nil {
				return err
			}
			if !consumed { // a concurrent submission or the clock got there first
				if _, reason, err = r.DB.OpenChallenge(ctx, p.DeviceID, challengeID); err != nil {
					return err
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
			if verdict, reasons, state, seen, err = r.DB.PriorVerdict(ctx, p.DeviceID, challengeID, rec.ProofHash); err != nil {
				return err
			}
			if seen {
				res = model.ProofResult{Verdict: verdict, Reasons: reasons, Verification: state}
				return nil
			}
			// Refused before the challenge checked out: the finding and the submission's hash
			// are kept, never its snapshot (anyone with a key could otherwise store a payload
			// per made-up challenge id).
			rec.Snapshot = nil
			rec.Findings, rec.Accomplices = []attest.Finding{{Reason: reason, Detail: reason.Description()}}, nil
			if verdict, reasons, state, err = r.DB.RecordProof(ctx, rec); err != nil {
				return err
			}
		}
		res = model.ProofResult{Verdict: verdict, Reasons: reasons, Verification: state}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// judge runs every check on a proof whose challenge was just consumed: the work and signature,
// the host-level counterfeit rules, the changes since enrollment and the GPU identities other
// devices hold (after letting the device take over the claims the rules now give it).
func (r *Resolver) judge(ctx context.Context, p deviceauth.Principal, ch db.IssuedChallenge, proof attest.Proof) ([]attest.Finding, []db.Accomplice, error) {
	if err := attest.VerifyProof(p.PublicKey, ch.Nonce, ch.Difficulty, proof); err != nil {
		reason := attest.ReasonForError(err)
		if reason == "" {
			reason = attest.ReasonMalformedProof
		}
		return []attest.Finding{{Reason: reason, Detail: reason.Description()}}, nil, nil
	}
	findings := attest.CheckSnapshotWith(proof.Snapshot, attest.Policy{AllowSimulated: r.Workers.AllowSimulatedGPUs})
	enrolled, ok, err := r.enrollmentSnapshot(ctx, p.DeviceID)
	if err != nil {
		return nil, nil, err
	}
	if ok {
		findings = append(findings, attest.CompareEnrollment(enrolled, proof.Snapshot)...)
	}
	claims, accomplices, err := r.DB.GPUClaims(ctx, p.DeviceID, proof.Snapshot)
	if err != nil {
		return nil, nil, err
	}
	if ok && slices.ContainsFunc(claims, func(f attest.Finding) bool { return f.Reason == attest.ReasonUUIDOnAnotherDevice }) {
		// A claim may have become this device's since enrollment (its holder, a removed device of
		// the same owner, was released from quarantine): apply the claim rules again to the GPUs
		// it enrolled with and still reports, then judge what is left.
		uuids, _ := proof.Snapshot.IdentityKeys()
		if err := r.DB.ReclaimGPUs(ctx, p.DeviceID, enrolled, uuids); err != nil {
			return nil, nil, err
		}
		if claims, accomplices, err = r.DB.GPUClaims(ctx, p.DeviceID, proof.Snapshot); err != nil {
			return nil, nil, err
		}
	}
	for _, a := range accomplices {
		// Not a verdict on the earlier device: anyone can list public UUIDs. An admin decides.
		r.Guard.Denied(ctx, guard.Write{Op: "submitProof", Actor: "device:" + p.DeviceID, Target: a.DeviceID},
			"GPU identity conflict ("+string(a.Reason)+"): review both devices")
	}
	return append(findings, claims...), accomplices, nil
}

func (r *Resolver) heartbeat(ctx context.Context, in model.HeartbeatInput) (*model.HeartbeatAck, error) {
	if len(in.Gpus) > maxHeartbeatGPUs {
		return nil, db.Invalidf("gpus: at most %d readings", maxHeartbeatGPUs)
	}
	for _, g := range in.Gpus {
		if _, err := db.CleanText("gpus.uuid", g.UUID, 96); err != nil {
			return nil, err
		}
		if len(g.UUID) > 96 || !inRange(g.UtilizationPercent, 0, 100) || !inRange(g.TemperatureC, -50, 200) ||
			!inRange(g.MemoryUsedMiB, 0, 1<<24) || !inRange(g.PowerWatts, 0, 100_000) {
			return nil, db.Invalidf("gpus: a reading is out of range (uuid <= 96 bytes, utilization 0..100, temperature -50..200)")
		}
	}
	readings, err := json.Marshal(in.Gpus)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	var st db.DeviceStatus
	err = r.deviceWrite(ctx, "heartbeat", func(ctx context.Context, p deviceauth.Principal) error {
		st, err = r.heartbeats.Record(ctx, p.DeviceID, readings)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &model.HeartbeatAck{Status: st, NextInSeconds: int(r.Workers.HeartbeatEvery.Seconds())}, nil
}

func inRange(v *int, lo, hi int) bool { return v == nil || *v >= lo && *v <= hi }

func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not base64")
}

// enrollmentSnapshot returns the (immutable) snapshot a device enrolled with, cached.
func (r *Resolver) enrollmentSnapshot(ctx context.Context, deviceID string) (attest.Snapshot, bool, error) {
	if s, ok := r.enrolled.Get(deviceID); ok {
		return s, true, nil
	}
	s, ok, err := r.DB.EnrollmentSnapshot(ctx, deviceID)
	if err == nil && ok {
		r.enrolled.Add(deviceID, s)
	}
	return s, ok, err
}
