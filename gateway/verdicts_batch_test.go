package gateway_test

import (
	"encoding/json"
	"sync"
	"testing"
)

// Several devices each send their proof three times at once (a worker's retries racing its
// first attempt), so proofs share verdict batches and one challenge appears in a batch more
// than once: every copy gets the one verdict, stored once, and no copy is turned into a replay.
func TestConcurrentDuplicateProofsOneVerdictEach(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	const devices, copies = 4, 3
	const submit = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification } }`
	type job struct {
		w    *worker
		vars map[string]any
		ch   string
	}
	var jobs []job
	for i := range devices {
		snap := h100Host(byte(40 + i))
		w := o.enrolledWorker(t, "alice", snap)
		ch := w.issue(t)
		jobs = append(jobs, job{w: w, ch: ch.ID, vars: w.proofVars(t, ch, snap, nil)})
	}
	type out struct {
		SubmitProof struct {
			Verdict, Verification string
			Reasons               []string
		}
	}
	results := make([]out, devices*copies)
	bodies := make([]string, devices*copies)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for k := range results {
		wg.Go(func() {
			<-start
			r := jobs[k/copies].w.call(submit, jobs[k/copies].vars)
			bodies[k] = r.RawBody
			if len(r.Errors) == 0 {
				_ = json.Unmarshal(r.Data, &results[k])
			}
		})
	}
	close(start)
	wg.Wait()
	for k, r := range results {
		if r.SubmitProof.Verdict != "PASSED" || r.SubmitProof.Verification != "VERIFIED" || len(r.SubmitProof.Reasons) != 0 {
			t.Fatalf("copy %d of device %d: %s", k%copies, k/copies, bodies[k])
		}
	}
	for i, j := range jobs {
		var n int
		if err := o.x.Get(&n, `SELECT count(*) FROM attestations WHERE challenge_id = $1 AND verdict = 'PASSED'`, j.ch); err != nil || n != 1 {
			t.Fatalf("device %d: %d stored verdicts for its challenge (%v), want 1", i, n, err)
		}
		if err := o.x.Get(&n, `SELECT count(*) FROM attestations WHERE device_id = $1`, j.w.deviceID); err != nil || n != 1 {
			t.Fatalf("device %d: %d attestations (%v), want 1", i, n, err)
		}
	}
}
