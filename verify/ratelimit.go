package verify

import (
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
)

// Rate is a token bucket (guard.Rate): Burst requests at once, then one per Every. A negative
// Every disables it.
type Rate = guard.Rate

// registerLimits hands the per-device worker limits and the per-user enrollment-token limit to
// the guard, which takes them in PostgreSQL before each write (guard/limits.go), so they hold
// across replicas and are kept per device, not per key: an owner may add keys to a device
// (rotation), and each key must not bring its own allowance. Heartbeats are the hot path: the
// guard only pre-checks them in memory and the coalescer takes the shared token in the
// statement that writes the batch (db.HeartbeatLimit), which costs no extra round trip.
// Without guard limits (no store) nothing is limited.
func (s *Service) registerLimits() {
	l := s.guard.Limits()
	if l == nil {
		return
	}
	for _, op := range []string{"requestChallenge", "submitProof", "createEnrollmentToken"} {
		l.SetOpRate(op, guard.OpRate{Rate: s.cfg.rate(op)})
	}
	hb := s.cfg.rate("heartbeat")
	l.SetOpRate("heartbeat", guard.OpRate{Rate: hb, Batched: true})
	if hb.Every > 0 && hb.Burst > 0 {
		s.heartbeats.Limit(db.HeartbeatLimit{KeyPrefix: "heartbeat|device:", Every: hb.Every, Burst: hb.Burst})
	}
}
