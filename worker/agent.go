// Package worker is gpugate's bundled agent (`gpugate worker`). It reads the host's GPUs
// through NVML (an injected nvml.Interface: the real library, or go-nvml's simulated DGX
// servers with --simulate), enrolls the host with a one-time token under a locally generated
// Ed25519 key, then proves its GPUs against the gateway's challenges (attest: snapshot hash,
// proof of work, signature, plus NVIDIA confidential-computing evidence where the host has
// it) and sends heartbeats. Every request is signed by the device key; the GraphQL client is
// generated from the gateway's schema (client/).
package worker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Khan/genqlient/graphql"
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/worker/client"
)

// Options configure Run. Server and KeyFile are required.
type Options struct {
	// Server is the gateway's base URL; /graphql is appended unless the URL has a path. It must
	// be https:// unless its host is loopback (127.0.0.0/8, ::1, localhost) or Insecure is set.
	Server string
	// Insecure allows an http:// Server on a non-loopback host (a lab network). The enrollment
	// token then crosses the network in clear text: whoever sees it can enroll their own key.
	Insecure    bool
	KeyFile     string // the device key and enrollment state (created, mode 0600, when missing)
	EnrollToken string // one-time enrollment token; needed only while the key file has no deviceId
	Simulate    string // a Profiles name: use go-nvml's simulated servers instead of the driver
	// CloneUUIDsFrom is another simulated host's key file: this host reports that host's GPU
	// UUIDs (the counterfeit "UUID cloned onto another owner's device"). Simulation only.
	CloneUUIDsFrom string
	Region         string // shown publicly; default "unknown"
	// Name is the public device name sent at enrollment. Empty sends none, and the gateway
	// picks a random, non-identifying one; a simulated host is named sim-<profile>-<random
	// letters>. A public name never derives from the hostname, key or device id.
	Name     string
	Hostname string // owner-only, never public; default os.Hostname()
	Once     bool   // one enroll/prove/heartbeat cycle; Run returns *FlaggedError unless the proof passed
	Logger   *slog.Logger
	// NVML is the library to read GPUs through. nil means nvml.New() (the driver's
	// libnvidia-ml.so.1), or the Simulate profile when set.
	NVML nvml.Interface
	// Provers gather challenge-bound evidence sent with the proof; nil means CCAttestation
	// over NVML. An empty non-nil slice disables them.
	Provers        []Prover
	Transport      http.RoundTripper // nil means http.DefaultTransport
	RequestTimeout time.Duration     // per request; default 30 s
	ReproveEvery   time.Duration     // without Once; default 6 h
	Backoff        Backoff           // when the gateway is unreachable; default 1 s doubling to 2 min
	// GiveUpAfter bounds how long one step keeps retrying an unreachable gateway; 0 retries
	// until ctx ends.
	GiveUpAfter time.Duration
	// MaxDifficulty is the largest proof-of-work difficulty (leading zero bits, expected work
	// 2^bits hashes) the worker accepts from the gateway; a harder challenge is refused with
	// ErrChallengeRefused. 0 means MaxDifficultyLimit, which is also the most it can be.
	MaxDifficulty int
	// MaxChallengeTTL is the longest the worker works on one challenge: the search stops at
	// the challenge's expiry or this long after it arrived, whichever is first (a challenge
	// that expires later is worked on this long, then refused with ErrChallengeRefused). 0
	// means MaxChallengeTTLLimit, which is also the most it can be.
	MaxChallengeTTL time.Duration
}

// Bounds on the work a gateway can ask for. They can be lowered (Options, flags), never raised:
// they are what keeps a hostile or broken gateway from making the worker burn CPU without end.
const (
	// MaxDifficultyLimit: 2^32 hashes is a quarter of an hour or more of one core (attest's
	// BenchmarkSolve: about 3.5 to 4 M hashes/s per core); the gateway asks for 16 by default.
	MaxDifficultyLimit = 32
	// MaxChallengeTTLLimit: five times the gateway's default challenge lifetime (2 minutes).
	MaxChallengeTTLLimit = 10 * time.Minute
)

// DefaultRegion is the region a device enrolls with when none is given.
const DefaultRegion = "unknown"

// submitMargin is the time before a challenge's expiry by which its proof must be ready to
// send; a proof that could arrive after the expiry is not sent (it would be flagged).
const submitMargin = time.Second

type agent struct {
	o         Options
	log       *slog.Logger
	endpoint  string
	key       *KeyFile
	lib       nvml.Interface
	provers   []Prover
	submitted map[string]bool // challenges a proof was submitted for, this run
}

// Run enrolls the host if its key file has no device yet, then proves and heartbeats: once
// with o.Once, else every heartbeat interval the gateway asks for (re-proving every
// ReproveEvery) until ctx ends. It returns nil when the proof passed (Once) or when ctx ended;
// a *FlaggedError when the Once proof was flagged; an error wrapping ErrNoDriver without the
// NVIDIA driver, ErrKeyFileExposed for a key file others can read, a *GatewayError when the
// gateway refused a request (enrollment token used, key revoked...), or the last network
// error after GiveUpAfter.
func Run(ctx context.Context, o Options) error {
	a, err := newAgent(o)
	if err != nil {
		return err
	}
	err = a.run(ctx)
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || retryable(context.Background(), err)) {
		a.log.Info("stopped")
		return nil
	}
	return err
}

func newAgent(o Options) (*agent, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.ReproveEvery <= 0 {
		o.ReproveEvery = 6 * time.Hour
	}
	o.Backoff = o.Backoff.withDefaults()
	if o.MaxDifficulty == 0 {
		o.MaxDifficulty = MaxDifficultyLimit
	}
	if o.MaxDifficulty < 0 || o.MaxDifficulty > MaxDifficultyLimit {
		return nil, fmt.Errorf("--max-difficulty %d: want 1..%d (it can be lowered, not raised)", o.MaxDifficulty, MaxDifficultyLimit)
	}
	if o.MaxChallengeTTL == 0 {
		o.MaxChallengeTTL = MaxChallengeTTLLimit
	}
	if o.MaxChallengeTTL < 0 || o.MaxChallengeTTL > MaxChallengeTTLLimit {
		return nil, fmt.Errorf("--max-challenge-ttl %v: want more than 0 and at most %v (it can be lowered, not raised)", o.MaxChallengeTTL, MaxChallengeTTLLimit)
	}
	if o.KeyFile == "" {
		return nil, errors.New("no key file given (--key-file)")
	}
	endpoint, cleartext, err := graphqlEndpoint(o.Server, o.Insecure)
	if err != nil {
		return nil, err
	}
	if cleartext {
		o.Logger.Warn("--insecure: talking to the gateway without TLS; the enrollment token and every request "+
			"cross the network in clear text, and whoever sees the token can enroll their own key with it", "server", endpoint)
	}
	if o.CloneUUIDsFrom != "" && o.Simulate == "" {
		return nil, errors.New("--clone-uuids-from only works with --simulate")
	}
	if o.Simulate != "" {
		if _, ok := LookupProfile(o.Simulate); !ok {
			_, err := Simulate(o.Simulate, nil, nil)
			return nil, err
		}
	}
	return &agent{o: o, log: o.Logger, endpoint: endpoint, submitted: map[string]bool{}}, nil
}

// graphqlEndpoint turns --server into the GraphQL endpoint URL. cleartext reports an http://
// URL on a non-loopback host, which only insecure allows: without it that is an error wrapping
// ErrInsecureServer. Any other error is a URL that is not http(s), or has a query or fragment.
func graphqlEndpoint(server string, insecure bool) (endpoint string, cleartext bool, err error) {
	if server == "" {
		return "", false, errors.New("no gateway given (--server https://HOST)")
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false, fmt.Errorf("--server %q is not an http(s) URL like https://gateway.example", server)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("--server %q: no query or fragment, please", server)
	}
	if u.User != nil {
		return "", false, fmt.Errorf("--server %q: no user or password in the URL, please", u.Redacted())
	}
	// Without TLS a man in the middle reads the enrollment token (it travels in the body) and
	// can enroll its own key with it, and sees every request. Loopback never leaves the host.
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		if !insecure {
			return "", false, fmt.Errorf("%w: --server %s: use https://, or --insecure on a lab network you trust "+
				"(the enrollment token would cross it in clear text)", ErrInsecureServer, server)
		}
		cleartext = true
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/graphql"
	}
	return u.String(), cleartext, nil
}

// loopback reports whether host (a URL's Hostname) is localhost or a loopback address
// (127.0.0.0/8, ::1). Other names are not trusted to resolve to loopback.
func loopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *agent) run(ctx context.Context) error {
	// On a real host, find out first whether there is a driver at all: no key file is
	// created on a machine that cannot be a worker.
	var snap attest.Snapshot
	var err error
	if a.o.NVML != nil || a.o.Simulate == "" {
		a.lib = a.o.NVML
		if a.lib == nil {
			a.lib = nvml.New()
		}
		if snap, err = a.collect(ctx); err != nil {
			return err
		}
	}
	key, created, err := LoadOrCreateKeyFile(a.o.KeyFile)
	if err != nil {
		return err
	}
	a.key = key
	fp := sha256.Sum256(key.PublicKey())
	if created {
		a.log.Info("created a new device key", "key_file", key.Path(), "fingerprint", hex.EncodeToString(fp[:]))
	} else {
		a.log.Info("loaded the device key", "key_file", key.Path(), "fingerprint", hex.EncodeToString(fp[:]), "device_id", key.DeviceID)
	}
	if a.lib == nil {
		var clone []byte
		if a.o.CloneUUIDsFrom != "" {
			pub, err := PublicKeyOf(a.o.CloneUUIDsFrom)
			if err != nil {
				return fmt.Errorf("--clone-uuids-from: %w", err)
			}
			clone = pub
			a.log.Warn("simulating a counterfeit: this host reports another host's GPU UUIDs", "from", a.o.CloneUUIDsFrom)
		}
		if a.lib, err = Simulate(a.o.Simulate, key.PublicKey(), clone); err != nil {
			return err
		}
		p, _ := LookupProfile(a.o.Simulate)
		a.log.Info("simulating GPUs (go-nvml mock)", "profile", p.Name, "host", p.Description)
		if a.o.Name == "" {
			a.o.Name = simName(p.Name)
		}
		if snap, err = a.collect(ctx); err != nil {
			return err
		}
	}
	a.provers = a.o.Provers
	if a.provers == nil {
		a.provers = []Prover{CCAttestation{NVML: a.lib}}
	}

	if err := a.enroll(ctx, snap); err != nil {
		return err
	}

	var flagged *FlaggedError
	nextProof := time.Now()
	for {
		if !time.Now().Before(nextProof) {
			res, err := retry(ctx, a, "proof", a.prove)
			if err != nil {
				return err
			}
			nextProof = time.Now().Add(a.o.ReproveEvery)
			if res.Verdict == client.AttestationVerdictPassed {
				a.log.Info("proof passed", "level", res.Level, "verification", res.Verification)
				flagged = nil
			} else {
				flagged = &FlaggedError{Reasons: res.Reasons, Verification: string(res.Verification), Level: string(res.Level)}
				a.log.Warn("proof flagged", "level", res.Level, "verification", res.Verification, "reasons", strings.Join(res.Reasons, ","))
				for _, r := range res.Reasons {
					a.log.Warn("reason", "code", r, "meaning", attest.Reason(r).Description())
				}
			}
			a.logGPUs(res.Gpus)
		}
		ack, err := retry(ctx, a, "heartbeat", a.heartbeat)
		if err != nil {
			return err
		}
		next := time.Duration(ack.NextInSeconds) * time.Second
		next = min(max(next, time.Second), 10*time.Minute)
		if a.o.Once {
			a.log.Info("heartbeat sent", "status", ack.Status)
			if flagged != nil {
				return flagged
			}
			return nil
		}
		a.log.Info("heartbeat sent", "status", ack.Status, "next_in", next)
		if ack.Status == client.DeviceStatusPaused || ack.Status == client.DeviceStatusQuarantined {
			a.log.Warn("the device is not offered to the network", "status", ack.Status)
		}
		if !sleep(ctx, min(next, time.Until(nextProof)+time.Millisecond)) {
			return nil
		}
	}
}

// retry runs step until it succeeds, fails for good, ctx ends or GiveUpAfter passes, pausing
// per a.o.Backoff after each retryable failure, and at least as long as the gateway's last
// Retry-After asked (Backoff.DelayAfter).
func retry[T any](ctx context.Context, a *agent, what string, step func(context.Context) (T, error)) (T, error) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		hctx, hint := withRetryHint(ctx)
		v, err := step(hctx)
		if err == nil || !retryable(ctx, err) {
			return v, err
		}
		d := a.o.Backoff.DelayAfter(attempt, hint.RetryAfter())
		if a.o.GiveUpAfter > 0 && time.Since(start)+d > a.o.GiveUpAfter {
			return v, fmt.Errorf("%s: giving up after %v: %w", what, time.Since(start).Round(time.Millisecond), err)
		}
		a.log.Warn("retrying", "step", what, "in", d.Round(time.Millisecond), "attempt", attempt+1,
			"retry_after", hint.RetryAfter(), "err", err)
		if !sleep(ctx, d) {
			return v, ctx.Err()
		}
	}
}

// simName is the public name of a simulated host: its profile and six random letters. Nothing
// in it derives from the key, the host or the device id (public names are public); the letters
// avoid the hex digits, so no part of the suffix can be read as a fingerprint or an id.
func simName(profile string) string {
	const letters = "ghjkmnpqrstvwxyz"
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	for i := range b {
		b[i] = letters[b[i]&15]
	}
	return "sim-" + profile + "-" + string(b)
}

func (a *agent) collect(context.Context) (attest.Snapshot, error) {
	snap, err := Collect(a.lib)
	if err != nil {
		return snap, err
	}
	names := map[string]int{}
	for _, g := range snap.GPUs {
		names[g.Name]++
	}
	a.log.Info("collected the GPU snapshot", "gpus", len(snap.GPUs), "models", names,
		"driver", snap.DriverVersion, "nvml", snap.NVMLVersion, "cuda_driver", snap.CUDADriverVersion)
	return snap, nil
}

func (a *agent) client(deviceID string) graphql.Client {
	return client.New(a.endpoint, a.key.Key(), deviceID, retryAfterTransport{a.o.Transport}, a.o.RequestTimeout)
}

// enroll registers the host when the key file names no device yet.
func (a *agent) enroll(ctx context.Context, snap attest.Snapshot) error {
	if a.key.DeviceID != "" {
		if a.o.EnrollToken != "" {
			a.log.Warn("already enrolled: ignoring the enrollment token", "device_id", a.key.DeviceID)
		}
		if a.key.Server != "" && a.key.Server != a.endpoint {
			a.log.Warn("the device enrolled with another gateway", "enrolled_with", a.key.Server, "server", a.endpoint)
		}
		return nil
	}
	if a.o.EnrollToken == "" {
		return fmt.Errorf("this host is not enrolled yet (%s has no deviceId): run with --enroll TOKEN, "+
			"a one-time token the device's owner creates with the createEnrollmentToken mutation", a.key.Path())
	}
	js, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encoding the snapshot: %w", err)
	}
	in := client.EnrollDeviceInput{
		Token:     a.o.EnrollToken,
		PublicKey: base64.StdEncoding.EncodeToString(a.key.PublicKey()),
		Region:    a.o.Region,
		Snapshot:  string(js),
	}
	if a.o.Name != "" {
		in.Name = &a.o.Name
	}
	host := a.o.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if host != "" {
		in.Hostname = &host
	}
	c := a.client("")
	a.log.Info("enrolling the device", "server", a.endpoint, "region", in.Region, "gpus", len(snap.GPUs))
	ambiguous := false // an earlier attempt may have reached the gateway
	res, err := retry(ctx, a, "enroll", func(ctx context.Context) (*client.EnrollDeviceResponse, error) {
		res, err := client.EnrollDevice(ctx, c, in)
		if err != nil && retryable(ctx, err) {
			ambiguous = true
		}
		return res, err
	})
	if err != nil {
		err = fatal("enrollDevice", err)
		var ge *GatewayError
		if ambiguous && errors.As(err, &ge) && ge.Code == "BAD_USER_INPUT" {
			ge.Hint += " (an earlier attempt was interrupted and may have enrolled the device: check your devices before enrolling again)"
		}
		return err
	}
	a.key.DeviceID = res.EnrollDevice.DeviceId
	a.key.CredentialID = res.EnrollDevice.CredentialId
	a.key.Server = a.endpoint
	if err := a.key.Save(); err != nil {
		return fmt.Errorf("enrolled as device %s, but could not record it (%w): write deviceId %q into %s by hand",
			a.key.DeviceID, err, a.key.DeviceID, a.key.Path())
	}
	a.log.Info("enrolled", "device_id", a.key.DeviceID, "credential_id", a.key.CredentialID)
	return nil
}

// prove runs one challenge: collect, request a challenge, gather evidence, solve, submit once.
func (a *agent) prove(ctx context.Context) (*client.SubmitProofSubmitProofProofResult, error) {
	snap, err := a.collect(ctx)
	if err != nil {
		return nil, err
	}
	c := a.client(a.key.DeviceID)
	chResp, err := client.RequestChallenge(ctx, c, a.key.DeviceID)
	if err != nil {
		if retryable(ctx, err) {
			return nil, err
		}
		return nil, fatal("requestChallenge", err)
	}
	gc := chResp.RequestChallenge
	nonce, err := base64.StdEncoding.DecodeString(gc.Nonce)
	if err != nil {
		return nil, fmt.Errorf("the gateway sent a challenge nonce that is not base64: %w", err)
	}
	ch := Challenge{ID: gc.Id, Nonce: nonce, Difficulty: gc.Difficulty, ExpiresAt: gc.ExpiresAt}
	received := time.Now()
	a.log.Info("challenge received", "challenge_id", ch.ID, "difficulty", ch.Difficulty, "expires_at", ch.ExpiresAt)
	// The expected work is 2^difficulty hashes: a hostile or broken gateway could ask for
	// years of CPU. Refuse what is above the bound, before any work.
	if ch.Difficulty < 0 || ch.Difficulty > a.o.MaxDifficulty {
		return nil, fmt.Errorf("%w: challenge %s asks for %d bits of proof of work; this worker does at most %d "+
			"(--max-difficulty): check the gateway's --pow-difficulty, and that --server is the gateway you meant",
			ErrChallengeRefused, ch.ID, ch.Difficulty, a.o.MaxDifficulty)
	}

	evidence := a.evidence(ctx, ch)

	// A proof for an expired challenge would be flagged (CHALLENGE_EXPIRED): stop solving at
	// the expiry and take a new challenge instead. This host's clock is within the gateway's
	// signature window (a minute) of the gateway's, or no request would have been accepted.
	// submitMargin leaves the submission time to arrive.
	// The search also stops MaxChallengeTTL after the challenge arrived, however far away the
	// gateway put its expiry, and when ctx ends (attest.Prove watches solveCtx).
	deadline := ch.ExpiresAt.Add(-submitMargin)
	capped := false
	if limit := received.Add(a.o.MaxChallengeTTL); deadline.After(limit) {
		a.log.Warn("the challenge expires later than this worker works on one challenge: the proof of work stops earlier",
			"challenge_id", ch.ID, "expires_at", ch.ExpiresAt, "max_challenge_ttl", a.o.MaxChallengeTTL)
		deadline, capped = limit, true
	}
	if time.Until(deadline) <= 0 {
		return nil, &missedChallenge{ch.ID}
	}
	solveCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	start := time.Now()
	proof, err := attest.Prove(solveCtx, a.key.Key(), ch.ID, ch.Nonce, ch.Difficulty, snap)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			if capped {
				return nil, fmt.Errorf("%w: no proof of work for challenge %s (difficulty %d) after %v, the longest this "+
					"worker works on one challenge (--max-challenge-ttl); the gateway's difficulty is too high for this host",
					ErrChallengeRefused, ch.ID, ch.Difficulty, time.Since(received).Round(time.Millisecond))
			}
			return nil, &missedChallenge{ch.ID}
		}
		return nil, err
	}
	a.log.Info("proof of work done", "counter", proof.Counter, "took", time.Since(start).Round(time.Millisecond))

	// Never submit a second, different proof for one challenge: the gateway flags it as a
	// replay. Record the challenge before sending, so a restarted worker does not redo it; the
	// same proof is resent only by submit, within this run.
	if a.submitted[ch.ID] || a.key.LastChallengeID == ch.ID {
		return nil, fmt.Errorf("internal error: a proof for challenge %s was already submitted", ch.ID)
	}
	a.submitted[ch.ID] = true
	a.key.LastChallengeID = ch.ID
	if err := a.key.Save(); err != nil {
		a.log.Warn("could not record the submitted challenge in the key file", "err", err)
	}
	in, err := ProofInput(proof, evidence)
	if err != nil {
		return nil, err
	}
	return a.submit(ctx, c, ch, in, deadline)
}

// submit sends the proof for ch and, while the gateway cannot be reached or answers with a
// transient error, sends the very same proof again (with backoff and Retry-After) as long as it
// can still arrive a second before the challenge expires, and no later than until (the search's
// deadline: MaxChallengeTTL after the challenge arrived, whatever expiry the gateway claimed) nor
// GiveUpAfter after the first attempt. The gateway judges one proof once: a
// resent proof it already judged (its answer was lost) gets the stored verdict and stores
// nothing, so the worker learns the verdict the gateway recorded, and no second challenge or
// proof of work is spent (docs/resilience.md "Gateway faults seen by workers"). When the
// challenge runs out first, it returns the last transient error and the caller takes a new
// challenge: the old one is either judged (and the verdict visible to the owner) or expires
// unused. A refusal is returned as a *GatewayError.
func (a *agent) submit(ctx context.Context, c graphql.Client, ch Challenge, in client.ProofInput, until time.Time) (*client.SubmitProofSubmitProofProofResult, error) {
	if last := ch.ExpiresAt.Add(-submitMargin); last.Before(until) {
		until = last
	}
	if a.o.GiveUpAfter > 0 {
		if limit := time.Now().Add(a.o.GiveUpAfter); limit.Before(until) {
			until = limit
		}
	}
	for attempt := 0; ; attempt++ {
		hctx, hint := withRetryHint(ctx)
		res, err := client.SubmitProof(hctx, c, a.key.DeviceID, in)
		if err == nil {
			return &res.SubmitProof, nil
		}
		if !retryable(ctx, err) {
			return nil, fatal("submitProof", err)
		}
		d := a.o.Backoff.DelayAfter(attempt, hint.RetryAfter())
		if !time.Now().Add(d).Before(until) {
			return nil, fmt.Errorf("submitting the proof for challenge %s (not resent: the challenge expires, or this worker stops resending, first): %w", ch.ID, err)
		}
		a.log.Warn("resending the same proof", "challenge_id", ch.ID, "in", d.Round(time.Millisecond),
			"attempt", attempt+1, "retry_after", hint.RetryAfter(), "err", err)
		if !sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// evidence runs the provers for ch. Evidence is optional: every failure is logged (per GPU
// where it concerns one GPU, which is then proved without evidence) and none stops the proof.
func (a *agent) evidence(ctx context.Context, ch Challenge) []GPUEvidence {
	var all []GPUEvidence
	for _, p := range a.provers {
		ev, err := p.Evidence(ctx, ch, a.key.PublicKey())
		switch {
		case errors.Is(err, ErrUnsupported):
			a.log.Debug("evidence not available", "prover", p.Name(), "why", err)
		case err != nil:
			for _, e := range flatten(err) {
				var ge *GPUError
				if errors.As(e, &ge) {
					a.log.Warn("no confidential-computing evidence for this GPU; it is proved without (SELF_REPORTED at best)",
						"prover", p.Name(), "gpu", ge.Index, "uuid", ge.UUID, "err", ge.Err)
				} else {
					a.log.Warn("evidence failed; proving without it", "prover", p.Name(), "err", e)
				}
			}
		}
		if len(ev) > 0 {
			a.log.Info("evidence collected", "prover", p.Name(), "gpus", len(ev))
		}
		all = append(all, ev...)
	}
	return all
}

// flatten returns the errors joined in err (errors.Join, nested too), or err alone.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// logGPUs logs how the gateway judged each GPU's confidential-computing evidence.
func (a *agent) logGPUs(gpus []client.SubmitProofSubmitProofProofResultGpusGpuEvidence) {
	for _, g := range gpus {
		switch {
		case !g.EvidenceSubmitted:
		case len(g.Reasons) > 0:
			a.log.Warn("the GPU's confidential-computing evidence did not verify", "gpu", g.Index, "level", g.Level,
				"reasons", strings.Join(g.Reasons, ","))
		default:
			root := ""
			if g.Root != nil {
				root = string(*g.Root)
			}
			a.log.Info("GPU attested", "gpu", g.Index, "level", g.Level, "root", root)
		}
	}
}

// ProofInput encodes a proof and its GPUs' evidence as the gateway's submitProof input. It
// fails only if the snapshot cannot be encoded as JSON.
func ProofInput(p attest.Proof, evidence []GPUEvidence) (client.ProofInput, error) {
	js, err := json.Marshal(p.Snapshot)
	if err != nil {
		return client.ProofInput{}, fmt.Errorf("encoding the snapshot: %w", err)
	}
	in := client.ProofInput{
		ChallengeId: p.ChallengeID,
		Counter:     strconv.FormatUint(p.Counter, 10),
		Snapshot:    string(js),
		Signature:   base64.StdEncoding.EncodeToString(p.Signature),
	}
	for _, e := range evidence {
		in.Evidence = append(in.Evidence, EvidenceInput(e))
	}
	if len(p.SnapshotHash) > 0 {
		h := base64.StdEncoding.EncodeToString(p.SnapshotHash)
		in.SnapshotHash = &h
	}
	return in, nil
}

func (a *agent) heartbeat(ctx context.Context) (*client.HeartbeatHeartbeatHeartbeatAck, error) {
	readings, err := Readings(a.lib)
	if err != nil {
		a.log.Warn("no GPU readings for the heartbeat", "err", err)
		readings = []client.GpuReadingInput{}
	}
	if readings == nil {
		readings = []client.GpuReadingInput{}
	}
	res, err := client.Heartbeat(ctx, a.client(a.key.DeviceID), a.key.DeviceID, client.HeartbeatInput{Gpus: readings})
	if err != nil {
		if retryable(ctx, err) {
			return nil, err
		}
		return nil, fatal("heartbeat", err)
	}
	return &res.Heartbeat, nil
}
