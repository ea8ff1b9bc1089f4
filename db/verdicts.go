package db

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/attest"
)

// Verdicts writes the verdicts of concurrent proofs together: while one write is in flight, the
// proofs that arrive queue, and the next write takes all of them (group commit: nothing waits
// on a timer, so a lone proof is written at once). A batch is one transaction of four round
// trips (begin, lock the devices, one statement that consumes every challenge and stores every
// verdict, commit) instead of six per proof. Each proof keeps the guarantees of
// DB.ConsumeAndRecord: its challenge is consumed at most once, its verdict is stored in the same
// transaction, and its caller hears consumed=true only after that transaction committed (see
// docs/ingest-benchmark.md, "Batched verdicts").
type Verdicts struct {
	d        *DB
	max      int // proofs per batch
	inflight int // batches written at once
	mu       sync.Mutex
	pending  []*pendingVerdict
	running  int

	// The proof path's statements, prepared once per connection: PostgreSQL then parses and
	// plans them once instead of at every proof (see docs/ingest-benchmark.md).
	openStmt, lockStmt, batchStmt lazyStmt
}

// lazyStmt is a statement prepared on first use (database/sql prepares it again on each
// connection that runs it). Until preparing succeeds, it runs unprepared.
type lazyStmt struct {
	query string
	off   bool // Options.TransactionPooler: never prepare (the text runs)
	mu    sync.Mutex
	stmt  *sqlx.Stmt
}

// get returns the prepared statement, or nil when preparing failed (the caller then runs the
// query text; the next call tries again).
func (l *lazyStmt) get(ctx context.Context, x *sqlx.DB) *sqlx.Stmt {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stmt == nil && !l.off {
		if st, err := x.PreparexContext(ctx, l.query); err == nil {
			l.stmt = st
		}
	}
	return l.stmt
}

// OpenChallengeClaims is DB.OpenChallengeClaims through its prepared statement.
func (v *Verdicts) OpenChallengeClaims(ctx context.Context, deviceID, challengeID string, s attest.Snapshot) (IssuedChallenge, attest.Reason, *Claims, error) {
	st := v.openStmt.get(ctx, v.d.x)
	if st == nil {
		return v.d.OpenChallengeClaims(ctx, deviceID, challengeID, s)
	}
	return openChallengeClaims(func(dest any, args ...any) error { return st.GetContext(ctx, dest, args...) },
		deviceID, challengeID, s)
}

type pendingVerdict struct {
	rec     ProofRecord
	verdict AttestationVerdict
	state   VerificationState
	reasons []string
	level   Level
	snap    []byte
	facts   []byte

	consumed bool
	err      error
	done     chan struct{}
}

// NewVerdicts returns a batching verdict writer: at most max proofs per batch (default 64) and
// at most inflight batches written at once (default 2, one per core of the reference machine:
// more batches at once make each smaller and contend for the same CPU).
func (d *DB) NewVerdicts(max, inflight int) *Verdicts {
	if max <= 0 {
		max = 64
	}
	if inflight <= 0 {
		inflight = 2
	}
	off := d.noPrepare
	return &Verdicts{d: d, max: max, inflight: inflight, openStmt: lazyStmt{query: openChallengeClaimsSQL, off: off},
		lockStmt: lazyStmt{query: lockVerdictDevicesSQL, off: off}, batchStmt: lazyStmt{query: recordVerdictsSQL, off: off}}
}

// ConsumeAndRecord is DB.ConsumeAndRecord through the batch: the same results and errors. A
// proof with hardware bindings (confidential-computing evidence) or ATTESTED GPUs is written
// alone by DB.ConsumeAndRecord, whose binding checks (ErrHardwareContended) are per proof. It
// returns ctx.Err() if ctx ends first; the verdict may still be stored then, and a retry of the
// same submission finds it (DB.PriorVerdict).
func (v *Verdicts) ConsumeAndRecord(ctx context.Context, p ProofRecord) (consumed bool, verdict AttestationVerdict, reasons []string, state VerificationState, err error) {
	pv, ok, err := newPendingVerdict(p)
	if err != nil {
		return false, "", nil, "", err
	}
	if !ok {
		return v.d.ConsumeAndRecord(ctx, p)
	}
	v.mu.Lock()
	v.pending = append(v.pending, pv)
	if v.running < v.inflight {
		v.running++
		// #nosec G118 -- the writer holds other callers' proofs: one caller's ctx ending must not
		// cancel their write, so each batch has its own timeout (callers stop waiting on their ctx)
		go v.drain()
	}
	v.mu.Unlock()
	select {
	case <-pv.done:
	case <-ctx.Done():
		return false, "", nil, "", ctx.Err()
	}
	if pv.err != nil || !pv.consumed {
		return false, "", nil, "", pv.err
	}
	return true, pv.verdict, pv.reasons, pv.state, nil
}

// newPendingVerdict prepares p for a batch; ok is false for a record written alone (no snapshot,
// hardware bindings or ATTESTED GPUs). It returns the error of encoding p's JSON.
func newPendingVerdict(p ProofRecord) (pv *pendingVerdict, ok bool, err error) {
	if p.Snapshot == nil || len(p.Bindings) > 0 {
		return nil, false, nil
	}
	pv = &pendingVerdict{rec: p, done: make(chan struct{})}
	pv.verdict, pv.state, pv.reasons = verdictOf(p.Findings)
	pv.level = p.levelOf(pv.verdict)
	if len(p.attestedUUIDs(pv.level)) > 0 {
		return nil, false, nil
	}
	if pv.snap, _, err = proofJSON(p); err != nil {
		return nil, false, err
	}
	if pv.facts, err = p.gpuFacts(); err != nil {
		return nil, false, err
	}
	return pv, true, nil
}

// drain writes batches until nothing is pending.
func (v *Verdicts) drain() {
	for {
		v.mu.Lock()
		n := min(len(v.pending), v.max)
		if n == 0 {
			v.running--
			v.mu.Unlock()
			return
		}
		batch := slices.Clone(v.pending[:n])
		v.pending = slices.Delete(v.pending, 0, n)
		v.mu.Unlock()
		v.write(batch)
	}
}

// write stores one batch and tells each caller its outcome. When the batch's transaction fails,
// nothing of it was stored: every proof is then written alone (DB.ConsumeAndRecord), so one
// bad record fails only its own caller.
func (v *Verdicts) write(batch []*pendingVerdict) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	consumed, err := v.recordVerdicts(ctx, batch)
	if err != nil && len(batch) > 1 {
		for _, pv := range batch {
			pv.consumed, _, _, _, pv.err = v.d.ConsumeAndRecord(ctx, pv.rec)
			close(pv.done)
		}
		return
	}
	for i, pv := range batch {
		if err != nil { // a batch of one: its own failure
			pv.err = err
		} else {
			pv.consumed = consumed[i]
		}
		close(pv.done)
	}
}

// recordVerdicts consumes the challenges and stores the verdicts of a batch in one transaction
// that commits without waiting for the WAL flush (lossTolerant: a crash loses a verdict only
// together with its challenge's consumption, and the worker proves again). It returns, per
// proof, whether its challenge was consumed (and its verdict stored), or a translated error
// with nothing stored.
func (v *Verdicts) recordVerdicts(ctx context.Context, batch []*pendingVerdict) ([]bool, error) {
	n := len(batch)
	ords := make([]int, n)
	challenges, devices := make([]string, n), make([]string, n)
	verdicts, reasons, snaps, states, levels, facts := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	hashes := make([][]byte, n)
	var ids []string
	for i, pv := range batch {
		ords[i] = i
		challenges[i], devices[i] = pv.rec.ChallengeID, pv.rec.DeviceID
		verdicts[i], states[i], levels[i] = string(pv.verdict), string(pv.state), string(pv.level)
		lit, err := pq.StringArray(pv.reasons).Value() // the array literal, cast in SQL
		if err != nil {
			return nil, err
		}
		reasons[i] = "{}"
		if s, ok := lit.(string); ok {
			reasons[i] = s
		}
		snaps[i], facts[i] = string(pv.snap), string(pv.facts)
		hashes[i] = pv.rec.ProofHash
		ids = append(ids, pv.rec.DeviceID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var got []int
	args := []any{pq.Array(ords), pq.Array(challenges), pq.Array(devices), pq.Array(verdicts), pq.Array(reasons),
		pq.Array(snaps), pq.ByteaArray(hashes), pq.Array(states), pq.Array(levels), pq.Array(facts)}
	err := v.lossTolerantLocked(ctx, ids, func(tx *sqlx.Tx) error {
		if st := v.batchStmt.get(ctx, v.d.x); st != nil {
			return tx.StmtxContext(ctx, st).SelectContext(ctx, &got, args...)
		}
		return tx.SelectContext(ctx, &got, recordVerdictsSQL, args...)
	})
	if err != nil {
		return nil, translate("record proof", err)
	}
	out := make([]bool, n)
	for _, i := range got {
		out[i] = true
	}
	return out, nil
}

// recordVerdictsSQL is DB.ConsumeAndRecord's statement over a batch ($1 the batch positions).
// A challenge listed twice is consumed once (an UPDATE changes a row once; RETURNING names the
// one position that did). A device with several proofs in the batch ends with the state of its
// last consumed one, as if they had been written one after another. Levels are never ATTESTED
// here (those proofs are written alone), so every GPU of the device takes the device's level.
// Empty facts are SQL NULL, as a record without GPU judgements stores.
const recordVerdictsSQL = `WITH b AS (
		SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[],
			$8::text[], $9::text[], $10::text[])
		AS b(i, challenge_id, device_id, verdict, reasons, snap, proof_hash, state, level, facts)),
	c AS (
		UPDATE challenges ch SET consumed_at = now() FROM b
		WHERE ch.id = b.challenge_id AND ch.device_id = b.device_id AND ch.consumed_at IS NULL AND ch.expires_at > now()
		  AND EXISTS (SELECT 1 FROM devices WHERE id = b.device_id AND removed_at IS NULL)
		RETURNING b.i),
	ok AS (SELECT b.* FROM b JOIN c USING (i)),
	a AS (
		INSERT INTO attestations (device_id, verdict, reasons, challenge_id, snapshot, cc_report, proof_hash, level, gpu_evidence)
		SELECT device_id, verdict, reasons::text[], challenge_id, snap::jsonb, NULL, proof_hash, level, NULLIF(facts, '')::jsonb
		FROM ok ORDER BY i),
	last AS (SELECT DISTINCT ON (device_id) * FROM ok ORDER BY device_id, i DESC),
	u AS (
		UPDATE devices d SET verification = l.state, verification_level = l.level, attested_gpus = 0, updated_at = now(),
			enrollment_snapshot = COALESCE(d.enrollment_snapshot, CASE WHEN l.state = 'VERIFIED' THEN l.snap::jsonb END)
		FROM last l WHERE d.id = l.device_id AND d.removed_at IS NULL),
	g AS (
		UPDATE gpus SET verification_level = l.level FROM last l
		WHERE gpus.device_id = l.device_id AND gpus.verification_level <> l.level)
	SELECT i FROM c`

// lockVerdictDevicesSQL turns off the synchronous commit for its transaction and locks the
// devices $1 in id order (lossTolerantLocked).
const lockVerdictDevicesSQL = `SELECT set_config('synchronous_commit', 'off', true),
	(SELECT count(*) FROM (SELECT 1 FROM devices WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE) l)`

// lossTolerantLocked is lossTolerant with the devices' rows locked first, in id order (ids
// sorted), in the statement that also turns off the synchronous commit: the order RemoveDevice
// locks a device and then its challenges in, and one order for every batch, so neither two
// batches nor a batch and a removal deadlock. It returns the driver's error.
func (v *Verdicts) lossTolerantLocked(ctx context.Context, ids []string, fn func(tx *sqlx.Tx) error) error {
	tx, err := v.d.x.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if st := v.lockStmt.get(ctx, v.d.x); st != nil {
		_, err = tx.StmtxContext(ctx, st).ExecContext(ctx, pq.Array(ids))
	} else {
		_, err = tx.ExecContext(ctx, lockVerdictDevicesSQL, pq.Array(ids))
	}
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
