package db

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/attest"
)

// Snapshot size budget (docs/security.md, "Workers"). A snapshot is stored with every judged
// proof, so its size is capped at what a real host needs, not at what the parser accepts
// (attest.MaxSnapshotBytes, 1 MiB).
//
// Measured with the worker's go-nvml simulator (worker.Simulate + Collect, JSON as the worker
// sends it): dgxh100 470 bytes per GPU, 96 bytes of host fields. The budget is the worst case
// NVML can produce instead: every GPU string field at attest.MaxFieldBytes (2,159 bytes of JSON)
// plus the numeric fields is under 2.5 KB, under 4 KiB. Confidential-computing evidence is not
// part of the snapshot (it travels in submitProof's evidence and is not stored).
const (
	// SnapshotBytesPerGPU is the budget of one GPU.
	SnapshotBytesPerGPU = 4 << 10
	// SnapshotHostBytes is the budget of the host fields (versions, JSON framing).
	SnapshotHostBytes = 4 << 10
	// SnapshotBudgetGPUs is the most GPUs the budget grows for: the largest plausible host
	// (attest.MaxGPUsPerHost). A snapshot listing more GPUs is judged (IMPLAUSIBLE_GPU_COUNT)
	// but gets no more room.
	SnapshotBudgetGPUs = attest.MaxGPUsPerHost
	// MaxStoredSnapshotBytes is the largest snapshot accepted at all: 84 KiB.
	MaxStoredSnapshotBytes = SnapshotHostBytes + SnapshotBudgetGPUs*SnapshotBytesPerGPU
)

// SnapshotBudget is the largest snapshot JSON accepted from a host reporting gpus GPUs.
func SnapshotBudget(gpus int) int {
	return SnapshotHostBytes + min(max(gpus, 1), SnapshotBudgetGPUs)*SnapshotBytesPerGPU
}

// CheckSnapshotSize returns an ErrInvalid when the snapshot JSON (size bytes, gpus GPUs) is over
// its budget, nil otherwise. Callers check it before anything is stored.
func CheckSnapshotSize(size, gpus int) error {
	if limit := SnapshotBudget(gpus); size > limit {
		return Invalidf("snapshot is %d bytes; a host with %d GPUs may send at most %d (%d per GPU + %d)",
			size, gpus, limit, SnapshotBytesPerGPU, SnapshotHostBytes)
	}
	return nil
}

// ProofHash is the SHA-256 of everything a proof submission says: the challenge, the counter,
// the signature, the snapshot hash the worker claimed and the canonical snapshot. Two
// submissions with the same hash are the same proof (a retry); any difference is another proof.
func ProofHash(p attest.Proof) []byte {
	h := sha256.New()
	frame := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	frame([]byte("gpugate/proof-submission/v1"))
	frame([]byte(p.ChallengeID))
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], p.Counter)
	frame(c[:])
	frame(p.Signature)
	frame(p.SnapshotHash)
	frame(p.Snapshot.Canonical())
	return h.Sum(nil)
}

// PriorVerdict returns the verdict already stored for this exact submission (same device,
// challenge and proof hash) and the device's current verification state; ok is false when the
// submission was never judged.
func (d *DB) PriorVerdict(ctx context.Context, deviceID, challengeID string, proofHash []byte) (verdict AttestationVerdict, reasons []string, state VerificationState, ok bool, err error) {
	var row struct {
		Verdict AttestationVerdict `db:"verdict"`
		Reasons pq.StringArray     `db:"reasons"`
		State   VerificationState  `db:"verification"`
	}
	err = sqlx.GetContext(ctx, d.x, &row, `SELECT a.verdict, a.reasons, d.verification
		FROM attestations a JOIN devices d ON d.id = a.device_id
		WHERE a.challenge_id = $1 AND a.device_id = $2 AND a.proof_hash = $3
		ORDER BY a.created_at LIMIT 1`, challengeID, deviceID, proofHash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, "", false, nil
	}
	if err != nil {
		return "", nil, "", false, translate("prior verdict", err)
	}
	return row.Verdict, []string(row.Reasons), row.State, true, nil
}

// DefaultMaxOpenChallenges is how many unexpired, unused challenges one device may hold unless
// Options.MaxOpenChallenges says otherwise. A worker needs one at a time; a few more cover a
// retry after a lost response.
const DefaultMaxOpenChallenges = 4

// MaxOpenChallenges is DefaultMaxOpenChallenges (the name tests and callers used before the cap
// became an option).
const MaxOpenChallenges = DefaultMaxOpenChallenges

// checkOpenChallenges returns a RateLimitError when the device already holds limit open
// challenges (retry after the oldest expires), nil otherwise or when limit <= 0.
func checkOpenChallenges(ctx context.Context, x sqlx.QueryerContext, deviceID string, limit int) error {
	if limit <= 0 {
		return nil
	}
	var open struct {
		N      int          `db:"n"`
		Oldest sql.NullTime `db:"oldest"`
		Now    time.Time    `db:"now"`
	}
	err := sqlx.GetContext(ctx, x, &open, `SELECT count(*) AS n, min(expires_at) AS oldest, now() AS now FROM challenges
		WHERE device_id = $1 AND consumed_at IS NULL AND expires_at > now()`, deviceID)
	if err != nil {
		return translate("open challenges", err)
	}
	if open.N >= limit {
		return &RateLimitError{Msg: "this device holds the most open challenges it may: prove one or let it expire",
			RetryAfter: open.Oldest.Time.Sub(open.Now)}
	}
	return nil
}
