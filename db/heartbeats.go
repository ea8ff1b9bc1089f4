package db

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Heartbeats coalesces concurrent heartbeats into one UPDATE: a worker's heartbeat waits at most
// a few milliseconds for others to join its batch, and a thousand devices then cost one
// statement and one commit instead of a thousand. A device's row changes exactly as with
// Heartbeat.
type Heartbeats struct {
	d       *DB
	wait    time.Duration
	max     int
	mu      sync.Mutex
	pending []*pendingBeat
	timer   *time.Timer
	limit   *HeartbeatLimit // the shared per-device limit (db/limits.go); nil: none
}

type pendingBeat struct {
	device   string
	readings []byte
	status   DeviceStatus
	err      error
	done     chan struct{}
}

// NewHeartbeats returns a coalescer that flushes after wait or at max heartbeats, whichever
// comes first.
func (d *DB) NewHeartbeats(wait time.Duration, max int) *Heartbeats {
	if max <= 0 {
		max = 500
	}
	return &Heartbeats{d: d, wait: wait, max: max}
}

// Record records one heartbeat and returns the device's status, or a NotFound error for an
// unknown device. It returns ctx.Err() if ctx ends first (the heartbeat may still be written).
func (h *Heartbeats) Record(ctx context.Context, deviceID string, readings []byte) (DeviceStatus, error) {
	// Judged before it joins a batch: a batch keeps only each device's last heartbeat, so a
	// malformed one that is not last would otherwise be dropped and reported as written.
	if err := checkReadings(readings); err != nil {
		return "", err
	}
	b := &pendingBeat{device: deviceID, readings: readings, done: make(chan struct{})}
	if h.wait <= 0 {
		h.flush([]*pendingBeat{b}) // alone, but through the same statement (and limit)
		return b.status, b.err
	}
	h.mu.Lock()
	h.pending = append(h.pending, b)
	switch {
	case len(h.pending) >= h.max:
		batch := h.take()
		h.mu.Unlock()
		// #nosec G118 -- the batch holds other callers' heartbeats: one caller's ctx ending must not
		// cancel their write, so flush has its own timeout (callers stop waiting on their ctx)
		go h.flush(batch)
	case len(h.pending) == 1:
		h.timer = time.AfterFunc(h.wait, func() {
			h.mu.Lock()
			batch := h.take()
			h.mu.Unlock()
			h.flush(batch)
		})
		h.mu.Unlock()
	default:
		h.mu.Unlock()
	}
	select {
	case <-b.done:
		return b.status, b.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// checkReadings rejects what PostgreSQL's jsonb would: text that is not JSON, and the NUL
// escape (\u0000), which jsonb cannot store.
func checkReadings(readings []byte) error {
	if !json.Valid(readings) || bytes.Contains(readings, []byte(`\u0000`)) {
		return Invalidf("heartbeat readings are not valid JSON")
	}
	return nil
}

// take empties the pending batch; h.mu must be held.
func (h *Heartbeats) take() []*pendingBeat {
	batch := h.pending
	h.pending = nil
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	return batch
}

func (h *Heartbeats) flush(batch []*pendingBeat) {
	if len(batch) == 0 {
		return
	}
	// The last heartbeat of a device in the batch wins; each caller gets its device's status.
	last, beats := map[string]int{}, map[string]int{}
	for i, b := range batch {
		last[b.device] = i
		beats[b.device]++
	}
	ids := make([]string, 0, len(last))
	for dev := range last {
		ids = append(ids, dev)
	}
	slices.Sort(ids) // one lock order for every batch
	readings := make([]string, len(ids))
	counts := make([]int64, len(ids))
	for i, dev := range ids {
		readings[i], counts[i] = string(batch[last[dev]].readings), int64(beats[dev])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rows []struct {
		ID         string       `db:"id"`
		Status     DeviceStatus `db:"status"`
		Limited    bool         `db:"limited"`
		RetryAfter float64      `db:"retry_after"`
	}
	err := h.d.lossTolerant(ctx, func(tx *sqlx.Tx) error {
		if l := h.limit; l != nil { // the shared limit is taken in the same statement (db/limits.go)
			return tx.SelectContext(ctx, &rows, limitedHeartbeatSQL, pq.Array(ids), pq.Array(readings), pq.Array(counts),
				time.Now().UTC(), l.KeyPrefix, l.Every.Seconds(), l.Burst)
		}
		return tx.SelectContext(ctx, &rows, heartbeatSQL, pq.Array(ids), pq.Array(readings))
	})
	err = translate("heartbeat", err)
	if err != nil && len(batch) > 1 {
		// One bad row must fail only its sender: write each heartbeat alone.
		for _, b := range batch {
			h.flush([]*pendingBeat{b})
		}
		return
	}
	limited := map[string]error{}
	for _, r := range rows {
		if r.Limited {
			limited[r.ID] = h.limit.refusal(seconds(r.RetryAfter))
		}
	}
	status := make(map[string]DeviceStatus, len(rows))
	for _, r := range rows {
		if !r.Limited {
			status[r.ID] = r.Status
		}
	}
	for _, b := range batch {
		switch st, ok := status[b.device]; {
		case err != nil:
			b.err = err
		case limited[b.device] != nil:
			b.err = limited[b.device]
		case !ok:
			b.err = NotFoundf("device not found")
		default:
			b.status = st
		}
		close(b.done)
	}
}
