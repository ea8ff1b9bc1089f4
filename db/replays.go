package db

import (
	"context"
	"errors"
	"time"
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

// recordReplaySQL inserts the replay key only while the credential that signed is unrevoked and
// its device not removed (the condition DeviceKeys reads keys under), so a key some replica
// still caches is refused by the database itself, in the same round trip. The commit does not
// wait for the WAL flush (the row is visible to every session at once; a crash of PostgreSQL
// may forget the last fraction of a second of keys: docs/scale-out.md).
const recordReplaySQL = `WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
	INSERT INTO device_replays (slot, signed_at, key)
	SELECT gpugate_replay_slot($3), $3, $4 FROM async
	WHERE EXISTS (SELECT FROM device_credentials c JOIN devices d ON d.id = c.device_id
		WHERE c.id = $1 AND c.device_id = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL)
	ON CONFLICT DO NOTHING
	RETURNING true`

// #nosec G101 -- SQL text that names the credentials table, not a credential.
const credentialLiveSQL = `SELECT EXISTS (SELECT FROM device_credentials c JOIN devices d ON d.id = c.device_id
	WHERE c.id = $1 AND c.device_id = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL)`

// RecordReplay records the first use of a verified request signature: key is its replay key
// (attest.Signed.ReplayKey) and signedAt its timestamp; credentialID and deviceID name the key
// that verified it. It returns ReplayFirst when the key was new and the credential live,
// ReplayRepeated when the key was recorded before, ReplayRevoked when the credential is revoked
// (or gone, or its device removed), and an Invalid error for IDs that are not UUIDs; otherwise
// the store's error. Call it only after the signature verified: an unverified signature must
// not grow the table.
func (d *DB) RecordReplay(ctx context.Context, credentialID, deviceID string, key [32]byte, signedAt time.Time) (ReplayUse, error) {
	if _, err := ParseDeviceID(credentialID); err != nil {
		return 0, Invalidf("credential ID is not a UUID")
	}
	if _, err := ParseDeviceID(deviceID); err != nil {
		return 0, Invalidf("device ID is not a UUID")
	}
	// Prepared (one parse and plan per connection, not per request: this runs for every signed
	// request).
	inserted, err := d.replayQuery(ctx, recordReplaySQL, credentialID, deviceID, signedAt.UTC(), key[:])
	if err != nil {
		return 0, translate("record replay key", err)
	}
	if inserted {
		return ReplayFirst, nil
	}
	// Nothing inserted: a replay, or a revoked key. Only here a second query tells which.
	live, err := d.replayQuery(ctx, credentialLiveSQL, credentialID, deviceID)
	if err != nil {
		return 0, translate("record replay key", err)
	}
	if live {
		return ReplayRepeated, nil
	}
	return ReplayRevoked, nil
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
	if rows.Next() {
		if err := rows.Scan(&v); err != nil {
			return false, err
		}
	}
	return v, rows.Err()
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
