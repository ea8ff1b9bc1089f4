package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/resolvers"
)

// evidenceFlags are the limits and retention of what workers send (docs/security.md, "Workers" and "Retention").
type evidenceFlags struct {
	heartbeatRate, challengeRate, proofRate, tokenRate      *string
	churnLimit, maxOpen                                     *int
	churnWindow, purgeEvery                                 *time.Duration
	keepChallenges, keepTokens, keepAttestations, keepAddrs *time.Duration
}

func addEvidenceFlags(f *envFlags) evidenceFlags {
	r := db.DefaultRetention()
	churn := db.DefaultAddressChurn()
	return evidenceFlags{
		heartbeatRate: f.String("heartbeat-rate", "GPUGATE_HEARTBEAT_RATE", "",
			"per device: heartbeats as BURST/EVERY, e.g. 20/5s, or off (default: 20 per heartbeat-interval/6)"),
		challengeRate: f.String("challenge-rate", "GPUGATE_CHALLENGE_RATE", "10/20s", "per device: requestChallenge as BURST/EVERY, or off"),
		proofRate:     f.String("proof-rate", "GPUGATE_PROOF_RATE", "10/20s", "per device: submitProof as BURST/EVERY, or off"),
		tokenRate: f.String("enrollment-token-rate", "GPUGATE_ENROLLMENT_TOKEN_RATE", "20/1m",
			"per user: createEnrollmentToken as BURST/EVERY, or off (each token can create a device whose evidence is kept)"),
		churnLimit: f.Int("address-churn-limit", "GPUGATE_ADDRESS_CHURN_LIMIT", churn.Limit,
			"a device whose signed requests come from more distinct networks than this within --address-churn-window is reported ADDRESS_CHURN for review (never blocked)"),
		maxOpen: f.Int("max-open-challenges", "GPUGATE_MAX_OPEN_CHALLENGES", db.DefaultMaxOpenChallenges,
			"unexpired, unused challenges one device may hold (RATE_LIMITED beyond it; negative: no cap, for load tests)"),
		churnWindow: f.Duration("address-churn-window", "GPUGATE_ADDRESS_CHURN_WINDOW", churn.Window, "the window of --address-churn-limit"),
		purgeEvery:  f.Duration("purge-interval", "GPUGATE_PURGE_INTERVAL", 10*time.Minute, "how often expired evidence is purged (0 disables)"),
		keepChallenges: f.Duration("challenge-retention", "GPUGATE_CHALLENGE_RETENTION", r.Challenges,
			"how long an expired challenge is kept (late proofs are told CHALLENGE_EXPIRED, retries find their verdict)"),
		keepTokens: f.Duration("enrollment-token-retention", "GPUGATE_ENROLLMENT_TOKEN_RETENTION", r.EnrollmentTokens,
			"how long an expired enrollment token (used or not) is kept"),
		keepAttestations: f.Duration("attestation-retention", "GPUGATE_ATTESTATION_RETENTION", r.Attestations,
			"how long a PASSED verdict and its snapshot are kept (each device's latest verdict and every FLAGGED one are kept regardless)"),
		keepAddrs: f.Duration("address-retention", "GPUGATE_ADDRESS_RETENTION", r.Addresses,
			"how long a device's source address (and a review finding) is kept after it was last seen"),
	}
}

func (e evidenceFlags) retention() db.Retention {
	return db.Retention{Challenges: *e.keepChallenges, EnrollmentTokens: *e.keepTokens,
		Attestations: *e.keepAttestations, Addresses: *e.keepAddrs}
}

// apply sets the worker limits of w from the flags; it fails on a malformed rate.
func (e evidenceFlags) apply(w *resolvers.WorkerConfig) error {
	for _, r := range []struct {
		name string
		v    string
		dst  *resolvers.Rate
	}{{"--heartbeat-rate", *e.heartbeatRate, &w.HeartbeatRate}, {"--challenge-rate", *e.challengeRate, &w.ChallengeRate},
		{"--proof-rate", *e.proofRate, &w.ProofRate}, {"--enrollment-token-rate", *e.tokenRate, &w.EnrollmentTokenRate}} {
		rate, err := parseRate(r.v)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		*r.dst = rate
	}
	if *e.churnLimit < 1 || *e.churnLimit >= db.MaxAddressesPerDevice {
		return fmt.Errorf("--address-churn-limit must be 1..%d", db.MaxAddressesPerDevice-1)
	}
	w.AddressChurn = db.AddressChurn{Limit: *e.churnLimit, Window: *e.churnWindow}
	return nil
}

// parseRate reads BURST/EVERY ("10/20s"); "" is the default (zero Rate), "off" disables.
func parseRate(s string) (resolvers.Rate, error) {
	switch s = strings.TrimSpace(s); s {
	case "":
		return resolvers.Rate{}, nil
	case "off":
		return resolvers.Rate{Every: -1}, nil
	}
	burst, every, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(burst)
	d, derr := time.ParseDuration(every)
	if !ok || err != nil || derr != nil || n < 1 || d <= 0 {
		return resolvers.Rate{}, fmt.Errorf("want BURST/EVERY such as 10/20s, or off; got %q", s)
	}
	return resolvers.Rate{Every: d, Burst: n}, nil
}
