package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
)

// auditFlags are serve's settings of the durable audit log (docs/operations.md, "Audit log").
type auditFlags struct {
	retention, interval *time.Duration
	batch, buffer       *int
}

// minAuditRetention is the floor gpugate_purge_audit enforces itself (migration 00007): the
// last day is never purged, whatever the gateway asks.
const minAuditRetention = 24 * time.Hour

func addAuditFlags(f *envFlags) auditFlags {
	d := guard.DefaultAuditOptions()
	return auditFlags{
		retention: f.Duration("audit-retention", "GPUGATE_AUDIT_RETENTION", 90*24*time.Hour,
			"how long audit rows are kept, at least 24h; purged every --purge-interval (0 keeps them forever)"),
		interval: f.Duration("audit-flush-interval", "GPUGATE_AUDIT_FLUSH_INTERVAL", d.Interval,
			"how often buffered audit records are written"),
		batch: f.Int("audit-batch", "GPUGATE_AUDIT_BATCH", d.Batch,
			"audit records per insert; a full batch is written at once"),
		buffer: f.Int("audit-buffer", "GPUGATE_AUDIT_BUFFER", d.Buffer,
			"audit records held in memory while the database is slow; beyond it records are dropped, counted and logged"),
	}
}

// check returns an error naming the first invalid audit flag.
func (a auditFlags) check() error {
	switch {
	case *a.retention != 0 && *a.retention < minAuditRetention:
		return fmt.Errorf("--audit-retention must be 0 (keep forever) or at least %s", minAuditRetention)
	case *a.interval <= 0:
		return fmt.Errorf("--audit-flush-interval must be positive")
	case *a.batch < 1 || *a.batch > 10000:
		return fmt.Errorf("--audit-batch must be between 1 and 10000")
	case *a.buffer < *a.batch:
		return fmt.Errorf("--audit-buffer must be at least --audit-batch")
	}
	return nil
}

func (a auditFlags) options() guard.AuditOptions {
	return guard.AuditOptions{Interval: *a.interval, Batch: *a.batch, Buffer: *a.buffer}
}

// auditPurgeJob deletes audit rows older than keep every period (either 0: never), through
// the database's purge function. Several replicas may run it: the deletes do not conflict.
func auditPurgeJob(ctx context.Context, store *db.DB, keep, period time.Duration, log *slog.Logger) {
	if keep <= 0 || period <= 0 {
		return
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		n, err := store.PurgeAudit(pctx, time.Now().Add(-keep))
		cancel()
		if err != nil {
			log.Warn("purging old audit rows", "err", err)
		}
		if n > 0 {
			log.Info("purged", "audit_events", n)
		}
	}
}

// closeAudit writes the audit records still buffered (for up to 10 s) and stops the writer;
// it logs what it could not write. Safe to call twice.
func (m *ServeMain) closeAudit() {
	if m.audit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.audit.Close(ctx); err != nil {
		m.log.Error("audit log", "err", err)
	}
	s := m.audit.Stats()
	m.log.Info("audit log closed", "written", s.Written, "dropped", s.Dropped)
	m.audit = nil
}
