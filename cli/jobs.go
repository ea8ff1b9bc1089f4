package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/metrics"
)

// markDownJob shows DOWN the devices whose workers went silent (timeout 0: never) and, every
// purgeEvery (0: never), purges what the retention rules let go. Status changes by time belong
// to a job, not to whichever request happens to look.
// Each run is counted in m (gpugate_job_runs_total).
func markDownJob(ctx context.Context, store *db.DB, timeout time.Duration, keep db.Retention, purgeEvery time.Duration, m *metrics.Metrics, log *slog.Logger) {
	if timeout <= 0 && purgeEvery <= 0 {
		return
	}
	period := 15 * time.Second
	if timeout > 0 {
		period = min(timeout/4, period)
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	purge := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if timeout > 0 {
			n, err := store.MarkSilentDevicesDown(qctx, timeout)
			m.ObserveJob("mark_down", err)
			if err != nil {
				log.Warn("marking silent devices down", "err", err)
			} else if n > 0 {
				log.Info("silent devices marked down", "devices", n)
			}
		}
		cancel()
		if purgeEvery > 0 && time.Since(purge) >= purgeEvery {
			purge = time.Now()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			n, err := store.Purge(pctx, keep)
			cancel()
			m.ObserveJob("purge", err)
			if err != nil {
				log.Warn("purging expired evidence", "err", err)
			}
			if n != (db.Purged{}) {
				log.Info("purged", "challenges", n.Challenges, "enrollment_tokens", n.EnrollmentTokens,
					"attestations", n.Attestations, "addresses", n.Addresses, "review_findings", n.Findings, "write_limits", n.WriteLimits)
			}
		}
	}
}
