package db

// ReplayQueued exposes how many RecordReplay calls wait for a batch (replays_batch_test.go).
func ReplayQueued(d *DB) int {
	d.replays.mu.Lock()
	defer d.replays.mu.Unlock()
	return len(d.replays.pending)
}
