package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/metrics"
)

// poolFlags place the gateway's connections: read replicas for anonymous reads, and a pooler
// in front of the primary with a direct URL for what needs a session (docs/postgresql.md,
// "Read replicas" and "PgBouncer").
type poolFlags struct {
	replicaURLs *string
	maxLag      *time.Duration
	pooler      *string
	directURL   *string
}

// Values of --database-pooler.
const (
	poolerNone        = "none"
	poolerSession     = "session"
	poolerTransaction = "transaction"
)

func addPoolFlags(f *envFlags) poolFlags {
	return poolFlags{
		replicaURLs: f.String("database-replica-urls", "GPUGATE_DATABASE_REPLICA_URLS", "",
			"PostgreSQL URLs of streaming read replicas, comma-separated, as the explorer role: anonymous reads go to one "+
				"that is up and within --replica-max-lag, else to the primary"),
		maxLag: f.Duration("replica-max-lag", "GPUGATE_REPLICA_MAX_LAG", db.DefaultReplicaMaxLag,
			"how stale a read replica may be before anonymous reads leave it for the primary"),
		pooler: f.String("database-pooler", "GPUGATE_DATABASE_POOLER", poolerNone,
			"what --database-url goes through: none, session (a session-pooling PgBouncer) or transaction "+
				"(a transaction-pooling PgBouncer: no prepared statements; LISTEN and session locks use --database-direct-url)"),
		directURL: f.String("database-direct-url", "GPUGATE_DATABASE_DIRECT_URL", "",
			"PostgreSQL URL that reaches the primary without a transaction pooler, for LISTEN/NOTIFY, session advisory locks "+
				"and migrations (empty: --database-url)"),
	}
}

// transaction reports whether --database-pooler says transaction pooling; it returns an error
// for a value that is none of the three.
func (f poolFlags) transaction() (bool, error) {
	switch *f.pooler {
	case poolerNone, "", poolerSession: // session pooling keeps a client's session: nothing to change
		return false, nil
	case poolerTransaction:
		return true, nil
	}
	return false, fmt.Errorf("--database-pooler must be %s, %s or %s, got %q", poolerNone, poolerSession, poolerTransaction, *f.pooler)
}

// poolerSetup adjusts the store's options for --database-pooler and returns the app role's
// connection string: behind a transaction pooler, statements are not prepared and lone ones run
// in a transaction of their own (db.Options.TransactionPooler), and the direct URL (else the
// database URL) serves the kill switches' listener, the purge's session lock and, without
// --migration-database-url, the migrations' lock and the seed. It returns an error for a bad
// --database-pooler.
func (d *database) poolerSetup(f poolFlags, dsn string, o *db.Options) (string, error) {
	tx, err := f.transaction()
	if err != nil {
		return "", err
	}
	direct := *f.directURL
	if direct == "" {
		direct = dsn
	}
	d.direct = direct
	if !tx {
		return dsn, nil
	}
	o.TransactionPooler = true
	if d.roles.owner == "" {
		d.roles.owner = direct
	}
	return dsn, nil
}

// attachSession gives the store a small pool on the direct URL for session-level work, when
// the app's connections go through a transaction pooler. It returns the error of opening it.
func (d *database) attachSession(ctx context.Context) error {
	if d.store.Prepares() || d.direct == "" {
		return nil
	}
	x, err := sqlx.Open("postgres", d.direct)
	if err == nil {
		err = x.PingContext(ctx)
	}
	if err != nil {
		if x != nil {
			_ = x.Close()
		}
		return fmt.Errorf("--database-direct-url: %w", err)
	}
	x.SetMaxOpenConns(2)
	x.SetConnMaxIdleTime(time.Minute)
	d.store.SetSession(x)
	return nil
}

// attachReplicas hands the configured read replicas to the store (anonymous reads; their
// checkers start now and a replica that is down is simply not used). It returns an error for
// a malformed URL.
func (d *database) attachReplicas(f poolFlags, log *slog.Logger) error {
	urls := splitList(*f.replicaURLs)
	if len(urls) == 0 {
		return nil
	}
	if *f.maxLag <= 0 {
		return fmt.Errorf("--replica-max-lag must be positive, got %v", *f.maxLag)
	}
	if err := d.store.AddReplicas(urls, db.ReplicaOptions{MaxLag: *f.maxLag, MaxConns: d.roles.conns, Logger: log}); err != nil {
		return fmt.Errorf("--database-replica-urls: %w", err)
	}
	log.Info("read replicas configured for anonymous reads", "replicas", len(urls), "max_lag", *f.maxLag)
	return nil
}

// replicaStates is the store's replica states for the metrics (metrics.WatchReplicas).
func (d *database) replicaStates() []metrics.Replica {
	var out []metrics.Replica
	for _, r := range d.store.Replicas() {
		lag := -1.0
		if r.Lag >= 0 {
			lag = r.Lag.Seconds()
		}
		out = append(out, metrics.Replica{Name: r.Name, Up: r.Up, Lag: lag, LagBytes: float64(r.LagBytes)})
	}
	return out
}
