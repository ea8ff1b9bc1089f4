package db

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/lib/pq"
)

// Write limits shared by every gateway replica (docs/operations.md, "Write limits"). Each limit
// is a GCRA bucket — the token bucket of Every and Burst, kept as one timestamp per key in
// write_limits — taken by one statement before the write it guards, so a refused write changes
// nothing and concurrent replicas cannot both take the last token (the rows are locked).

// Bucket is one limit to take a token from: at most Burst at once, then one per Every.
type Bucket struct {
	Key   string
	Every time.Duration
	Burst int
}

// Touch asks TakeWriteTokens to count Target among the distinct devices Actor wrote within
// Window: a device not written by Actor within Window takes a token from Distinct.
type Touch struct {
	Actor, Target string
	Window        time.Duration
	Distinct      Bucket
}

// MaxTouchWindow is the longest distinct-devices window: the purge job forgets older touches.
const MaxTouchWindow = 24 * time.Hour

// TakeWriteTokens takes one token from each bucket (and, with touch, from touch.Distinct when
// touch.Target is new to touch.Actor) at the time at, all or none. It returns refused = -1
// when the write may go; otherwise the index of the refusing bucket (len(buckets) for
// touch.Distinct) and how long until that bucket would accept, with nothing taken. It returns
// the store's error otherwise.
func (d *DB) TakeWriteTokens(ctx context.Context, at time.Time, buckets []Bucket, touch *Touch) (refused int, retryAfter time.Duration, err error) {
	keys := make([]string, len(buckets))
	every := make([]float64, len(buckets))
	burst := make([]int64, len(buckets))
	for i, b := range buckets {
		keys[i], every[i], burst[i] = b.Key, b.Every.Seconds(), int64(max(b.Burst, 1))
	}
	var (
		actor, target, distinct sql.NullString
		window, dEvery          float64
		dBurst                  int64 = 1
	)
	if touch != nil {
		actor = sql.NullString{String: touch.Actor, Valid: true}
		target = sql.NullString{String: touch.Target, Valid: true}
		distinct = sql.NullString{String: touch.Distinct.Key, Valid: true}
		window, dEvery, dBurst = touch.Window.Seconds(), touch.Distinct.Every.Seconds(), int64(max(touch.Distinct.Burst, 1))
	}
	var out struct {
		Refused    sql.NullInt64 `db:"refused"`
		RetryAfter float64       `db:"retry_after"`
	}
	err = d.x.GetContext(ctx, &out, `SELECT refused, retry_after FROM take_write_tokens($1::text[], $2::float8[], $3::int[], $4,
		$5, $6, $7, $8, $9, $10)`, pq.Array(keys), pq.Array(every), pq.Array(burst), at.UTC(),
		actor, target, window, distinct, dEvery, dBurst)
	if err != nil {
		return -1, 0, translate("take write tokens", err)
	}
	if !out.Refused.Valid {
		return -1, 0, nil
	}
	refused = int(out.Refused.Int64) - 1
	if out.Refused.Int64 == 0 {
		refused = len(buckets)
	}
	return refused, seconds(out.RetryAfter), nil
}

// seconds converts PostgreSQL's seconds (microsecond precision) to a Duration.
func seconds(s float64) time.Duration { return time.Duration(math.Round(s*1e6)) * time.Microsecond }

// HeartbeatLimit is the shared per-device heartbeat limit that the coalescer takes in the same
// statement as its batched write (a round trip per heartbeat would halve the heartbeat rate):
// device d's bucket is KeyPrefix+d.
type HeartbeatLimit struct {
	KeyPrefix string
	Every     time.Duration
	Burst     int
}

// Limit makes every batch of h take its devices' tokens from l before writing them (a zero
// Every or Burst: no shared limit). A device over its limit is not written and its callers get
// a *RateLimitError. Call it before h is used.
func (h *Heartbeats) Limit(l HeartbeatLimit) {
	if l.Every > 0 && l.Burst > 0 {
		h.limit = &l
	}
}

// refusal is the error of a heartbeat refused by l, retry after retry.
func (l *HeartbeatLimit) refusal(retry time.Duration) error {
	return &RateLimitError{Msg: fmt.Sprintf("heartbeat: sent more than its limit (a burst of %d, then one per %s); retry later",
		l.Burst, l.Every), RetryAfter: retry}
}

// heartbeatSQL writes a batch of heartbeats ($1 ids, $2 readings); with a limit it first takes
// $3[i] tokens from each device's bucket at $4 ($5 key prefix, $6 every in seconds, $7 burst),
// all of a device's or none, and writes only the devices whose tokens it got. It returns each
// written device's status, and with a limit each refused device with limited = true and the
// seconds until its bucket accepts.
const heartbeatSQL = `UPDATE devices d SET last_seen_at = now(), heartbeat = b.readings,
	status = CASE WHEN d.quarantined_at IS NOT NULL THEN 'QUARANTINED' WHEN d.paused THEN 'PAUSED' ELSE 'UP' END
	FROM unnest($1::uuid[], $2::jsonb[]) AS b(id, readings)
	WHERE d.id = b.id AND d.removed_at IS NULL RETURNING d.id, d.status, false AS limited, 0::float8 AS retry_after`

// limitedHeartbeatSQL: the tokens are taken by a conditional upsert in the same statement
// (ON CONFLICT DO UPDATE locks the bucket row and re-checks the condition on its latest
// version, so replicas flushing concurrently cannot both take the last token).
const limitedHeartbeatSQL = `WITH p AS (
		SELECT $4::timestamptz AS at, $5::text AS prefix, $6::float8 AS every, $7::int AS burst
	), b AS (
		SELECT id, readings, n, p.prefix || id::text AS key
		FROM unnest($1::uuid[], $2::jsonb[], $3::int[]) AS b(id, readings, n), p
	), taken AS (
		INSERT INTO write_limits AS l (key, tat)
		SELECT key, p.at + make_interval(secs => n * p.every) FROM b, p WHERE n <= p.burst ORDER BY key
		ON CONFLICT (key) DO UPDATE SET tat = greatest(l.tat, $4::timestamptz) + (excluded.tat - $4::timestamptz)
		WHERE greatest(l.tat, $4::timestamptz) + (excluded.tat - $4::timestamptz) - $4::timestamptz
			<= make_interval(secs => $6::float8 * $7::int)
		RETURNING key
	), written AS (
		UPDATE devices d SET last_seen_at = now(), heartbeat = b.readings,
		status = CASE WHEN d.quarantined_at IS NOT NULL THEN 'QUARANTINED' WHEN d.paused THEN 'PAUSED' ELSE 'UP' END
		FROM b JOIN taken USING (key)
		WHERE d.id = b.id AND d.removed_at IS NULL RETURNING d.id, d.status
	)
	SELECT id::text AS id, status, false AS limited, 0::float8 AS retry_after FROM written
	UNION ALL
	SELECT b.id::text, ''::text, true, greatest(extract(epoch FROM (greatest(l.tat, p.at) - p.at)) - p.every * (p.burst - b.n), 0)::float8
	FROM b CROSS JOIN p LEFT JOIN write_limits l ON l.key = b.key WHERE b.key NOT IN (SELECT key FROM taken)`

// purgeWriteLimits deletes the full buckets (tat passed) and the touches older than
// MaxTouchWindow, in batches; it returns how many rows it deleted and the first database error.
func purgeWriteLimits(ctx context.Context, x interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql  string
		keep time.Duration
	}{
		{`DELETE FROM write_limits WHERE key IN (SELECT key FROM write_limits
			WHERE tat < now() - make_interval(secs => $2) LIMIT $1)`, 0},
		{`DELETE FROM write_touches WHERE (actor, target) IN (SELECT actor, target FROM write_touches
			WHERE at < now() - make_interval(secs => $2) LIMIT $1)`, MaxTouchWindow},
	} {
		for {
			res, err := x.ExecContext(ctx, q.sql, purgeBatch, q.keep.Seconds())
			if err != nil {
				return total, translate("purge write limits", err)
			}
			n, _ := res.RowsAffected()
			total += n
			if n < purgeBatch {
				break
			}
		}
	}
	return total, nil
}
