package gateway_test

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// TestCCProofIngestionRate measures submitProof over real HTTP for 8-GPU hosts with and without
// confidential-computing evidence for every GPU (the evidence made ahead, like the proofs), and
// logs the rates; it asserts only the verdicts. Skipped unless GPUGATE_BENCH_CC is set:
//
//	GPUGATE_BENCH_CC=1 go test -count=1 -run TestCCProofIngestionRate -v ./gateway/
func TestCCProofIngestionRate(t *testing.T) {
	if os.Getenv("GPUGATE_BENCH_CC") == "" {
		t.Skip("set GPUGATE_BENCH_CC=1 to measure")
	}
	const hosts, perHost, clients = 32, 4, 8 // 4: the open-challenge cap
	p := newIDP(t)
	o := newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers: resolvers.WorkerConfig{Difficulty: 8, CC: nvidia.New(nvidia.Options{TrustSimulation: true}),
			ProofRate: resolvers.Rate{Every: -1}, ChallengeRate: resolvers.Rate{Every: -1}, EnrollmentTokenRate: resolvers.Rate{Every: -1}}})
	type job struct {
		w    *worker
		vars map[string]any
	}
	for _, withEvidence := range []bool{false, true} {
		var jobs []job
		for h := range hosts {
			seed := byte(100 + h)
			if withEvidence {
				seed += hosts
			}
			snap := h100Host(seed)
			w := o.enrolledWorker(t, "alice", snap)
			gpus := simGPUs(t, snap)
			for range perHost {
				ch := w.issue(t)
				var ev []map[string]any
				if withEvidence {
					ev = w.allEvidence(t, gpus, ch)
				}
				jobs = append(jobs, job{w, w.proofVars(t, ch, snap, ev)})
			}
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		want := map[bool]string{false: "SELF_REPORTED", true: "ATTESTED"}[withEvidence]
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(len(jobs)) {
						return
					}
					if res := jobs[i].w.submit(t, jobs[i].vars); res.Level != want {
						t.Errorf("proof %d: %+v", i, res)
						return
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		t.Logf("8-GPU proofs, evidence=%v: %d in %s, %.0f proofs/s (%d clients)", withEvidence, len(jobs),
			took.Round(time.Millisecond), float64(len(jobs))/took.Seconds(), clients)
	}
}
