package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/resolvers"
)

// Signed worker requests have their own admission lane: an explorer flood that fills every
// general slot and its queue must not get genuine heartbeats refused (their devices would be
// shown DOWN), and the explorer stays bounded as before.
func TestWorkersHaveTheirOwnLane(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	w := o.enrolledWorker(t, "alice", h100Host(31))
	busy := newEnvOn(t, o.env, gateway.Config{Verifier: o.idp.verifier, MaxConcurrent: 1, MaxQueued: -1,
		QueueWait: 30 * time.Second, Workers: resolvers.WorkerConfig{Difficulty: 8}})
	ob := *o
	ob.env = busy
	wb := *w
	wb.o = &ob

	// The only general slot is held by a listing blocked on a lock of the gpus table (which a
	// heartbeat does not touch); there is no queue.
	tx, err := o.x.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE gpus IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	listing := `{ devices(first: 1) { edges { node { gpus { uuid } } } } }`
	held := make(chan response, 1)
	go func() { held <- busy.post(listing, nil) }()
	waitFor(t, func() bool {
		var n int
		_ = o.x.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM gpus%'`)
		return n > 0
	})
	if r := busy.post(listing, nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("the general lane is full, yet a listing got HTTP %d: %s", r.Status, r.RawBody)
	}

	var hb struct{ Heartbeat struct{ Status string } }
	wb.call(`mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`,
		map[string]any{"d": w.deviceID}).Decode(t, &hb)
	if hb.Heartbeat.Status != "UP" {
		t.Fatalf("heartbeat while the explorer lane is full: %+v", hb)
	}

	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var out struct{ Devices struct{ Edges []any } }
	(<-held).Decode(t, &out)
}
