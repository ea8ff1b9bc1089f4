package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/gpugate/gpugate/attest"
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
		var ch struct {
			RequestChallenge struct {
				ID, Nonce  string
				Difficulty int
			}
		}
		w.call(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`, map[string]any{"d": w.deviceID}).Decode(t, &ch)
		nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
		p, err := attest.Prove(context.Background(), w.priv, ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty, snap)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(p.Snapshot)
		jobs = append(jobs, job{w: w, ch: p.ChallengeID, vars: map[string]any{"d": w.deviceID, "in": map[string]any{
			"challengeId": p.ChallengeID, "counter": strconv.FormatUint(p.Counter, 10), "snapshot": string(js),
			"signature": base64.StdEncoding.EncodeToString(p.Signature)}}})
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
