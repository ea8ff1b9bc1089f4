package db_test

import (
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
)

// Staleness comes from WAL positions: an idle primary (its position unchanged) leaves a
// caught-up replica at 0 however long ago the last write was; a replica stuck behind a write is
// as stale as the time since the primary first moved past its position.
func TestPoolReplicaStaleness(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	idle := [][2]int64{{at(0), 500}, {at(time.Second), 500}, {at(2 * time.Second), 500}}
	if lag, bytes := db.PoolStaleness(idle, t0.Add(time.Hour), 500, 5*time.Second); lag != 0 || bytes != 0 {
		t.Errorf("idle primary, caught-up replica: lag %v, %d bytes; want 0", lag, bytes)
	}
	moving := [][2]int64{{at(0), 500}, {at(time.Second), 700}, {at(2 * time.Second), 900}}
	if lag, bytes := db.PoolStaleness(moving, t0.Add(2*time.Second), 700, 5*time.Second); lag != time.Second || bytes != 200 {
		t.Errorf("replica at the position of 1 s ago: lag %v, %d bytes; want 1s, 200", lag, bytes)
	}
	if lag, _ := db.PoolStaleness(moving, t0.Add(2*time.Second), 600, 5*time.Second); lag != 2*time.Second {
		t.Errorf("replica between the samples: lag %v; want 2s (the newest sample it has replayed)", lag)
	}
	// No sample old enough: unknown until the samples span the bound, then at least that stale.
	if lag, _ := db.PoolStaleness(moving, t0.Add(2*time.Second), 100, 5*time.Second); lag >= 0 {
		t.Errorf("replica behind every sample, samples shorter than the bound: lag %v; want unknown (<0)", lag)
	}
	if lag, _ := db.PoolStaleness(moving, t0.Add(10*time.Second), 100, 5*time.Second); lag != 10*time.Second {
		t.Errorf("replica behind every sample, samples older than the bound: lag %v; want 10s", lag)
	}
	if lag, bytes := db.PoolStaleness(nil, t0, 100, 5*time.Second); lag >= 0 || bytes >= 0 {
		t.Errorf("no sample: %v, %d; want unknown", lag, bytes)
	}
	for in, want := range map[string]uint64{"0/0": 0, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1} {
		if got, ok := db.PoolParseLSN(in); !ok || got != want {
			t.Errorf("parseLSN(%s) = %x, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "16", "x/1", "1/1/1", "100000000/0"} {
		if _, ok := db.PoolParseLSN(bad); ok {
			t.Errorf("parseLSN(%q) accepted", bad)
		}
	}
}
