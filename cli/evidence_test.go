package cli

import (
	"testing"
	"time"

	"github.com/gpugate/gpugate/verify"
)

// The worker and enrollment-token limits are set by their flags (and environment), "off"
// disables one, and a malformed value is an error naming the flag.
func TestEvidenceFlagsSetTheLimits(t *testing.T) {
	t.Setenv("GPUGATE_PROOF_RATE", "3/1m")
	f := newFlags("serve", "")
	ev := addEvidenceFlags(f)
	if err := f.parse([]string{"--enrollment-token-rate", "2/1h", "--challenge-rate", "off"}); err != nil {
		t.Fatal(err)
	}
	var w verify.Config
	if err := ev.apply(&w); err != nil {
		t.Fatal(err)
	}
	if w.EnrollmentTokenRate != (verify.Rate{Burst: 2, Every: time.Hour}) || w.ProofRate != (verify.Rate{Burst: 3, Every: time.Minute}) ||
		w.ChallengeRate.Every >= 0 || w.HeartbeatRate != (verify.Rate{}) {
		t.Fatalf("limits: %+v", w)
	}

	f = newFlags("serve", "")
	ev = addEvidenceFlags(f)
	if err := f.parse([]string{"--enrollment-token-rate", "lots"}); err != nil {
		t.Fatal(err)
	}
	if err := ev.apply(&w); err == nil || err.Error()[:23] != "--enrollment-token-rate" {
		t.Fatalf("malformed rate: %v", err)
	}
}
