// Package gateway assembles gpugate's HTTP surface: the GraphQL handler with its limits and error
// presenter, GraphiQL in dev mode, health endpoints and the middleware every request crosses
// (request id, access log, body cap, deadline).
package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/gateway/fastexec"
	"github.com/gpugate/gpugate/gateway/graphiql"
	"github.com/gpugate/gpugate/graph"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/metrics"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/web"
)

// Config holds the gateway's limits and modes. Zero values take the defaults of Defaults().
type Config struct {
	Dev            bool          // GraphiQL at /graphiql, field suggestions in errors
	Introspection  bool          // serve __schema/__type
	MaxBodyBytes   int64         // request body cap
	MaxTokens      int           // parser token limit
	MaxDepth       int           // selection depth, fragments expanded
	MaxAliases     int           // aliased fields, fragments expanded; __typename is free
	MaxRootFields  int           // fields of the operation's root selection
	MaxDirectives  int           // directive uses in the document
	RequestTimeout time.Duration // deadline of every request: SQL and execution
	MaxCost        int           // cost of an operation (cost.go), computed before execution
	// MaxSelectionFields caps the fields of any one selection set, fragments expanded (gqlgen's
	// field collection is quadratic in it; see widestSelection).
	MaxSelectionFields int

	// MaxConcurrent operations execute at once; MaxQueued more wait at most QueueWait for a
	// slot; the rest get OVERLOADED (HTTP 503).
	MaxConcurrent int
	MaxQueued     int
	QueueWait     time.Duration
	// Signed worker requests have their own lane: MaxWorkerConcurrent at once, MaxWorkerQueued
	// more waiting at most QueueWait. Explorer traffic cannot crowd out heartbeats (a device
	// whose heartbeats are refused would be shown DOWN), and a fleet's heartbeats, which hold
	// their slot while they wait to share one write, cannot crowd out the explorer.
	MaxWorkerConcurrent int
	MaxWorkerQueued     int
	// Operations costing HeavyCost or more are limited to MaxHeavy executing (and as many
	// waiting, at most QueueWait); the rest get OVERLOADED.
	HeavyCost int
	MaxHeavy  int
	// MaxResponseBytes caps a response's data; a larger one is replaced by RESPONSE_TOO_LARGE.
	MaxResponseBytes int64

	// Verifier authenticates bearer tokens; nil means every request is anonymous.
	Verifier *oidc.Verifier
	// RoleNames maps schema roles to the role names the identity provider issues.
	RoleNames map[model.Role]string
	// DevInfo, in dev mode, is served at /dev/oidc for `gpugate dev token`.
	DevInfo any
	// Workers holds the proof-of-work and heartbeat settings.
	Workers resolvers.WorkerConfig
	// SignatureWindow is the clock difference allowed on worker request signatures (default 60 s).
	SignatureWindow time.Duration
	// DeviceAuth authenticates signed worker requests; nil: NewDeviceAuth(cfg, store, log). The
	// caller that builds it runs its Listen (docs/scale-out.md, "Stateless replicas").
	DeviceAuth *deviceauth.Authenticator
	// PublicCacheTTL is how long an anonymous query's response may be reused (0: no cache).
	PublicCacheTTL time.Duration
	// PublicCacheBytes bounds the memory the public cache holds.
	PublicCacheBytes int64

	// Metrics, when set, counts requests, cache use, admission, the pool and the guard's events
	// (docs/operations.md, "Metrics"); nil counts nothing.
	Metrics *metrics.Metrics
	// PublicMetrics serves Metrics at /metrics on this handler outside dev mode too (dev mode
	// always does; production serves it on a separate listener).
	PublicMetrics bool
	// GuardObservers receive every write attempt and denial the guard records (the write-rate
	// detector); they must not block.
	GuardObservers []func(guard.Event)
	// Audit is the durable audit log the guard's records go to (docs/operations.md, "Audit
	// log"); the caller closes it after the server drained. nil: New starts one with the
	// default options that is never closed (records pending at exit are lost).
	Audit *guard.AuditLog
	// WriteLimits are the identity write limits (guard.DefaultLimits for zero fields).
	WriteLimits guard.LimitConfig
	// Switches are the kill switches, kept current by their Run (serve starts it); nil: the
	// gateway reads them itself, re-reading every few seconds when checked.
	Switches *guard.Switches
	// DisableFastExec turns the compiled executor of the public reads off (gateway/fastexec):
	// every operation is executed by gqlgen's executor. Tests and benchmarks compare the two.
	DisableFastExec bool
	// Web configures the explorer (/) and the owner console (/console/), served in every mode
	// (docs/web.md); its zero value serves both, the console without sign-in.
	Web web.Options
}

// Defaults returns the gateway's default limits (docs/security.md).
func Defaults() Config {
	return Config{
		MaxBodyBytes:   1 << 20,
		MaxTokens:      15000,
		MaxDepth:       10,
		MaxAliases:     15,
		MaxRootFields:  20,
		MaxDirectives:  50,
		RequestTimeout: 10 * time.Second,
		MaxCost:        5000,
		// The widest selection GraphiQL's introspection makes is 11 fields; a device with every
		// field is 11. 100 leaves room for any real client and bounds the quadratic work.
		MaxSelectionFields: 100,
		// Two cores: eight operations share the CPU (and at most eight of the twenty database
		// connections), a few dozen more may wait two seconds for a turn.
		MaxConcurrent: 8,
		MaxQueued:     32,
		// A heartbeat holds its slot ~5 ms while it waits to share one write: 64 slots carry
		// ~12,000 heartbeats/s, a fleet of 360,000 workers at one heartbeat per 30 s.
		MaxWorkerConcurrent: 64,
		MaxWorkerQueued:     256,
		QueueWait:           2 * time.Second,
		// Half the cost limit: a 100-device page of every device field costs 1,104; documents
		// near the limit are what an attacker sends. One per core.
		HeavyCost:        2500,
		MaxHeavy:         2,
		MaxResponseBytes: 4 << 20,
		PublicCacheBytes: 16 << 20,
	}
}

// queueSize is a configured queue length: negative means no queue, zero the default def.
func queueSize(v, def int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxTokens <= 0 {
		c.MaxTokens = d.MaxTokens
	}
	if c.MaxDepth <= 0 {
		c.MaxDepth = d.MaxDepth
	}
	if c.MaxAliases <= 0 {
		c.MaxAliases = d.MaxAliases
	}
	if c.MaxRootFields <= 0 {
		c.MaxRootFields = d.MaxRootFields
	}
	if c.MaxDirectives <= 0 {
		c.MaxDirectives = d.MaxDirectives
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.MaxCost <= 0 {
		c.MaxCost = d.MaxCost
	}
	if c.MaxSelectionFields <= 0 {
		c.MaxSelectionFields = d.MaxSelectionFields
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	c.MaxQueued = queueSize(c.MaxQueued, d.MaxQueued)
	if c.MaxWorkerConcurrent <= 0 {
		c.MaxWorkerConcurrent = d.MaxWorkerConcurrent
	}
	c.MaxWorkerQueued = queueSize(c.MaxWorkerQueued, d.MaxWorkerQueued)
	if c.HeavyCost <= 0 {
		c.HeavyCost = d.HeavyCost
	}
	if c.MaxHeavy <= 0 {
		c.MaxHeavy = d.MaxHeavy
	}
	if c.QueueWait <= 0 {
		c.QueueWait = d.QueueWait
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = d.MaxResponseBytes
	}
	if c.PublicCacheBytes <= 0 {
		c.PublicCacheBytes = d.PublicCacheBytes
	}
	return c
}

// New returns the gateway's root handler.
func New(cfg Config, store *db.DB, log *slog.Logger) http.Handler {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	log = slog.New(requestIDHandler{log.Handler()})
	devices := cfg.DeviceAuth
	if devices == nil {
		devices = NewDeviceAuth(cfg, store, log)
	}
	g, switches := guard.New(log), cfg.Switches
	if switches == nil {
		switches = guard.NewSwitches(store, log, 0)
	}
	g.Admission(guard.NewLimits(store, cfg.WriteLimits), switches) // before resolvers.New: verify adds its limits
	if cfg.Audit == nil {
		cfg.Audit = guard.NewAuditLog(store, log, guard.AuditOptions{})
	}
	cfg.Audit.Attach(g)
	for _, fn := range cfg.GuardObservers {
		g.Subscribe(fn)
	}
	m := cfg.Metrics
	if m != nil {
		g.Subscribe(m.ObserveGuard)
		m.WatchDB(store.SQL().DB)
	}
	res := resolvers.New(store, g, cfg.RoleNames, cfg.Workers, devices)
	var schema graphql.ExecutableSchema = graph.NewExecutableSchema(graph.Config{Resolvers: res, Directives: res.Directives()})
	if !cfg.DisableFastExec {
		schema = fastexec.Wrap(schema, store) // the hot public reads, past gqlgen's executor
	}
	srv := handler.New(schema)
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetParserTokenLimit(cfg.MaxTokens)
	srv.SetDisableSuggestion(!cfg.Dev)
	if cfg.Introspection {
		srv.Use(extension.Introspection{})
	}
	if m != nil { // first: the outermost middleware sees the final answer (observe.go)
		m.AllowOperations(rootFieldNames(schema.Schema()))
		srv.AroundOperations(observeOperation)
		srv.AroundResponses(observeResponse)
		srv.AroundFields(observeProofs(m))
	}
	srv.Use(&limits{cfg: cfg})
	srv.AroundOperations(res.Loaders)
	srv.AroundOperations(explorerReads) // anonymous reads on the explorer role (roles.go)
	srv.AroundOperations(timeoutResponse)
	heavy := newHeavyLane(int64(cfg.HeavyCost), cfg.MaxHeavy, cfg.QueueWait)
	srv.AroundOperations(heavy.middleware)
	srv.AroundFields(stopWhenDone)
	srv.AroundFields(res.AuditMutations)
	srv.AroundResponses(finishResponse(cfg.MaxResponseBytes))
	cache := newPublicCache(cfg.PublicCacheTTL, cfg.PublicCacheBytes)
	if cache != nil {
		cache.metrics = m
		srv.AroundOperations(markCacheable)
	}
	p := presenter{log: log, suggestions: cfg.Dev}
	srv.SetErrorPresenter(p.present)
	srv.SetRecoverFunc(p.recover)

	mux := http.NewServeMux()
	var api http.Handler = retryAfterHeader(srv)
	reject := audited(g, cfg.MaxTokens, rejectToken(log))
	if cfg.Verifier != nil {
		api = cfg.Verifier.Middleware(reject)(api)
	}
	api = devices.Middleware(reject)(api)
	general, workers := newAdmission(cfg.MaxConcurrent, cfg.MaxQueued, cfg.QueueWait),
		newAdmission(cfg.MaxWorkerConcurrent, cfg.MaxWorkerQueued, cfg.QueueWait)
	api = lanes(general, workers)(api)
	watchLanes(m, map[string]*admission{"general": general, "workers": workers, "heavy": {slots: heavy.slots, queue: heavy.queue}})
	mux.Handle("/graphql", observe(m, graphqlOnly(cfg.MaxBodyBytes, cache.middleware(api))))
	if m != nil && (cfg.Dev || cfg.PublicMetrics) {
		mux.Handle("GET /metrics", m.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ready(ctx); err != nil {
			log.WarnContext(r.Context(), "not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": readyReason(err)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	web.Mount(mux, cfg.Web) // the explorer at /, the console at /console/ (docs/web.md)
	if cfg.Dev {
		graphiql.Mount(mux, "/graphql") // GET /graphiql and its embedded files under /graphiql/
		if cfg.DevInfo != nil {
			mux.HandleFunc("GET /dev/oidc", func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, http.StatusOK, cfg.DevInfo)
			})
		}
	}
	return requestID(accessLog(log, recoverPanics(log, deadline(cfg.RequestTimeout, mux))))
}

// NewDeviceAuth returns the authenticator of signed worker requests over store: keys from
// device_credentials, the replay window shared by every replica in device_replays.
func NewDeviceAuth(cfg Config, store *db.DB, log *slog.Logger) *deviceauth.Authenticator {
	if log == nil {
		log = slog.Default()
	}
	return deviceauth.New(deviceKeys(store), deviceauth.Options{
		Window:  cfg.SignatureWindow,
		Replays: DeviceReplays(store),
		Touch: func(id string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := store.TouchCredentials(ctx, []string{id}); err != nil {
				log.Warn("recording key use", "err", err)
			}
		},
	})
}

// DeviceReplays is the replay window every replica shares (db.RecordReplay, docs/scale-out.md)
// as deviceauth records a verified signature's use: first use, replayed, or revoked key; the
// store's error otherwise.
func DeviceReplays(store *db.DB) deviceauth.Replays {
	return func(ctx context.Context, credentialID, deviceID string, key [32]byte, signedAt time.Time) (deviceauth.Use, error) {
		use, err := store.RecordReplay(ctx, credentialID, deviceID, key, signedAt)
		switch {
		case err != nil:
			return 0, err
		case use == db.ReplayRepeated:
			return deviceauth.UseReplayed, nil
		case use == db.ReplayRevoked:
			return deviceauth.UseRevoked, nil
		}
		return deviceauth.UseFirst, nil
	}
}

func deviceKeys(store *db.DB) deviceauth.Keys {
	return func(ctx context.Context, deviceID string) ([]deviceauth.Key, error) {
		id, err := db.ParseDeviceID(deviceID)
		if err != nil {
			return nil, nil // not a device: no keys, so the signature is refused
		}
		rows, err := store.DeviceKeys(ctx, id)
		if err != nil {
			return nil, err
		}
		keys := make([]deviceauth.Key, len(rows))
		for i, k := range rows {
			keys[i] = deviceauth.Key{CredentialID: k.CredentialID, PublicKey: k.PublicKey}
		}
		return keys, nil
	}
}
