// Command gpugate is the GraphQL explorer and management gateway of a decentralized GPU network.
//
//	gpugate [serve]  run the gateway (default); with no DATABASE_URL it starts its own PostgreSQL
//	gpugate migrate  apply the embedded database migrations
//	gpugate seed     load deterministic demo data into an empty database
package main

//go:generate go tool gqlgen generate

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/pglocal"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/oidc/devissuer"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/userimport"
	"github.com/gpugate/gpugate/worker"
)

const usage = `gpugate: GraphQL explorer and management gateway for a decentralized GPU network.

Usage:
  gpugate [serve] [flags]   run the gateway (the default command)
  gpugate migrate [flags]   apply the embedded database migrations and exit
  gpugate seed [flags]      load deterministic demo data into an empty database and exit
  gpugate worker [flags]    run the bundled GPU worker agent (NVML, or --simulate dgxh100)
  gpugate users import      link legacy accounts to OIDC identities (CSV or legacy table)
  gpugate dev token USER    print an access token for a demo user of a dev-mode gateway
  gpugate help [command]    show help for a command

Without DATABASE_URL every command uses the gateway's own PostgreSQL under --data-dir, started
from the server binaries on this machine (dev mode: demo data, GraphiQL, introspection).
Every flag can also be set by the environment variable named in its help.
Run 'gpugate <command> --help' for the flags of a command.
`

var commands = map[string]func(args []string) error{
	"serve":   runServe,
	"migrate": runMigrate,
	"seed":    runSeed,
	"dev":     runDev,
	"users":   runUsers,
	"worker": func(args []string) error {
		os.Exit(worker.Main(args))
		return nil
	},
}

func main() {
	args := os.Args[1:]
	cmd := "serve"
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		fmt.Print(usage)
		return
	case len(args) > 0 && args[0] == "help":
		if len(args) == 1 {
			fmt.Print(usage)
			return
		}
		cmd, args = args[1], []string{"--help"}
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		cmd, args = args[0], args[1:]
	}
	run, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "gpugate: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	err := run(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "gpugate:", err)
		os.Exit(1)
	}
}

// envFlags is a flag set whose flags fall back to environment variables.
type envFlags struct {
	*flag.FlagSet
	env      map[string]string // flag name -> variable
	explicit map[string]bool   // flags set by the command line or the environment
}

func newFlags(name, summary string) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &envFlags{FlagSet: fs, env: map[string]string{}}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gpugate %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return f
}

func (f *envFlags) bind(name, env string) {
	f.env[name] = env
	fl := f.Lookup(name)
	fl.Usage += " (env " + env + ")"
}

func (f *envFlags) String(name, env, value, usage string) *string {
	p := f.FlagSet.String(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Int(name, env string, value int, usage string) *int {
	p := f.FlagSet.Int(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Bool(name, env string, value bool, usage string) *bool {
	p := f.FlagSet.Bool(name, value, usage)
	f.bind(name, env)
	return p
}

func (f *envFlags) Duration(name, env string, value time.Duration, usage string) *time.Duration {
	p := f.FlagSet.Duration(name, value, usage)
	f.bind(name, env)
	return p
}

// parse reads the command line, then the environment for flags the command line left unset.
func (f *envFlags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see gpugate %s --help)", f.Arg(0), f.Name())
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, env := range f.env {
		v, ok := os.LookupEnv(env)
		if !ok || set[name] {
			continue
		}
		if err := f.Set(name, v); err != nil {
			return fmt.Errorf("environment %s=%q: %w", env, v, err)
		}
		set[name] = true
	}
	f.explicit = set
	return nil
}

// dbFlags are shared by every command that needs the database.
type dbFlags struct {
	url, dataDir, pgBin *string
	maxConns            *int
}

func addDBFlags(f *envFlags) dbFlags {
	return dbFlags{
		url: f.String("database-url", "DATABASE_URL", "",
			"PostgreSQL URL; empty starts the gateway's own PostgreSQL under --data-dir (dev mode)"),
		dataDir: f.String("data-dir", "GPUGATE_DATA_DIR", defaultDataDir(),
			"where the gateway's own PostgreSQL keeps its data (reused on the next start)"),
		pgBin: f.String("pg-bin-dir", "GPUGATE_PG_BIN_DIR", "",
			"directory holding initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)"),
		maxConns: f.Int("db-max-conns", "GPUGATE_DB_MAX_CONNS", 20, "maximum open database connections"),
	}
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/gpugate"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gpugate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "gpugate")
	}
	return filepath.Join(os.TempDir(), "gpugate")
}

// database is an open store and, in zero-config mode, the PostgreSQL the gateway started.
type database struct {
	store    *db.DB
	local    *pglocal.Server
	embedded bool
}

func (d *database) close(log *slog.Logger) {
	if d.store != nil {
		_ = d.store.Close()
	}
	if d.local != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.local.Stop(ctx); err != nil {
			log.Error("stopping PostgreSQL", "err", err)
		}
	}
}

func openDatabase(ctx context.Context, f dbFlags, statsTTL time.Duration, log *slog.Logger) (*database, error) {
	out := &database{}
	dsn := *f.url
	if dsn == "" {
		out.embedded = true
		log.Info("no DATABASE_URL: starting the gateway's own PostgreSQL", "data_dir", *f.dataDir)
		srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: *f.dataDir, BinDir: *f.pgBin, Logger: log})
		if err != nil {
			return nil, err
		}
		out.local = srv
		if err := srv.EnsureDatabase(ctx, "gpugate"); err != nil {
			out.close(log)
			return nil, err
		}
		dsn = srv.DSN("gpugate")
	}
	store, err := db.Open(ctx, dsn, db.Options{MaxOpenConns: *f.maxConns, StatsTTL: statsTTL})
	if err != nil {
		out.close(log)
		return nil, err
	}
	out.store = store
	return out, nil
}

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

func runServe(args []string) error {
	f := newFlags("serve", "Run the gateway: /graphql, /healthz, /readyz, and GraphiQL at / in dev mode.")
	listen := f.String("listen", "GPUGATE_LISTEN", "127.0.0.1:8080", "address to serve HTTP on")
	dbf := addDBFlags(f)
	dev := f.Bool("dev", "GPUGATE_DEV", false, "dev mode: GraphiQL, introspection, field suggestions (default: on without DATABASE_URL)")
	introspection := f.Bool("introspection", "GPUGATE_INTROSPECTION", false, "serve schema introspection (default: on in dev mode)")
	migrate := f.Bool("migrate", "GPUGATE_MIGRATE", true, "apply pending migrations at start")
	seedN := f.Int("seed", "GPUGATE_SEED", 3000, "demo devices to load into an empty database (only without DATABASE_URL unless set explicitly; 0 disables)")
	def := gateway.Defaults()
	timeout := f.Duration("request-timeout", "GPUGATE_REQUEST_TIMEOUT", def.RequestTimeout, "deadline of every request, including its SQL")
	maxBody := f.Int("max-body-bytes", "GPUGATE_MAX_BODY_BYTES", int(def.MaxBodyBytes), "request body limit")
	maxTokens := f.Int("max-tokens", "GPUGATE_MAX_TOKENS", def.MaxTokens, "GraphQL parser token limit")
	maxDepth := f.Int("max-depth", "GPUGATE_MAX_DEPTH", def.MaxDepth, "maximum selection depth")
	maxAliases := f.Int("max-aliases", "GPUGATE_MAX_ALIASES", def.MaxAliases, "maximum aliases per operation")
	maxRoot := f.Int("max-root-fields", "GPUGATE_MAX_ROOT_FIELDS", def.MaxRootFields, "maximum root fields per operation")
	maxDirectives := f.Int("max-directives", "GPUGATE_MAX_DIRECTIVES", def.MaxDirectives, "maximum directives per document")
	maxCost := f.Int("max-cost", "GPUGATE_MAX_COST", def.MaxCost, "maximum cost of an operation (each field 1, lists multiply by their page size), checked before execution")
	maxSelection := f.Int("max-selection-fields", "GPUGATE_MAX_SELECTION_FIELDS", def.MaxSelectionFields, "maximum fields in one selection set, fragments expanded")
	maxConcurrent := f.Int("max-concurrent", "GPUGATE_MAX_CONCURRENT", def.MaxConcurrent, "operations executing at once; more wait in the queue")
	maxQueued := f.Int("max-queued", "GPUGATE_MAX_QUEUED", def.MaxQueued, "operations waiting for an execution slot (negative: none); beyond it OVERLOADED (HTTP 503)")
	heavyCost := f.Int("heavy-cost", "GPUGATE_HEAVY_COST", def.HeavyCost, "operations costing this much or more are limited to --max-heavy at once")
	maxHeavy := f.Int("max-heavy", "GPUGATE_MAX_HEAVY", def.MaxHeavy, "expensive operations (see --heavy-cost) executing at once; as many more may wait")
	queueWait := f.Duration("queue-wait", "GPUGATE_QUEUE_WAIT", def.QueueWait, "how long a queued operation waits for a slot before OVERLOADED")
	maxResponse := f.Int("max-response-bytes", "GPUGATE_MAX_RESPONSE_BYTES", int(def.MaxResponseBytes), "largest response; a larger one gets RESPONSE_TOO_LARGE")
	maxHeader := f.Int("max-header-bytes", "GPUGATE_MAX_HEADER_BYTES", 64<<10, "largest request header block")
	publicCacheBytes := f.Int("public-cache-bytes", "GPUGATE_PUBLIC_CACHE_BYTES", int(def.PublicCacheBytes), "memory the public micro-cache may hold")
	publicCache := f.Duration("public-cache-ttl", "GPUGATE_PUBLIC_CACHE_TTL", time.Second,
		"how long an anonymous query's response may be reused for the identical query (0 disables)")
	statsTTL := f.Duration("stats-ttl", "GPUGATE_STATS_TTL", 5*time.Second, "how long networkStats results are reused")
	shutdown := f.Duration("shutdown-timeout", "GPUGATE_SHUTDOWN_TIMEOUT", 15*time.Second, "how long in-flight requests may drain on SIGTERM")
	oidcIssuers := f.String("oidc-issuer", "GPUGATE_OIDC_ISSUER", "",
		"trusted OIDC issuer URL(s), comma-separated, matched exactly (dev mode without it: the built-in dev issuer)")
	oidcAudience := f.String("oidc-audience", "GPUGATE_OIDC_AUDIENCE", "gpugate-api", "the API audience access tokens must carry")
	oidcRoles := f.String("oidc-roles-claim", "GPUGATE_OIDC_ROLES_CLAIM", "groups",
		"token claim holding roles (Okta/Dex: groups; Auth0: your namespaced claim)")
	oidcTokenType := f.String("oidc-token-type", "GPUGATE_OIDC_TOKEN_TYPE", oidc.TokenTypeJWT,
		"how the issuers' access tokens differ from their ID tokens: jwt (untyped: Okta, Auth0), at+jwt (RFC 9068), id-token (no distinct access tokens: Dex)")
	adminRole := f.String("admin-role", "GPUGATE_ADMIN_ROLE", "ADMIN", "role name in tokens that grants the ADMIN role")
	devIssuerAddr := f.String("dev-issuer-listen", "GPUGATE_DEV_ISSUER_LISTEN", "127.0.0.1:0",
		"loopback address of the dev OIDC issuer (dev mode only)")
	difficulty := f.Int("pow-difficulty", "GPUGATE_POW_DIFFICULTY", 16, "leading zero bits a worker's proof of work must reach")
	challengeTTL := f.Duration("challenge-ttl", "GPUGATE_CHALLENGE_TTL", 2*time.Minute, "how long a proof-of-work challenge stays valid")
	allowSimulated := f.Bool("allow-simulated-gpus", "GPUGATE_ALLOW_SIMULATED_GPUS", false,
		"accept the GPU ids only go-nvml's simulated hosts report (default: on in dev mode; off, they are flagged SIMULATED_GPU)")
	heartbeatEvery := f.Duration("heartbeat-interval", "GPUGATE_HEARTBEAT_INTERVAL", 30*time.Second, "how often workers are told to send heartbeats")
	heartbeatTimeout := f.Duration("heartbeat-timeout", "GPUGATE_HEARTBEAT_TIMEOUT", db.HeartbeatWindow,
		"a device silent this long is shown DOWN by a background job (0 disables the job)")
	ev := addEvidenceFlags(f)
	debugListen := f.String("debug-listen", "GPUGATE_DEBUG_LISTEN", "", "serve /debug/pprof on this loopback address (empty: off)")
	logFormat := f.String("log-format", "GPUGATE_LOG_FORMAT", "text", "log format: text or json")
	logLevel := f.String("log-level", "GPUGATE_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	if err := f.parse(args); err != nil {
		return err
	}
	workers := resolvers.WorkerConfig{Difficulty: *difficulty, ChallengeTTL: *challengeTTL, HeartbeatEvery: *heartbeatEvery}
	if err := ev.apply(&workers); err != nil {
		return err
	}
	log, err := newLogger(*logFormat, *logLevel, os.Stderr)
	if err != nil {
		return err
	}
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	defer ln.Close()

	d, err := openDatabase(ctx, dbf, *statsTTL, log)
	if err != nil {
		return err
	}
	defer d.close(log)
	if !f.explicit["dev"] {
		*dev = d.embedded
	}
	if !f.explicit["introspection"] {
		*introspection = *dev
	}
	if !f.explicit["allow-simulated-gpus"] {
		*allowSimulated = *dev
	}
	workers.AllowSimulatedGPUs = *allowSimulated
	if *migrate {
		applied, err := db.Migrate(ctx, d.store.SQL().DB)
		if err != nil {
			return err
		}
		log.Info("migrations applied", "versions", applied)
	}
	if *seedN > 0 && (d.embedded || f.explicit["seed"]) {
		start := time.Now()
		seeded, err := d.store.Seed(ctx, *seedN)
		if err != nil {
			return err
		}
		if seeded {
			log.Info("demo data loaded", "devices", *seedN, "took", time.Since(start).Round(time.Millisecond))
		}
	}

	gcfg := gateway.Config{
		Dev: *dev, Introspection: *introspection, MaxBodyBytes: int64(*maxBody), MaxTokens: *maxTokens,
		MaxDepth: *maxDepth, MaxAliases: *maxAliases, MaxRootFields: *maxRoot, MaxDirectives: *maxDirectives,
		RequestTimeout: *timeout, RoleNames: map[model.Role]string{model.RoleAdmin: *adminRole},
		Workers:        workers,
		PublicCacheTTL: *publicCache, PublicCacheBytes: int64(*publicCacheBytes),
		MaxCost: *maxCost, MaxSelectionFields: *maxSelection, MaxConcurrent: *maxConcurrent, MaxQueued: *maxQueued, QueueWait: *queueWait,
		HeavyCost: *heavyCost, MaxHeavy: *maxHeavy,
		MaxResponseBytes: int64(*maxResponse),
	}
	issuers := splitList(*oidcIssuers)
	if len(issuers) == 0 && *dev {
		dev, err := startDevIssuer(ctx, *devIssuerAddr, *oidcAudience, *oidcRoles, d.store, log)
		if err != nil {
			return err
		}
		defer dev.server.Close(context.Background())
		issuers, gcfg.DevInfo = []string{dev.server.Issuer()}, dev.info
		*oidcTokenType = oidc.TokenTypeATJWT // the dev issuer types its access tokens (RFC 9068)
	}
	if len(issuers) > 0 {
		var ics []oidc.IssuerConfig
		for _, iss := range issuers {
			ics = append(ics, oidc.IssuerConfig{URL: iss, Audience: *oidcAudience, RolesClaim: *oidcRoles, TokenType: *oidcTokenType})
		}
		v, err := oidc.New(ctx, oidc.Config{Issuers: ics, Logger: log})
		if err != nil {
			return fmt.Errorf("OIDC: %w", err)
		}
		gcfg.Verifier = v
		log.Info("OIDC issuers trusted", "issuers", issuers, "audience", *oidcAudience, "token_type", *oidcTokenType)
	} else {
		log.Warn("no --oidc-issuer: every request is anonymous; owner and admin operations are unavailable")
	}
	h := gateway.New(gcfg, d.store, log)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      *timeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    *maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	base := "http://" + ln.Addr().String()
	log.Info("gpugate is serving", "graphql", base+"/graphql", "healthz", base+"/healthz", "readyz", base+"/readyz", "dev", *dev)
	if *dev {
		fmt.Fprintf(os.Stderr, "\n  GraphiQL:  %s/\n  GraphQL:   %s/graphql\n  Health:    %s/healthz  %s/readyz\n", base, base, base, base)
		if gcfg.DevInfo != nil {
			fmt.Fprintf(os.Stderr, "  Sign in:   go run . dev token --server %s alice   (also bob, admin)\n", base)
		}
		fmt.Fprintln(os.Stderr)
	}
	if *debugListen != "" {
		if err := serveDebug(*debugListen, log); err != nil {
			return err
		}
	}
	jobs, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	go markDownJob(jobs, d.store, *heartbeatTimeout, ev.retention(), *ev.purgeEvery, log)
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
	log.Info("shutting down: draining in-flight requests", "timeout", *shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("drain incomplete; closing remaining connections", "err", err)
		_ = srv.Close()
	}
	log.Info("stopped")
	return nil
}

func runMigrate(args []string) error {
	f := newFlags("migrate", "Apply every pending embedded migration and exit.")
	dbf := addDBFlags(f)
	if err := f.parse(args); err != nil {
		return err
	}
	return withDatabase(dbf, "info", func(ctx context.Context, d *database) error {
		applied, err := db.Migrate(ctx, d.store.SQL().DB)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Println("migrations: already current")
			return nil
		}
		fmt.Printf("migrations applied: %v\n", applied)
		return nil
	})
}

// withDatabase runs a one-shot command against the database (the embedded one without
// DATABASE_URL), stopping on SIGINT/SIGTERM and closing everything afterwards.
func withDatabase(dbf dbFlags, level string, fn func(ctx context.Context, d *database) error) error {
	log, err := newLogger("text", level, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := openDatabase(ctx, dbf, 0, log)
	if err != nil {
		return err
	}
	defer d.close(log)
	return fn(ctx, d)
}

func runSeed(args []string) error {
	f := newFlags("seed", "Load deterministic demo data (users, devices, GPUs) into an empty database and exit.")
	dbf := addDBFlags(f)
	n := f.Int("devices", "GPUGATE_SEED", 3000, "number of demo devices")
	if err := f.parse(args); err != nil {
		return err
	}
	return withDatabase(dbf, "info", func(ctx context.Context, d *database) error {
		if _, err := db.Migrate(ctx, d.store.SQL().DB); err != nil {
			return err
		}
		start := time.Now()
		seeded, err := d.store.Seed(ctx, *n)
		if err != nil {
			return err
		}
		if !seeded {
			fmt.Println("seed: the database already has devices; nothing loaded")
			return nil
		}
		fmt.Printf("seed: %d devices loaded in %s\n", *n, time.Since(start).Round(time.Millisecond))
		return nil
	})
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// Dev-mode identity: a real OpenID Provider on loopback, its demo users linked to the seeded
// accounts of the same email. It exists only in dev mode; no request can start it.
const (
	devClientID    = "gpugate-dev"
	devRedirectURI = "http://127.0.0.1/callback"
)

// devInfo is what `gpugate dev token` reads from /dev/oidc.
type devInfo struct {
	Issuer      string `json:"issuer"`
	ClientID    string `json:"clientId"`
	RedirectURI string `json:"redirectUri"`
}

type devIdentity struct {
	server *devissuer.Server
	info   devInfo
}

func startDevIssuer(ctx context.Context, addr, audience, rolesClaim string, store *db.DB, log *slog.Logger) (*devIdentity, error) {
	var users []devissuer.User
	for _, name := range db.DemoUsers {
		u := devissuer.User{Username: name, Subject: "dev|" + name, Email: name + "@example.com",
			Name: strings.ToUpper(name[:1]) + name[1:]}
		if name == "admin" {
			u.Roles = []string{"ADMIN"}
		}
		users = append(users, u)
	}
	srv, err := devissuer.Start(ctx, devissuer.Options{
		Addr: addr, Users: users, Audience: audience, ClientID: devClientID,
		RedirectURIs: []string{devRedirectURI}, RolesClaim: rolesClaim, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("dev OIDC issuer: %w", err)
	}
	for _, u := range users {
		id := db.Identity{Issuer: srv.Issuer(), Subject: u.Subject}
		if err := store.LinkIdentity(ctx, id, u.Email, "dev"); err != nil && !errors.Is(err, db.ErrNotFound) {
			_ = srv.Close(context.Background())
			return nil, err
		}
	}
	log.Info("dev OIDC issuer started", "issuer", srv.Issuer(), "users", db.DemoUsers)
	return &devIdentity{server: srv, info: devInfo{Issuer: srv.Issuer(), ClientID: devClientID, RedirectURI: devRedirectURI}}, nil
}

func runDev(args []string) error {
	if len(args) == 0 || args[0] != "token" {
		return errors.New("usage: gpugate dev token [--server URL] USER")
	}
	f := newFlags("dev token", "Sign in as a demo user (alice, bob, admin) of a dev-mode gateway and print the access token.")
	server := f.FlagSet.String("server", "http://127.0.0.1:8080", "the dev-mode gateway")
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: gpugate dev token [--server URL] USER\n\n"+
			"Sign in as a demo user (alice, bob, admin) of a dev-mode gateway and print the access token.\n\nFlags:\n")
		f.PrintDefaults()
	}
	// The user may come before or after the flags.
	rest := args[1:]
	var user string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		user, rest = rest[0], rest[1:]
	}
	if err := f.Parse(rest); err != nil {
		return err
	}
	if user == "" && f.NArg() == 1 {
		user = f.Arg(0)
	} else if f.NArg() > 0 || user == "" {
		f.Usage()
		return errors.New("name exactly one demo user")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*server, "/")+"/dev/oidc", nil)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s has no dev issuer (HTTP %d): is it running in dev mode, without --oidc-issuer?", *server, resp.StatusCode)
	}
	var info devInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&info); err != nil {
		return fmt.Errorf("read /dev/oidc: %w", err)
	}
	token, err := devissuer.FetchToken(ctx, info.Issuer, info.ClientID, info.RedirectURI, user)
	if err != nil {
		return fmt.Errorf("sign in as %s: %w", user, err)
	}
	fmt.Println(token)
	return nil
}

// markDownJob shows DOWN the devices whose workers went silent (timeout 0: never) and, every
// purgeEvery (0: never), purges what the retention rules let go. Status changes by time belong
// to a job, not to whichever request happens to look.
func markDownJob(ctx context.Context, store *db.DB, timeout time.Duration, keep db.Retention, purgeEvery time.Duration, log *slog.Logger) {
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
			if n, err := store.MarkSilentDevicesDown(qctx, timeout); err != nil {
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
			if err != nil {
				log.Warn("purging expired evidence", "err", err)
			}
			if n != (db.Purged{}) {
				log.Info("purged", "challenges", n.Challenges, "enrollment_tokens", n.EnrollmentTokens,
					"attestations", n.Attestations, "addresses", n.Addresses, "review_findings", n.Findings)
			}
		}
	}
}

// evidenceFlags are the limits and retention of what workers send (docs/security.md, "Evidence").
type evidenceFlags struct {
	heartbeatRate, challengeRate, proofRate                 *string
	churnLimit                                              *int
	churnWindow, purgeEvery                                 *time.Duration
	keepChallenges, keepTokens, keepAttestations, keepAddrs *time.Duration
}

func addEvidenceFlags(f *envFlags) evidenceFlags {
	r := db.DefaultRetention()
	churn := db.DefaultAddressChurn()
	return evidenceFlags{
		heartbeatRate: f.String("heartbeat-rate", "GPUGATE_HEARTBEAT_RATE", "",
			"per device key: heartbeats as BURST/EVERY, e.g. 20/5s, or off (default: 20 per heartbeat-interval/6)"),
		challengeRate: f.String("challenge-rate", "GPUGATE_CHALLENGE_RATE", "10/20s", "per device key: requestChallenge as BURST/EVERY, or off"),
		proofRate:     f.String("proof-rate", "GPUGATE_PROOF_RATE", "10/20s", "per device key: submitProof as BURST/EVERY, or off"),
		churnLimit: f.Int("address-churn-limit", "GPUGATE_ADDRESS_CHURN_LIMIT", churn.Limit,
			"a device whose signed requests come from more distinct networks than this within --address-churn-window is reported ADDRESS_CHURN for review (never blocked)"),
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
		{"--proof-rate", *e.proofRate, &w.ProofRate}} {
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

func runUsers(args []string) error {
	if len(args) == 0 || args[0] != "import" {
		return errors.New("usage: gpugate users import --issuer URL (--legacy-csv F | --legacy-table T) (--identities-csv F | --mapping-csv F)")
	}
	f := newFlags("users import", "Link legacy accounts to OIDC identities, by verified email (--identities-csv, the IdP's user export)\n"+
		"or by an explicit mapping (--mapping-csv). Idempotent and resumable: run it again after an interruption.\n"+
		"Never merges two accounts: conflicts are reported, not resolved. See docs/user-import.md.")
	dbf := addDBFlags(f)
	issuer := f.String("issuer", "GPUGATE_IMPORT_ISSUER", "", "issuer URL of the identities, exactly as in their tokens")
	legacyCSV := f.String("legacy-csv", "GPUGATE_IMPORT_LEGACY_CSV", "", "CSV of legacy accounts: legacy_id,email[,display_name]")
	legacyTable := f.String("legacy-table", "GPUGATE_IMPORT_LEGACY_TABLE", "", "table of legacy accounts in the same database: [schema.]table")
	identities := f.String("identities-csv", "GPUGATE_IMPORT_IDENTITIES_CSV", "", "the IdP's user export: subject,email,email_verified")
	mapping := f.String("mapping-csv", "GPUGATE_IMPORT_MAPPING_CSV", "", "explicit links: legacy_id,subject")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	o := userimport.Options{Issuer: *issuer, LegacyTable: *legacyTable, Progress: userimport.NewProgressBar(os.Stderr)}
	for _, in := range []struct {
		path string
		dst  *io.Reader
	}{{*legacyCSV, &o.LegacyCSV}, {*identities, &o.IdentitiesCSV}, {*mapping, &o.MappingCSV}} {
		if in.path == "" {
			continue
		}
		file, err := os.Open(in.path)
		if err != nil {
			return err
		}
		defer file.Close()
		*in.dst = file
	}
	return withDatabase(dbf, "warn", func(ctx context.Context, d *database) error {
		if _, err := db.Migrate(ctx, d.store.SQL().DB); err != nil {
			return err
		}
		sum, err := userimport.Run(ctx, d.store.SQL(), o)
		fmt.Print(sum)
		if err != nil {
			return err
		}
		return nil
	})
}

// serveDebug exposes the Go profiler on a loopback address, for operators measuring the gateway.
func serveDebug(addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--debug-listen must be a loopback address such as 127.0.0.1:6060, got %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Timeouts as on the main listener, except writes: a CPU profile or trace streams for as long
	// as its ?seconds= asks (pprof refuses durations past the write timeout).
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { _ = srv.Serve(ln) }()
	log.Info("profiler listening", "addr", ln.Addr().String())
	return nil
}
