package db

import (
	"context"
	"database/sql/driver"
	"time"
)

// Retention says how long the purge job keeps what workers leave behind (docs/security.md,
// "Retention (the purge job)"). Zero fields take the defaults of DefaultRetention.
type Retention struct {
	// Challenges: a challenge is deleted this long after it expired. Until then a late proof is
	// told CHALLENGE_EXPIRED and a retried one still finds its verdict. Default 1 h.
	Challenges time.Duration
	// EnrollmentTokens: a token, used or not, is deleted this long after it expired. Default 24 h.
	EnrollmentTokens time.Duration
	// Attestations: a verdict older than this is deleted, except each device's latest verdict
	// and every FLAGGED verdict with its evidence. Default 30 days.
	Attestations time.Duration
	// Addresses: a source address not seen for this long is forgotten, and so is a review
	// finding this old. Default 30 days.
	Addresses time.Duration
}

// DefaultRetention returns the retention defaults.
func DefaultRetention() Retention {
	return Retention{Challenges: time.Hour, EnrollmentTokens: 24 * time.Hour,
		Attestations: 30 * 24 * time.Hour, Addresses: 30 * 24 * time.Hour}
}

func (r Retention) withDefaults() Retention {
	d := DefaultRetention()
	if r.Challenges <= 0 {
		r.Challenges = d.Challenges
	}
	if r.EnrollmentTokens <= 0 {
		r.EnrollmentTokens = d.EnrollmentTokens
	}
	if r.Attestations <= 0 {
		r.Attestations = d.Attestations
	}
	if r.Addresses <= 0 {
		r.Addresses = d.Addresses
	}
	return r
}

// Purged counts the rows one Purge deleted.
type Purged struct {
	Challenges, EnrollmentTokens, Attestations, Addresses, Findings int64
	WriteLimits                                                     int64 // full limit buckets and old touches (limits.go)
}

// purgeBatch bounds the rows one DELETE removes, so a first purge of a large backlog never holds
// locks for long; Purge repeats until a batch comes back short.
const purgeBatch = 5000

// Purge deletes, per r: expired challenges and enrollment tokens, old attestations (never a
// device's latest verdict nor a FLAGGED one: that is the evidence an admin reviews), source
// addresses not seen lately and old review findings. Several gateways may run it: an advisory
// lock lets one at a time work (the others return zero counts). It returns what it deleted so
// far and the first database error.
func (d *DB) Purge(ctx context.Context, r Retention) (Purged, error) {
	r = r.withDefaults()
	var out Purged
	conn, err := d.Session().Connx(ctx) // a session lock: not through a transaction pooler
	if err != nil {
		return out, translate("purge", err)
	}
	defer conn.Close()
	var locked bool
	if err := conn.GetContext(ctx, &locked, `SELECT pg_try_advisory_lock(hashtext('gpugate:purge'))`); err != nil {
		return out, translate("purge", err)
	}
	if !locked {
		return out, nil
	}
	defer func() {
		// A session lock outlives a failed unlock: then the connection must not go back to the
		// pool (driver.ErrBadConn makes database/sql close it, which releases the lock).
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('gpugate:purge'))`); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	steps := []struct {
		n     *int64
		query string
		keep  time.Duration
	}{
		{&out.Challenges, `DELETE FROM challenges WHERE id IN (SELECT id FROM challenges
			WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)`, r.Challenges},
		{&out.EnrollmentTokens, `DELETE FROM enrollment_tokens WHERE token_hash IN (SELECT token_hash FROM enrollment_tokens
			WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)`, r.EnrollmentTokens},
		// The latest verdict of each device stays (it is what the device shows); FLAGGED ones
		// stay with their snapshot (the evidence behind a public FLAGGED state and an admin's
		// review). Verdicts refused before their challenge checked out carry no snapshot.
		{&out.Attestations, `DELETE FROM attestations WHERE id IN (SELECT a.id FROM attestations a
			WHERE a.created_at < now() - make_interval(secs => $1) AND a.verdict <> 'FLAGGED'
			  AND a.id <> (SELECT l.id FROM attestations l WHERE l.device_id = a.device_id
			               ORDER BY l.created_at DESC, l.id DESC LIMIT 1)
			LIMIT $2)`, r.Attestations},
		{&out.Addresses, `DELETE FROM device_addresses WHERE (device_id, address) IN (SELECT device_id, address
			FROM device_addresses WHERE last_seen_at < now() - make_interval(secs => $1) LIMIT $2)`, r.Addresses},
		{&out.Findings, `DELETE FROM device_review_findings WHERE id IN (SELECT id FROM device_review_findings
			WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)`, r.Addresses},
	}
	for _, s := range steps {
		for {
			res, err := conn.ExecContext(ctx, s.query, s.keep.Seconds(), purgeBatch)
			if err != nil {
				return out, translate("purge", err)
			}
			n, _ := res.RowsAffected()
			*s.n += n
			if n < purgeBatch {
				break
			}
		}
	}
	n, err := purgeWriteLimits(ctx, conn)
	out.WriteLimits = n
	return out, err
}
