package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/resolvers"
)

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", format)
}

// tuneGC trades memory for CPU unless the operator set GOGC/GOMEMLIMIT: a GraphQL response
// allocates a lot of short-lived garbage, so collecting a third as often cuts ~20% of the CPU per
// listing request, while the soft memory limit keeps the heap well under 100 MB.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(300)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(80 << 20)
	}
}

// ServeMain is `gpugate serve`, the gateway.
type ServeMain struct {
	flags   serveFlags
	workers resolvers.WorkerConfig
	log     *slog.Logger

	// Opened by Run, released by Close.
	ln       net.Listener
	db       *database
	dev      *devIdentity
	audit    *guard.AuditLog
	stopJobs context.CancelFunc
	obs      *observability
}

// serveFlags are serve's flags; f tells which were set explicitly.
type serveFlags struct {
	f                *envFlags
	listen           *string
	dbf              dbFlags
	dev              *bool
	introspection    *bool
	migrate          *bool
	seedN            *int
	timeout          *time.Duration
	maxBody          *int
	maxTokens        *int
	maxDepth         *int
	maxAliases       *int
	maxRoot          *int
	maxDirectives    *int
	maxCost          *int
	maxSelection     *int
	maxConcurrent    *int
	maxQueued        *int
	maxWorkers       *int
	maxWorkersQueued *int
	heavyCost        *int
	maxHeavy         *int
	queueWait        *time.Duration
	maxResponse      *int
	maxHeader        *int
	publicCacheBytes *int
	publicCache      *time.Duration
	statsTTL         *time.Duration
	shutdown         *time.Duration
	oidcIssuers      *string
	oidcAudience     *string
	oidcRoles        *string
	oidcTokenType    *string
	adminRole        *string
	devIssuerAddr    *string
	difficulty       *int
	challengeTTL     *time.Duration
	allowSimulated   *bool
	heartbeatEvery   *time.Duration
	heartbeatTimeout *time.Duration
	ev               evidenceFlags
	mf               metricsFlags
	audit            auditFlags
	lim              limitFlags
	cc               *ccFlags
	web              webFlags
	debugListen      *string
	logFormat        *string
	logLevel         *string
}

// ParseFlags reads serve's flags and checks the worker limits and the log settings; it
// returns flag.ErrHelp after --help and otherwise the first invalid flag.
func (m *ServeMain) ParseFlags(args []string) error {
	c := &m.flags
	f := newFlags("serve", "Run the gateway: /graphql, /healthz, /readyz, and GraphiQL at /graphiql in dev mode, the explorer at / and the console at /console/.")
	c.listen = f.String("listen", "GPUGATE_LISTEN", "127.0.0.1:8080", "address to serve HTTP on")
	c.dbf = addDBFlags(f)
	c.dev = f.Bool("dev", "GPUGATE_DEV", false, "dev mode: GraphiQL, introspection, field suggestions (default: on without DATABASE_URL)")
	c.introspection = f.Bool("introspection", "GPUGATE_INTROSPECTION", false, "serve schema introspection (default: on in dev mode)")
	c.migrate = f.Bool("migrate", "GPUGATE_MIGRATE", true, "apply pending migrations at start")
	c.seedN = f.Int("seed", "GPUGATE_SEED", 3000, "demo devices to load into an empty database (only without DATABASE_URL unless set explicitly; 0 disables)")
	def := gateway.Defaults()
	c.timeout = f.Duration("request-timeout", "GPUGATE_REQUEST_TIMEOUT", def.RequestTimeout, "deadline of every request, including its SQL")
	c.maxBody = f.Int("max-body-bytes", "GPUGATE_MAX_BODY_BYTES", int(def.MaxBodyBytes), "request body limit")
	c.maxTokens = f.Int("max-tokens", "GPUGATE_MAX_TOKENS", def.MaxTokens, "GraphQL parser token limit")
	c.maxDepth = f.Int("max-depth", "GPUGATE_MAX_DEPTH", def.MaxDepth, "maximum selection depth")
	c.maxAliases = f.Int("max-aliases", "GPUGATE_MAX_ALIASES", def.MaxAliases, "maximum aliases per operation")
	c.maxRoot = f.Int("max-root-fields", "GPUGATE_MAX_ROOT_FIELDS", def.MaxRootFields, "maximum root fields per operation")
	c.maxDirectives = f.Int("max-directives", "GPUGATE_MAX_DIRECTIVES", def.MaxDirectives, "maximum directives per document")
	c.maxCost = f.Int("max-cost", "GPUGATE_MAX_COST", def.MaxCost, "maximum cost of an operation (each field 1, lists multiply by their page size), checked before execution")
	c.maxSelection = f.Int("max-selection-fields", "GPUGATE_MAX_SELECTION_FIELDS", def.MaxSelectionFields, "maximum fields in one selection set, fragments expanded")
	c.maxConcurrent = f.Int("max-concurrent", "GPUGATE_MAX_CONCURRENT", def.MaxConcurrent, "operations executing at once; more wait in the queue")
	c.maxQueued = f.Int("max-queued", "GPUGATE_MAX_QUEUED", def.MaxQueued, "operations waiting for an execution slot (negative: none); beyond it OVERLOADED (HTTP 503)")
	c.maxWorkers = f.Int("max-concurrent-workers", "GPUGATE_MAX_CONCURRENT_WORKERS", def.MaxWorkerConcurrent,
		"signed worker requests executing at once, in their own lane apart from --max-concurrent")
	c.maxWorkersQueued = f.Int("max-queued-workers", "GPUGATE_MAX_QUEUED_WORKERS", def.MaxWorkerQueued,
		"signed worker requests waiting for a slot of their lane (negative: none); beyond it OVERLOADED (HTTP 503)")
	c.heavyCost = f.Int("heavy-cost", "GPUGATE_HEAVY_COST", def.HeavyCost, "operations costing this much or more are limited to --max-heavy at once")
	c.maxHeavy = f.Int("max-heavy", "GPUGATE_MAX_HEAVY", def.MaxHeavy, "expensive operations (see --heavy-cost) executing at once; as many more may wait")
	c.queueWait = f.Duration("queue-wait", "GPUGATE_QUEUE_WAIT", def.QueueWait, "how long a queued operation waits for a slot before OVERLOADED")
	c.maxResponse = f.Int("max-response-bytes", "GPUGATE_MAX_RESPONSE_BYTES", int(def.MaxResponseBytes), "largest response; a larger one gets RESPONSE_TOO_LARGE")
	c.maxHeader = f.Int("max-header-bytes", "GPUGATE_MAX_HEADER_BYTES", 64<<10, "largest request header block")
	c.publicCacheBytes = f.Int("public-cache-bytes", "GPUGATE_PUBLIC_CACHE_BYTES", int(def.PublicCacheBytes), "memory the public micro-cache may hold")
	c.publicCache = f.Duration("public-cache-ttl", "GPUGATE_PUBLIC_CACHE_TTL", time.Second,
		"how long an anonymous query's response may be reused for the identical query (0 disables)")
	c.statsTTL = f.Duration("stats-ttl", "GPUGATE_STATS_TTL", 5*time.Second, "how long networkStats results are reused")
	c.shutdown = f.Duration("shutdown-timeout", "GPUGATE_SHUTDOWN_TIMEOUT", 15*time.Second, "how long in-flight requests may drain on SIGTERM")
	c.oidcIssuers = f.String("oidc-issuer", "GPUGATE_OIDC_ISSUER", "",
		"trusted OIDC issuer URL(s), comma-separated, matched exactly (dev mode without it: the built-in dev issuer)")
	c.oidcAudience = f.String("oidc-audience", "GPUGATE_OIDC_AUDIENCE", "gpugate-api", "the API audience access tokens must carry")
	c.oidcRoles = f.String("oidc-roles-claim", "GPUGATE_OIDC_ROLES_CLAIM", "groups",
		"token claim holding roles (Okta/Dex: groups; Auth0: your namespaced claim)")
	c.oidcTokenType = f.String("oidc-token-type", "GPUGATE_OIDC_TOKEN_TYPE", oidc.TokenTypeJWT,
		"how the issuers' access tokens differ from their ID tokens: jwt (untyped: Okta, Auth0), at+jwt (RFC 9068), id-token (no distinct access tokens: Dex)")
	c.adminRole = f.String("admin-role", "GPUGATE_ADMIN_ROLE", "ADMIN", "role name in tokens that grants the ADMIN role")
	c.devIssuerAddr = f.String("dev-issuer-listen", "GPUGATE_DEV_ISSUER_LISTEN", "127.0.0.1:0",
		"loopback address of the dev OIDC issuer (dev mode only)")
	c.difficulty = f.Int("pow-difficulty", "GPUGATE_POW_DIFFICULTY", 16, "leading zero bits a worker's proof of work must reach")
	c.challengeTTL = f.Duration("challenge-ttl", "GPUGATE_CHALLENGE_TTL", 2*time.Minute, "how long a proof-of-work challenge stays valid")
	c.allowSimulated = f.Bool("allow-simulated-gpus", "GPUGATE_ALLOW_SIMULATED_GPUS", false,
		"accept the GPU ids only go-nvml's simulated hosts report (default: on in dev mode; off, they are flagged SIMULATED_GPU)")
	c.heartbeatEvery = f.Duration("heartbeat-interval", "GPUGATE_HEARTBEAT_INTERVAL", 30*time.Second, "how often workers are told to send heartbeats")
	c.heartbeatTimeout = f.Duration("heartbeat-timeout", "GPUGATE_HEARTBEAT_TIMEOUT", db.HeartbeatWindow,
		"a device silent this long is shown DOWN by a background job (0 disables the job)")
	c.ev = addEvidenceFlags(f)
	c.mf = addMetricsFlags(f)
	c.audit = addAuditFlags(f)
	c.lim = addLimitFlags(f)
	c.cc = addCCFlags(f)
	c.web = addWebFlags(f)
	c.debugListen = f.String("debug-listen", "GPUGATE_DEBUG_LISTEN", "", "serve /debug/pprof on this loopback address (empty: off)")
	c.logFormat = f.String("log-format", "GPUGATE_LOG_FORMAT", "text", "log format: text or json")
	c.logLevel = f.String("log-level", "GPUGATE_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	if err := f.parse(args); err != nil {
		return err
	}
	c.f = f
	m.workers = resolvers.WorkerConfig{Difficulty: *c.difficulty, ChallengeTTL: *c.challengeTTL, HeartbeatEvery: *c.heartbeatEvery}
	if err := c.ev.apply(&m.workers); err != nil {
		return err
	}
	if _, err := c.mf.config(); err != nil {
		return err
	}
	if err := c.audit.check(); err != nil {
		return err
	}
	if err := c.lim.apply(); err != nil {
		return err
	}
	if err := c.cc.load(); err != nil {
		return err
	}
	if err := c.web.check(); err != nil {
		return err
	}
	log, err := newLogger(*c.logFormat, *c.logLevel, os.Stderr)
	if err != nil {
		return err
	}
	m.log = log
	return nil
}

// Run listens, opens the database (starting PostgreSQL in zero-config mode), migrates, seeds,
// starts the dev issuer in dev mode and serves until ctx is cancelled, then drains in-flight
// requests for up to --shutdown-timeout. It returns nil after a clean shutdown and otherwise
// the error that stopped it.
func (m *ServeMain) Run(ctx context.Context) error {
	c, log := &m.flags, m.log
	workers := m.workers
	tuneGC()
	ln, err := net.Listen("tcp", *c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *c.listen, err)
	}
	m.ln = ln

	d, err := openDatabase(ctx, c.dbf, db.Options{StatsTTL: *c.statsTTL, MaxOpenChallenges: *c.ev.maxOpen}, log)
	if err != nil {
		return err
	}
	m.db = d
	if !c.f.explicit["dev"] {
		*c.dev = d.embedded
	}
	if !c.f.explicit["introspection"] {
		*c.introspection = *c.dev
	}
	if !c.f.explicit["allow-simulated-gpus"] {
		*c.allowSimulated = *c.dev
	}
	workers.AllowSimulatedGPUs = *c.allowSimulated
	if err := c.cc.apply(&workers, c.f.explicit, d.embedded, log); err != nil {
		return err
	}
	if *c.migrate {
		var applied []int64
		if err := d.asOwner(ctx, func(owner *db.DB) (err error) { applied, err = db.Migrate(ctx, owner.SQL().DB); return err }); err != nil {
			return err
		}
		log.Info("migrations applied", "versions", applied)
	}
	if *c.seedN > 0 && (d.embedded || c.f.explicit["seed"]) {
		start := time.Now()
		var seeded bool
		if err := d.asOwner(ctx, func(owner *db.DB) (err error) { seeded, err = owner.Seed(ctx, *c.seedN); return err }); err != nil {
			return err
		}
		if seeded {
			log.Info("demo data loaded", "devices", *c.seedN, "took", time.Since(start).Round(time.Millisecond))
		}
	}
	d.warnAuditPrivileges(ctx, log)
	if err := d.attachExplorer(ctx, log); err != nil {
		return err
	}
	if err := d.attachReplicas(c.dbf.roles.pool, log); err != nil { // cli/replicas.go
		return err
	}

	gcfg := gateway.Config{
		Dev: *c.dev, Introspection: *c.introspection, MaxBodyBytes: int64(*c.maxBody), MaxTokens: *c.maxTokens,
		MaxDepth: *c.maxDepth, MaxAliases: *c.maxAliases, MaxRootFields: *c.maxRoot, MaxDirectives: *c.maxDirectives,
		RequestTimeout: *c.timeout, RoleNames: map[model.Role]string{model.RoleAdmin: *c.adminRole},
		Workers:        workers,
		PublicCacheTTL: *c.publicCache, PublicCacheBytes: int64(*c.publicCacheBytes),
		MaxCost: *c.maxCost, MaxSelectionFields: *c.maxSelection, MaxConcurrent: *c.maxConcurrent, MaxQueued: *c.maxQueued, QueueWait: *c.queueWait,
		MaxWorkerConcurrent: *c.maxWorkers, MaxWorkerQueued: *c.maxWorkersQueued,
		HeavyCost: *c.heavyCost, MaxHeavy: *c.maxHeavy,
		MaxResponseBytes: int64(*c.maxResponse),
		WriteLimits:      c.lim.limits, Switches: guard.NewSwitches(d.store, log, *c.lim.switchReread),
	}
	issuers := splitList(*c.oidcIssuers)
	if len(issuers) == 0 && *c.dev {
		var stateDir string // zero-config mode: keep the dev issuer's key and port in the data dir
		if d.local != nil {
			stateDir = d.local.DataDir()
		}
		dev, err := startDevIssuer(ctx, *c.devIssuerAddr, *c.oidcAudience, *c.oidcRoles, stateDir, d.store, log)
		if err != nil {
			return err
		}
		m.dev = dev
		issuers, gcfg.DevInfo = []string{dev.server.Issuer()}, dev.info
		*c.oidcTokenType = oidc.TokenTypeATJWT // the dev issuer types its access tokens (RFC 9068)
	}
	if len(issuers) > 0 {
		var ics []oidc.IssuerConfig
		for _, iss := range issuers {
			ics = append(ics, oidc.IssuerConfig{URL: iss, Audience: *c.oidcAudience, RolesClaim: *c.oidcRoles, TokenType: *c.oidcTokenType})
		}
		v, err := oidc.New(ctx, oidc.Config{Issuers: ics, Logger: log})
		if err != nil {
			return fmt.Errorf("OIDC: %w", err)
		}
		gcfg.Verifier = v
		log.Info("OIDC issuers trusted", "issuers", issuers, "audience", *c.oidcAudience, "token_type", *c.oidcTokenType)
	} else {
		log.Warn("no --oidc-issuer: every request is anonymous; owner and admin operations are unavailable")
	}
	var devClient string
	if m.dev != nil {
		devClient = m.dev.info.ClientID
	}
	gcfg.Web = c.web.options(issuers, devClient, *c.oidcRoles, *c.adminRole) // the console's sign-in (cli/web.go)
	// The detector may trip the kill switches (--alert-kill-switch); the metrics export them.
	if m.obs, err = c.mf.start(gcfg.Switches, log); err != nil {
		return err
	}
	m.obs.reg.WatchSwitches(gcfg.Switches.Disabled)
	m.obs.reg.WatchReplicas(d.replicaStates)
	gcfg.Metrics, gcfg.PublicMetrics, gcfg.GuardObservers = m.obs.reg, *c.mf.public, m.obs.observers()
	m.audit = guard.NewAuditLog(d.store, log, c.audit.options())
	gcfg.Audit = m.audit
	gcfg.DeviceAuth = gateway.NewDeviceAuth(gcfg, d.store, log) // its Listen runs with the jobs
	h := gateway.New(gcfg, d.store, log)
	drain := &drainer{} // SIGTERM's drain (cli/drain.go)
	srv := &http.Server{
		Handler:           drain.handler(h),
		ConnState:         drain.connState,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      *c.timeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    *c.maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	base := "http://" + ln.Addr().String()
	log.Info("gpugate is serving", "graphql", base+"/graphql", "healthz", base+"/healthz", "readyz", base+"/readyz", "dev", *c.dev)
	if *c.dev {
		fmt.Fprintf(os.Stderr, "\n  Explorer:  %s/\n  Console:   %s/console/\n  GraphiQL:  %s/graphiql\n  GraphQL:   %s/graphql\n  Health:    %s/healthz  %s/readyz\n  Metrics:   %s/metrics\n", base, base, base, base, base, base, base)
		if gcfg.DevInfo != nil {
			fmt.Fprintf(os.Stderr, "  Sign in:   go run . dev token --server %s alice   (also bob, admin)\n", base)
		}
		fmt.Fprintln(os.Stderr)
	}
	if *c.debugListen != "" {
		if err := serveDebug(*c.debugListen, log); err != nil {
			return err
		}
	}
	jobs, stopJobs := context.WithCancel(context.Background())
	m.stopJobs = stopJobs
	go markDownJob(jobs, d.store, *c.heartbeatTimeout, c.ev.retention(), *c.ev.purgeEvery, m.obs.reg, log)
	go auditPurgeJob(jobs, d.store, *c.audit.retention, *c.ev.purgeEvery, log)
	go gcfg.Switches.Run(jobs, d.dsn) // the kill switches: LISTEN/NOTIFY and re-reads (cli/limits.go)
	// Replicas share device keys and the replay window (docs/scale-out.md, "Stateless replicas").
	go gcfg.DeviceAuth.Listen(jobs, d.dsn, db.DeviceKeysChannel, log)
	go d.store.RunReplayRetirement(jobs, 0, func(err error) { log.Warn("retiring replay keys", "err", err) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var localDone <-chan struct{}
	if d.local != nil {
		localDone = d.local.Done()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-localDone:
		return errors.New("the gateway's PostgreSQL exited unexpectedly; see postgres.log in the data directory")
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "timeout", *c.shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), *c.shutdown)
	defer cancel()
	drain.drain(sctx, ln) // refuse new connections; let idle keep-alive ones carry one last request
	// The listener is closed already: Shutdown closing it again is no failure.
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Warn("drain incomplete; closing remaining connections", "err", err)
		_ = srv.Close()
	}
	m.closeAudit() // after the drain: every request's records are in the buffer
	log.Info("stopped")
	return nil
}

// Close stops the background jobs and the dev issuer, closes the database (stopping the
// embedded PostgreSQL) and the listener; it returns nil (failures are logged).
func (m *ServeMain) Close() error {
	if m.stopJobs != nil {
		m.stopJobs()
	}
	m.obs.close()
	m.closeAudit()
	if m.dev != nil {
		_ = m.dev.server.Close(context.Background())
	}
	if m.db != nil {
		m.db.close(m.log)
	}
	if m.ln != nil {
		_ = m.ln.Close()
	}
	return nil
}
