package db

import "time"

// PoolStaleness exposes the replica lag computation to replicas_lag_test.go: samples are the
// primary's (time, LSN) checks, oldest first; it returns what the check at now with the
// replica at replay finds.
func PoolStaleness(samples [][2]int64, now time.Time, replay uint64, bound time.Duration) (time.Duration, int64) {
	r := &replica{}
	for _, s := range samples {
		r.samples = append(r.samples, lsnSample{at: time.Unix(0, s[0]), lsn: uint64(s[1])})
	}
	return r.staleness(now, replay, bound)
}

// PoolParseLSN exposes parseLSN.
func PoolParseLSN(s string) (uint64, bool) { return parseLSN(s) }
