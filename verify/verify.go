// Package verify is the gateway's side of the worker protocol, and the one place that decides
// what a device's evidence proves: it enrolls devices, issues proof-of-work challenges, turns a
// submitted proof into a verdict, and records heartbeats.
//
// Every request of an enrolled device passes the same gate first (device.go): the per-device rate
// limit, then the source address (churn findings go to the audit log), then the guard. A proof then runs
// the checks in judge (proof.go) — the work and signature, the host-level counterfeit rules
// (attest), the changes since enrollment and the GPU identities other devices hold — and the
// findings become the stored verdict. NVIDIA confidential-computing evidence is one more check
// (cc.go): verified per GPU before the challenge-consuming transaction, its failures are
// findings, and with the verdict it sets the device's and each GPU's verification level.
//
// The rules themselves live in attest (pure functions over a snapshot) and the storage in db;
// neither imports this package. The GraphQL resolvers call one method per mutation.
package verify

import (
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/ttlcache"
)

// Config holds the proof-of-work, heartbeat and per-device limit settings. The zero value of
// each field means its default.
type Config struct {
	Difficulty     int           // leading zero bits; default 16
	ChallengeTTL   time.Duration // default 2 min
	HeartbeatEvery time.Duration // what workers are told; default 30 s
	// HeartbeatBatchWait is how long a heartbeat may wait for others to share its write
	// (default 5 ms; negative: write each alone).
	HeartbeatBatchWait time.Duration
	// VerdictBatch is how many proofs' verdicts one database write may carry (default 64;
	// negative: each proof writes its own), VerdictWriters how many such writes run at once
	// (default 2). Proofs wait for no timer: a write takes whatever queued while the last one
	// ran (db.Verdicts, docs/ingest-benchmark.md "Batched verdicts").
	VerdictBatch, VerdictWriters int
	// AllowSimulatedGPUs accepts the PCI ids only go-nvml's mock servers report (off: each is a
	// SIMULATED_GPU finding). The serve command turns it on in dev mode.
	AllowSimulatedGPUs bool

	// Per-device limits (token buckets, shared by all of a device's keys), sized so a genuine
	// worker (a heartbeat every HeartbeatEvery, a proof every few minutes at most, retries)
	// never meets them. Defaults:
	// heartbeats a burst of 20 then one per HeartbeatEvery/6 (5 s); challenges and proofs a
	// burst of 10 then one per 20 s. A negative Every disables a limit.
	HeartbeatRate, ChallengeRate, ProofRate Rate
	// EnrollmentTokenRate limits createEnrollmentToken per user (default a burst of 20, then one
	// per minute): every token enrolls a device whose snapshot (up to 84 KiB) and row outlive
	// it (removal is soft), so tokens are what bounds an account's enrollment flood.
	EnrollmentTokenRate Rate
	// AddressChurn is when a device's changing source address becomes a review finding.
	AddressChurn db.AddressChurn
	// AddressRefresh is how often an unchanged source address is written again to refresh its
	// last-seen time (default 10 min): the heartbeat path writes only when an address changes.
	AddressRefresh time.Duration

	// CC verifies GPUs' confidential-computing evidence (default: NVIDIA's pinned root only,
	// no measurements, no revocation; the serve command configures it, trusting the
	// simulation CA in zero-config dev mode only). See docs/attestation.md.
	CC *nvidia.Verifier
	// RequireRIMs and RequireRevocation keep a GPU whose evidence verified but whose
	// measurements (RIMs) or certificates' revocation (OCSP) could not be checked at
	// SELF_REPORTED instead of ATTESTED; the facts record what was not checked. Default off.
	RequireRIMs, RequireRevocation bool
}

func (c Config) withDefaults() Config {
	if c.Difficulty <= 0 {
		c.Difficulty = 16
	}
	if c.ChallengeTTL <= 0 {
		c.ChallengeTTL = 2 * time.Minute
	}
	if c.HeartbeatEvery <= 0 {
		c.HeartbeatEvery = 30 * time.Second
	}
	if c.HeartbeatBatchWait == 0 {
		c.HeartbeatBatchWait = 5 * time.Millisecond
	}
	if c.HeartbeatRate == (Rate{}) {
		c.HeartbeatRate = Rate{Every: c.HeartbeatEvery / 6, Burst: 20}
	}
	if c.ChallengeRate == (Rate{}) {
		c.ChallengeRate = Rate{Every: 20 * time.Second, Burst: 10}
	}
	if c.ProofRate == (Rate{}) {
		c.ProofRate = Rate{Every: 20 * time.Second, Burst: 10}
	}
	if c.EnrollmentTokenRate == (Rate{}) {
		c.EnrollmentTokenRate = Rate{Every: time.Minute, Burst: 20}
	}
	if c.CC == nil {
		c.CC = nvidia.New(nvidia.Options{})
	}
	c.AddressChurn = c.AddressChurn.WithDefaults()
	if c.AddressRefresh <= 0 {
		c.AddressRefresh = 10 * time.Minute
	}
	return c
}

// rate returns the per-key limit of a worker operation.
func (c Config) rate(op string) Rate {
	switch op {
	case "heartbeat":
		return c.HeartbeatRate
	case "requestChallenge":
		return c.ChallengeRate
	case "submitProof":
		return c.ProofRate
	case "createEnrollmentToken":
		return c.EnrollmentTokenRate
	}
	return Rate{}
}

// Service runs the worker protocol over a store; every write goes through the guard. Its
// in-process state (recently written addresses, cached enrollment
// snapshots, the heartbeat coalescer) is per gateway replica.
type Service struct {
	db    *db.DB
	guard *guard.Guard
	cfg   Config

	heartbeats *db.Heartbeats
	verdicts   *db.Verdicts                           // nil: each verdict written alone
	enrolled   *ttlcache.LRU[string, attest.Snapshot] // immutable once enrolled
	addresses  *ttlcache.LRU[string, struct{}]        // (device, address) pairs written lately
}

// New returns a Service over store whose writes go through g, with cfg's zero fields set to
// their defaults.
func New(store *db.DB, g *guard.Guard, cfg Config) *Service {
	c := cfg.withDefaults()
	s := &Service{db: store, guard: g, cfg: c,
		heartbeats: store.NewHeartbeats(c.HeartbeatBatchWait, 500),
		enrolled:   ttlcache.New[string, attest.Snapshot](10_000, time.Hour),
		addresses:  ttlcache.New[string, struct{}](200_000, c.AddressRefresh)}
	if c.VerdictBatch >= 0 {
		s.verdicts = store.NewVerdicts(c.VerdictBatch, c.VerdictWriters)
	}
	s.registerLimits() // ratelimit.go
	return s
}

// Config returns the settings in use, defaults applied.
func (s *Service) Config() Config { return s.cfg }
