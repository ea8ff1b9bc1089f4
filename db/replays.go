package db

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/lib/pq"
)

// The replay window of signed device requests, shared by every gateway replica
// (docs/scale-out.md, "Stateless replicas"; migration 00011).

// ReplayUse is what RecordReplay found.
type ReplayUse int

// The outcomes of RecordReplay.
const (
	ReplayFirst    ReplayUse = iota // recorded now: the request may go
	ReplayRepeated                  // recorded before: a replay
	ReplayRevoked                   // the credential is revoked, deleted or its device removed
)

// DeviceKeysChannel is the NOTIFY channel migration 00011's triggers announce a device's key
// changes on (payload: the device ID), in the changing transaction.
const DeviceKeysChannel = "gpugate_device_keys"

// ReplayHorizon is how far from the database clock a signed timestamp may lie and still be
// remembered: gpugate_retire_replays keeps every minute within it. The signature window plus
// the clock difference between a gateway and the database must stay below it.
const ReplayHorizon = 5 * time.Minute

// recordReplaySQL is recordReplaysSQL for a batch of one ($1 credential, $2 device, $3 signed
// at, $4 key; one row, true, when inserted): without arrays, ordinality and join it costs
// PostgreSQL and the gateway markedly less, and a batch of one is what every write is while
// requests do not overlap.
const recordReplaySQL = `WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
	INSERT INTO device_replays (slot, signed_at, key)
	SELECT gpugate_replay_slot($3), $3, $4 FROM async
	WHERE EXISTS (SELECT FROM device_credentials c JOIN devices d ON d.id = c.device_id
		WHERE c.id = $1 AND c.device_id = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL)
	ON CONFLICT DO NOTHING
	RETURNING true`

// recordReplaysSQL records the replay keys of a batch of verified signatures ($1 credential,
// $2 device, $3 signed at, $4 replay key, one element per signature, sorted by signed at and
// key, no pair twice: replayBatch.write) and returns the 1-based positions of those it
// inserted. A key is inserted only while the credential that signed is unrevoked and its device
// not removed (the condition DeviceKeys reads keys under), so a key some replica still caches
// is refused by the database itself, in the same round trip. Rows go in in the order given
// (ORDER BY the position): concurrent batches then wait for each other's keys in one order and
// cannot deadlock, even when replays put the same keys in both. The commit does not wait for
// the WAL flush (the rows are visible to every session at once; a crash of PostgreSQL may
// forget the last fraction of a second of keys: docs/scale-out.md).
const recordReplaysSQL = `WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
	b AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bytea[]) WITH ORDINALITY
		AS t(cred, dev, at, k, pos)),
	ins AS (INSERT INTO device_replays (slot, signed_at, key)
		SELECT gpugate_replay_slot(b.at), b.at, b.k FROM b, async
		WHERE EXISTS (SELECT FROM device_credentials c JOIN devices d ON d.id = c.device_id
			WHERE c.id = b.cred AND c.device_id = b.dev AND c.revoked_at IS NULL AND d.removed_at IS NULL)
		ORDER BY b.pos
		ON CONFLICT DO NOTHING
		RETURNING signed_at, key)
	SELECT b.pos FROM b JOIN ins ON ins.signed_at = b.at AND ins.key = b.k`

// #nosec G101 -- SQL text that names the credentials table, not a credential.
const credentialLiveSQL = `SELECT EXISTS (SELECT FROM device_credentials c JOIN devices d ON d.id = c.device_id
	WHERE c.id = $1 AND c.device_id = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL)`

// Group commit of replay keys. Every signed device request records its key (at full scale
// tens of thousands a second across the replicas); one statement and one commit per request
// would make the replay window the database's largest cost per heartbeat. So, as Verdicts do
// for proofs (verdicts.go), concurrent RecordReplay calls queue while a write is in flight, and
// the next write takes all of them: nothing waits on a timer (a lone request is written at
// once), and under load a batch holds what arrived during one round trip.
const (
	// replayBatchMax bounds the keys of one statement: about 100 bytes of parameters each, so a
	// full batch is some 50 KB, and a burst of several thousand is written in a few statements
	// rather than one that holds its locks for long.
	replayBatchMax = 500
	// replayBatchInflight is how many batches one store writes at once (two: one per core of
	// the reference machine, as Verdicts; each holds one pool connection, so replay keys never
	// take more than two of the pool however many requests wait).
	replayBatchInflight = 2
	// replayBatchTimeout bounds one batch's statement: the batch belongs to many callers, so it
	// runs under none of their contexts (a caller that stops waiting must not cancel the others'
	// keys).
	replayBatchTimeout = 10 * time.Second
)

// replayBatch is the queue of RecordReplay calls waiting for a write. Its zero value is ready.
type replayBatch struct {
	mu      sync.Mutex
	pending []*pendingReplay
	running int // batches being written (at most replayBatchInflight)
}

type pendingReplay struct {
	ctx       context.Context // the caller's: ended before the write, the key is not sent
	cred, dev string
	at        time.Time
	key       [32]byte
	inserted  bool // recorded by this call
	err       error
	done      chan struct{}
}

// replayID is what makes two signatures the same replay: the key under its timestamp.
type replayID struct {
	at  time.Time
	key [32]byte
}

// RecordReplay records the first use of a verified request signature: key is its replay key
// (attest.Signed.ReplayKey) and signedAt its timestamp; credentialID and deviceID name the key
// that verified it. It returns ReplayFirst when the key was new and the credential live,
// ReplayRepeated when the key was recorded before (or by a concurrent call: of several
// concurrent calls with one key and timestamp exactly one gets ReplayFirst), ReplayRevoked when
// the credential is revoked (or gone, or its device removed), an Invalid error for IDs that are
// not UUIDs or a timestamp outside the years 1 to 9999, and otherwise the store's error
// (translated; then the key may or may not be recorded, never reported as first use). If ctx
// ends first it returns ctx's error: a key whose write had not begun is not recorded, one
// whose write was under way may be (docs/scale-out.md). Call it only after the signature
// verified: an unverified signature must not grow the table.
//
// Concurrent calls share one statement and one commit (replayBatch).
func (d *DB) RecordReplay(ctx context.Context, credentialID, deviceID string, key [32]byte, signedAt time.Time) (ReplayUse, error) {
	if _, err := ParseDeviceID(credentialID); err != nil {
		return 0, Invalidf("credential ID is not a UUID")
	}
	if _, err := ParseDeviceID(deviceID); err != nil {
		return 0, Invalidf("device ID is not a UUID")
	}
	// Checked here, not by PostgreSQL: one key it refuses would fail the whole batch. Rounded to
	// PostgreSQL's microseconds here, so two times it would store alike are one replayID.
	at := signedAt.UTC().Round(time.Microsecond)
	if y := at.Year(); y < 1 || y > 9999 {
		return 0, Invalidf("signature timestamp out of range")
	}
	if err := ctx.Err(); err != nil {
		return 0, translate("record replay key", err)
	}
	p := &pendingReplay{ctx: ctx, cred: credentialID, dev: deviceID, at: at, key: key, done: make(chan struct{})}
	if d.replays.add(d, p) {
		select {
		case <-p.done:
		case <-ctx.Done():
			return 0, translate("record replay key", ctx.Err())
		}
	}
	if p.err != nil {
		return 0, p.err
	}
	if p.inserted {
		return ReplayFirst, nil
	}
	// Nothing inserted: a replay, or a revoked key. Only here a second query tells which (per
	// caller: replays and revocations are rare).
	live, err := d.replayQuery(ctx, credentialLiveSQL, credentialID, deviceID)
	if err != nil {
		return 0, translate("record replay key", err)
	}
	if live {
		return ReplayRepeated, nil
	}
	return ReplayRevoked, nil
}

// add records p, or queues it and returns true. With nothing queued and a writer free, p is
// written at once in the caller's goroutine under the caller's ctx, alone (recordReplaySQL),
// as before batching: handing a lone request to another goroutine and back cost more CPU than
// the statement (db/replays_test.go, BenchmarkRecordReplay "serial"). Otherwise p queues, and a
// writer is started unless replayBatchInflight are running.
func (b *replayBatch) add(d *DB, p *pendingReplay) (queued bool) {
	b.mu.Lock()
	if len(b.pending) > 0 || b.running >= replayBatchInflight {
		b.pending = append(b.pending, p)
		if b.running < replayBatchInflight {
			b.running++
			// #nosec G118 -- the batch holds other callers' keys: one caller's ctx ending must not
			// cancel their write, so each batch has its own timeout (callers stop waiting on their ctx)
			go b.drain(d)
		}
		b.mu.Unlock()
		return true
	}
	b.running++
	b.mu.Unlock()
	inserted, err := d.replayQuery(p.ctx, recordReplaySQL, p.cred, p.dev, p.at, p.key[:])
	if err != nil && p.ctx.Err() != nil {
		err = p.ctx.Err()
	}
	p.inserted, p.err = inserted && err == nil, translate("record replay key", err)
	b.mu.Lock()
	if len(b.pending) > 0 { // queued meanwhile: this writer's slot passes to a goroutine
		// #nosec G118 -- see above
		go b.drain(d)
	} else {
		b.running--
	}
	b.mu.Unlock()
	return false
}

// drain writes batches until nothing is pending. A caller that stopped waiting before its
// batch was taken is dropped: its key is not recorded, so a retry of the same signature is not
// refused as a replay of a request that never went through.
func (b *replayBatch) drain(d *DB) {
	for {
		b.mu.Lock()
		b.pending = slices.DeleteFunc(b.pending, func(p *pendingReplay) bool { return p.ctx.Err() != nil })
		n := min(len(b.pending), replayBatchMax)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := slices.Clone(b.pending[:n])
		b.pending = slices.Delete(b.pending, 0, n)
		b.mu.Unlock()
		b.write(d, batch)
	}
}

// write records one batch and tells each caller whether its key was inserted. A key given by
// several callers is sent once: exactly one of them (the first queued) can be inserted, the
// others learn "not inserted" and, the credential being live, ReplayRepeated, as if they had
// come one after another. (PostgreSQL's ON CONFLICT DO NOTHING would also skip a key proposed
// twice by one statement, but RETURNING could not tell which position won.) If the statement
// fails, every caller of the batch gets its translated error.
func (b *replayBatch) write(d *DB, batch []*pendingReplay) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	first := make(map[replayID]*pendingReplay, len(batch))
	uniq := make([]*pendingReplay, 0, len(batch))
	for _, p := range batch {
		id := replayID{p.at, p.key}
		if _, dup := first[id]; !dup {
			first[id] = p
			uniq = append(uniq, p)
		}
	}
	// One order for every batch (signed at, then key): see recordReplaysSQL.
	slices.SortFunc(uniq, func(x, y *pendingReplay) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return bytes.Compare(x.key[:], y.key[:])
	})
	ctx, cancel := context.WithTimeout(context.Background(), replayBatchTimeout)
	defer cancel()
	if len(uniq) == 1 {
		p := uniq[0]
		inserted, err := d.replayQuery(ctx, recordReplaySQL, p.cred, p.dev, p.at, p.key[:])
		if err != nil {
			err = translate("record replay key", err)
			for _, p := range batch {
				p.err = err
			}
		}
		p.inserted = inserted && err == nil
		return
	}
	creds, devs, ats := make([]string, len(uniq)), make([]string, len(uniq)), make([]string, len(uniq))
	keys := make([][]byte, len(uniq))
	for i, p := range uniq {
		creds[i], devs[i], ats[i], keys[i] = p.cred, p.dev, p.at.Format(time.RFC3339Nano), p.key[:]
	}
	pos, err := d.replayPositions(ctx, pq.Array(creds), pq.Array(devs), pq.Array(ats), pq.ByteaArray(keys))
	if err != nil {
		err = translate("record replay key", err)
		for _, p := range batch {
			p.err = err
		}
		return
	}
	for _, i := range pos {
		if i >= 1 && i <= int64(len(uniq)) {
			uniq[i-1].inserted = true
		}
	}
}

// replayPositions runs recordReplaysSQL (prepared, like the hot reads: one parse and plan per
// connection; its text when Options.TransactionPooler) and returns the positions it inserted,
// or the driver's error.
func (d *DB) replayPositions(ctx context.Context, args ...any) ([]int64, error) {
	rows, err := d.appStmts.query(ctx, recordReplaysSQL, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var i int64
		if err := rows.Scan(&i); err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, rows.Close()
}

// replayQuery runs the prepared statement q and returns its one boolean, false for no row, or
// the driver's error.
func (d *DB) replayQuery(ctx context.Context, q string, args ...any) (bool, error) {
	rows, err := d.appStmts.query(ctx, q, args...)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	var v bool
	// Read to the end: the statement's (implicit or pooler) COMMIT is only known to have
	// succeeded once the rows ran out, and a failed COMMIT means the key was not recorded.
	for rows.Next() {
		if err := rows.Scan(&v); err != nil {
			return false, err
		}
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	return v, rows.Close()
}

// RetireReplays empties the replay partitions that hold only signatures older than
// ReplayHorizon (gpugate_retire_replays: safe to call from several replicas at once; a call that
// finds another one running returns 0 at once). It returns how many partitions it emptied, or
// the store's error (a lock wait past 2 s among them: the next call retries).
func (d *DB) RetireReplays(ctx context.Context) (int, error) {
	var n int
	err := d.x.QueryRowxContext(ctx, `SELECT gpugate_retire_replays()`).Scan(&n)
	return n, translate("retire replay keys", err)
}

// RunReplayRetirement calls RetireReplays every interval (<= 0: every 30 s) until ctx ends,
// passing each failure to report (nil: ignored). Several replicas may run it at once. It returns
// when ctx ends.
func (d *DB) RunReplayRetirement(ctx context.Context, interval time.Duration, report func(error)) {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.RetireReplays(cctx)
		cancel()
		if err != nil && report != nil && !errors.Is(ctx.Err(), context.Canceled) {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
