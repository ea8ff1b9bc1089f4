package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// GPUJudgement is how one GPU was judged in one proof: the facts the gateway established about
// its confidential-computing evidence, never the evidence itself (docs/attestation.md,
// "Verification levels"). It is stored as JSON with the proof's attestation and shown to the
// owner only.
type GPUJudgement struct {
	Index               int      `json:"index"`
	UUID                string   `json:"uuid"`
	Level               Level    `json:"level"`
	EvidenceSubmitted   bool     `json:"evidenceSubmitted"`
	Root                string   `json:"root,omitempty"` // NVIDIA, SIMULATION or CONFIGURED; "" unless the chain verified
	Reasons             []string `json:"reasons"`
	RevocationChecked   bool     `json:"revocationChecked"`
	MeasurementsChecked bool     `json:"measurementsChecked"`
	DriverVersion       string   `json:"driverVersion,omitempty"`
	VBIOSVersion        string   `json:"vbiosVersion,omitempty"`
	CertificateSerials  []string `json:"certificateSerials"`
}

// HardwareBinding ties a GPU's hardware identity (from its verified certificate chain) to the
// GPU UUID it first attested as.
type HardwareBinding struct {
	HardwareID string `db:"hardware_id"`
	UUID       string `db:"gpu_uuid"`
}

// MaxHardwareIDLen bounds a stored hardware identity (the verifier derives it; the bound keeps
// a faulty one from reaching the table's check as a driver error).
const MaxHardwareIDLen = 256

// HardwareBindings returns the stored bindings of the given hardware identities and of the given
// GPU UUIDs (either matches). It returns a translated database error.
func (d *DB) HardwareBindings(ctx context.Context, hardwareIDs, uuids []string) ([]HardwareBinding, error) {
	var out []HardwareBinding
	if len(hardwareIDs) == 0 && len(uuids) == 0 {
		return out, nil
	}
	err := sqlx.SelectContext(ctx, d.x, &out, `SELECT hardware_id, gpu_uuid FROM gpu_hardware
		WHERE hardware_id = ANY($1::text[]) OR gpu_uuid = ANY($2::text[]) ORDER BY hardware_id`,
		pq.Array(hardwareIDs), pq.Array(uuids))
	return out, translate("hardware bindings", err)
}

// PriorJudgement returns the level and GPU judgements stored with this exact submission (see
// PriorVerdict); ok is false when it was never judged. It returns a translated database error.
func (d *DB) PriorJudgement(ctx context.Context, deviceID, challengeID string, proofHash []byte) (level Level, gpus []GPUJudgement, ok bool, err error) {
	var row struct {
		Level Level  `db:"level"`
		Facts []byte `db:"gpu_evidence"`
	}
	err = sqlx.GetContext(ctx, d.x, &row, `SELECT COALESCE(level, CASE verdict WHEN 'PASSED' THEN 'SELF_REPORTED' ELSE 'FLAGGED' END) AS level,
		gpu_evidence FROM attestations
		WHERE challenge_id = $1 AND device_id = $2 AND proof_hash = $3
		ORDER BY created_at LIMIT 1`, challengeID, deviceID, proofHash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, translate("prior judgement", err)
	}
	gpus, err = DecodeGPUJudgements(row.Facts)
	return row.Level, gpus, err == nil, err
}

// DecodeGPUJudgements decodes an attestation's stored GPU judgements (none for NULL). It returns
// an error only for a stored value that is not their JSON.
func DecodeGPUJudgements(raw []byte) ([]GPUJudgement, error) {
	out := []GPUJudgement{}
	if len(raw) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("stored gpu evidence: %w", err)
	}
	return out, nil
}

// levelOf is the device level a proof record stores: FLAGGED whenever the verdict is, else the
// level the judge computed (SELF_REPORTED when it computed none).
func (p ProofRecord) levelOf(verdict AttestationVerdict) Level {
	switch {
	case verdict == VerdictFlagged:
		return LevelFlagged
	case p.Level == "" || p.Level == LevelFlagged || p.Level == LevelPending:
		return LevelSelfReported
	}
	return p.Level
}

// attestedUUIDs returns the UUIDs of the GPUs the record judged ATTESTED (none when flagged).
func (p ProofRecord) attestedUUIDs(level Level) []string {
	out := []string{}
	if level == LevelFlagged {
		return out
	}
	for _, g := range p.GPUs {
		if g.Level == LevelAttested {
			out = append(out, g.UUID)
		}
	}
	return out
}

// gpuFacts is the JSON stored in attestations.gpu_evidence: NULL for a record without GPU
// judgements (a proof refused before judging).
func (p ProofRecord) gpuFacts() ([]byte, error) {
	if p.GPUs == nil {
		return nil, nil
	}
	b, err := json.Marshal(p.GPUs)
	if err != nil {
		return nil, fmt.Errorf("record proof: %w", err)
	}
	return b, nil
}

// recordGPULevels sets the level of every GPU the device holds (ATTESTED for those its proof
// attested, the device's level for the rest; rows already right are not rewritten) and stores
// the hardware bindings of its attested GPUs. A binding already held keeps its first UUID (the
// judge flagged any other claimant before this); only its last-attested time moves. It returns
// the driver's error.
func recordGPULevels(ctx context.Context, tx *sqlx.Tx, p ProofRecord, level Level) error {
	attested := p.attestedUUIDs(level)
	if _, err := tx.ExecContext(ctx, `UPDATE gpus SET verification_level = v.l
		FROM (SELECT g.uuid, CASE WHEN g.uuid = ANY($3::text[]) THEN 'ATTESTED' ELSE $2 END AS l
		      FROM gpus g WHERE g.device_id = $1) v
		WHERE gpus.device_id = $1 AND gpus.uuid = v.uuid AND gpus.verification_level <> v.l`,
		p.DeviceID, level, pq.Array(attested)); err != nil {
		return err
	}
	if level == LevelFlagged || len(p.Bindings) == 0 {
		return nil
	}
	hw, uuids := make([]string, 0, len(p.Bindings)), make([]string, 0, len(p.Bindings))
	for _, b := range p.Bindings {
		if b.HardwareID == "" || len(b.HardwareID) > MaxHardwareIDLen {
			continue
		}
		hw, uuids = append(hw, b.HardwareID), append(uuids, b.UUID)
	}
	// The judge read the bindings before this transaction; another proof may have bound the same
	// hardware, or the same UUID, since. Lock the UUIDs (in order, so two proofs cannot deadlock),
	// insert, and check that every binding is exactly ours: otherwise nothing of this proof is
	// written and the caller judges it again, now seeing the other binding.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('gpugate/gpu-hardware/' || u, 0))
		FROM (SELECT DISTINCT u FROM unnest($1::text[]) AS u ORDER BY u) AS t`, pq.Array(uuids)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO gpu_hardware AS h (hardware_id, gpu_uuid, first_device_id)
		SELECT * FROM unnest($1::text[], $2::text[], array_fill($3::uuid, ARRAY[cardinality($1::text[])]))
		ORDER BY 1
		ON CONFLICT (hardware_id) DO UPDATE SET last_attested_at = now() WHERE h.gpu_uuid = EXCLUDED.gpu_uuid`,
		pq.Array(hw), pq.Array(uuids), p.DeviceID); err != nil {
		return err
	}
	var contended bool
	if err := tx.GetContext(ctx, &contended, `SELECT EXISTS (
		SELECT 1 FROM gpu_hardware h JOIN unnest($1::text[], $2::text[]) AS b(hw, uuid)
		  ON h.hardware_id = b.hw OR h.gpu_uuid = b.uuid
		WHERE h.hardware_id <> b.hw OR h.gpu_uuid <> b.uuid)`, pq.Array(hw), pq.Array(uuids)); err != nil {
		return err
	}
	if contended {
		return ErrHardwareContended
	}
	return nil
}

// ErrHardwareContended is returned by ConsumeAndRecord when a concurrent proof bound one of the
// record's GPU hardware identities (or UUIDs) to something else after the record was judged;
// nothing was written and the challenge is still open, so the proof can be judged again.
var ErrHardwareContended = fmt.Errorf("%w: a GPU hardware identity was bound concurrently; submit the proof again", ErrConflict)
