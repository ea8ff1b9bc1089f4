// Package deviceauth authenticates worker requests: each carries a signature by one of its
// device's keys over the method, the request URI (path and query string), timestamp, a nonce
// and the body hash (attest.SignRequest).
// A valid, fresh, never-seen signature by an unrevoked key puts a Principal in the context; any
// other signature is refused. Nothing else in a request can name a device.
package deviceauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/internal/ttlcache"
)

// ErrUnauthenticated wraps every refusal; messages are safe for clients.
var ErrUnauthenticated = errors.New("device unauthenticated")

// The audit reason codes of refusals (docs/operations.md, "Audit log").
const (
	ReasonBadSignature   = "BAD_SIGNATURE"
	ReasonStaleSignature = "STALE_SIGNATURE"
	ReasonReplayed       = "REPLAYED_REQUEST"
)

type refusal struct{ msg, code string }

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return ErrUnauthenticated }

// AuditReason is the refusal's audit code (guard.Classify reads it).
func (e *refusal) AuditReason() string { return e.code }

func refuse(msg string) error { return &refusal{msg, ReasonBadSignature} }

// MaxBody is the largest request body a signature is checked over.
const MaxBody = 1 << 20

// Key is an unrevoked public key of a device.
type Key struct {
	CredentialID string
	PublicKey    ed25519.PublicKey
}

// Keys looks up a device's unrevoked keys (none for an unknown device).
type Keys func(ctx context.Context, deviceID string) ([]Key, error)

// Principal is a device authenticated by its key.
type Principal struct {
	DeviceID     string
	CredentialID string
	PublicKey    ed25519.PublicKey // the key that signed the request
	RemoteAddr   string            // the network address the request came from (owner-only)
}

// Enrollment is the signature of an enrollment request, which names no device: it is checked
// against the key being enrolled by VerifyEnrollment.
type Enrollment struct {
	signed       attest.Signed
	method, path string // path is the request URI: escaped path and raw query
	body         []byte
	auth         *Authenticator
	remote       string
}

// RemoteAddr is the network address the enrollment came from.
func (e *Enrollment) RemoteAddr() string { return e.remote }

type principalKey struct{}
type enrollmentKey struct{}

// PrincipalFrom returns the device that signed the request, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// NewContext returns ctx carrying p (tests and in-process callers).
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// EnrollmentFrom returns the enrollment signature of the request, if it has one.
func EnrollmentFrom(ctx context.Context) (*Enrollment, bool) {
	e, ok := ctx.Value(enrollmentKey{}).(*Enrollment)
	return e, ok
}

// VerifyEnrollment checks the enrollment request was signed by pub, fresh: proof that the worker
// holds the key it enrolls.
func (e *Enrollment) VerifyEnrollment(pub ed25519.PublicKey) error {
	// No replay record here, so anonymous callers cannot grow the replay set. The enrollment
	// token is single use: a replayed enrollment with another key is refused by the token, and
	// one with the same key within the token's life gets the first call's answer again (the
	// idempotent retry of db.Enroll: the same device and credential, nothing new stored).
	if err := attest.VerifyRequest(pub, e.signed, e.method, e.path, e.body, e.auth.now(), e.auth.window); err != nil {
		return refuse("enrollment signature invalid: sign the request with the key being enrolled")
	}
	return nil
}

// Use is what a Replays store found for a verified signature.
type Use int

// The outcomes of Replays.
const (
	UseFirst    Use = iota // first use, and the key is still valid: the request may go
	UseReplayed            // used before: a replay
	UseRevoked             // the key was revoked (or its device removed) since it was cached
)

// Replays records the first use of a verified signature (key: attest.Signed.ReplayKey, signedAt:
// its timestamp) by the credential credentialID of device deviceID, in a store every replica
// shares, and says whether it was the first use and the credential is still unrevoked there. An
// error is an outage (the request is refused as internal, never let through).
type Replays func(ctx context.Context, credentialID, deviceID string, key [32]byte, signedAt time.Time) (Use, error)

// Authenticator verifies request signatures. It caches device keys briefly (Revoke drops a
// device's entry at once, Listen does so on every replica) and records every signature it
// accepts, so a captured request cannot be replayed: in the shared Replays store when it has
// one, which also refuses a key revoked since it was cached, else in memory for twice the
// freshness window (one process only).
type Authenticator struct {
	keys    Keys
	replays Replays
	window  time.Duration
	now     func() time.Time
	ttl     time.Duration
	cache   atomic.Pointer[ttlcache.LRU[string, []Key]] // swapped whole by Flush
	// fillMu orders cache fills against Revoke: a lookup that read the keys before a Revoke
	// must not put them back after it, or a revoked key would verify until the entry expires.
	// gen counts Revoke calls; a lookup caches its keys only if none happened since it began.
	fillMu sync.Mutex
	gen    uint64

	mu   sync.Mutex
	seen map[[32]byte]time.Time
	last time.Time

	touch func(credentialID string)
}

// Options tune an Authenticator.
type Options struct {
	Window   time.Duration    // allowed clock difference; default 60 s
	CacheTTL time.Duration    // key cache lifetime; default 5 s
	Now      func() time.Time // tests
	// Touch, if set, is called (at most once a minute per credential) when a key is used.
	Touch func(credentialID string)
	// Replays, if set, is the replay window shared by every replica (db.RecordReplay); nil
	// keeps it in this process's memory, which only a single replica may rely on.
	Replays Replays
}

// New returns an Authenticator over keys.
func New(keys Keys, o Options) *Authenticator {
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Authenticator{keys: keys, replays: o.Replays, window: o.Window, now: o.Now, ttl: o.CacheTTL,
		seen: map[[32]byte]time.Time{}}
	a.cache.Store(ttlcache.New[string, []Key](100_000, o.CacheTTL))
	if o.Touch != nil {
		touched := ttlcache.New[string, struct{}](100_000, time.Minute)
		a.touch = func(id string) {
			if !touched.Contains(id) {
				touched.Add(id, struct{}{})
				o.Touch(id)
			}
		}
	}
	return a
}

// Revoke forgets the cached keys of a device (call it after revoking one of them).
func (a *Authenticator) Revoke(deviceID string) {
	a.fillMu.Lock()
	defer a.fillMu.Unlock()
	a.gen++
	a.cache.Load().Remove(deviceID)
}

// Flush forgets every cached key (after a notification of key changes may have been missed).
func (a *Authenticator) Flush() {
	a.fillMu.Lock()
	defer a.fillMu.Unlock()
	a.gen++
	a.cache.Store(ttlcache.New[string, []Key](100_000, a.ttl))
}

// Middleware authenticates requests carrying attest.SignatureHeader; requests without it pass
// through unchanged. A signature that does not verify is answered by reject, never passed on.
// The body must already be bounded by an outer handler.
func (a *Authenticator) Middleware(reject func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			values := r.Header.Values(attest.SignatureHeader)
			if len(values) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			if len(values) > 1 {
				reject(w, r, refuse("one device signature per request"))
				return
			}
			signed, err := attest.ParseSignature(values[0])
			if err != nil {
				reject(w, r, refuse("malformed device signature"))
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
			if err != nil || len(body) > MaxBody {
				reject(w, r, refuse("could not read the request body"))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			ctx := r.Context()
			// The signature covers the query string too: GET carries the whole operation
			// there. r.URL.RequestURI() gives back the escaped path and the raw query exactly
			// as the request line carried them, which is what the signer signed
			// (url.URL.RequestURI() of the URL it sent).
			uri := r.URL.RequestURI()
			if signed.DeviceID == "" {
				e := &Enrollment{signed: signed, method: r.Method, path: uri, body: body, auth: a, remote: r.RemoteAddr}
				next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, enrollmentKey{}, e)))
				return
			}
			p, err := a.verify(ctx, signed, r.Method, uri, body)
			if err != nil {
				reject(w, r, err)
				return
			}
			p.RemoteAddr = r.RemoteAddr
			next.ServeHTTP(w, r.WithContext(NewContext(ctx, p)))
		})
	}
}

func (a *Authenticator) verify(ctx context.Context, s attest.Signed, method, uri string, body []byte) (Principal, error) {
	if u, err := uuid.Parse(s.DeviceID); err != nil || u.String() != s.DeviceID {
		return Principal{}, refuse("device signature invalid: device must be the device ID as issued")
	}
	keys, cached := a.cache.Load().Get(s.DeviceID)
	if !cached {
		var err error
		if keys, err = a.load(ctx, s.DeviceID); err != nil {
			return Principal{}, err // an outage, not a refusal: presented as internal
		}
	}
	k, err := a.match(keys, s, method, uri, body)
	if errors.Is(err, errNoKey) && cached {
		// The key may be newer than the cached list: added on another replica a moment ago,
		// before its notification arrived here. One fresh lookup makes it work at once; a
		// bad signature costs no more than one for an uncached device.
		if keys, err = a.load(ctx, s.DeviceID); err != nil {
			return Principal{}, err
		}
		k, err = a.match(keys, s, method, uri, body)
	}
	if err != nil {
		return Principal{}, refuseKey(err)
	}
	use, err := a.firstUse(ctx, k, s)
	if err != nil {
		return Principal{}, err // an outage, not a refusal: presented as internal
	}
	switch use {
	case UseReplayed:
		return Principal{}, &refusal{"replayed request", ReasonReplayed}
	case UseRevoked: // revoked on another replica since this one cached it
		a.Revoke(s.DeviceID)
		return Principal{}, refuse(badKey)
	}
	if a.touch != nil {
		a.touch(k.CredentialID)
	}
	return Principal{DeviceID: s.DeviceID, CredentialID: k.CredentialID, PublicKey: k.PublicKey}, nil
}

// load reads the device's keys and caches them unless a Revoke or Flush happened meanwhile; it
// returns the Keys function's error.
func (a *Authenticator) load(ctx context.Context, deviceID string) ([]Key, error) {
	a.fillMu.Lock()
	gen := a.gen
	a.fillMu.Unlock()
	keys, err := a.keys(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	a.fillMu.Lock()
	if a.gen == gen {
		a.cache.Load().Add(deviceID, keys)
	}
	a.fillMu.Unlock()
	return keys, nil
}

var errNoKey = errors.New("no key verifies")

// match returns the key among keys that verifies s, attest.ErrStale for a timestamp outside
// the window, or errNoKey.
func (a *Authenticator) match(keys []Key, s attest.Signed, method, uri string, body []byte) (Key, error) {
	now := a.now()
	for _, k := range keys {
		err := attest.VerifyRequest(k.PublicKey, s, method, uri, body, now, a.window)
		if errors.Is(err, attest.ErrStale) {
			return Key{}, err
		}
		if err == nil {
			return k, nil
		}
	}
	return Key{}, errNoKey
}

// refuseKey turns match's error into the refusal the client sees.
func refuseKey(err error) error {
	if errors.Is(err, attest.ErrStale) {
		return &refusal{"device signature expired: check the worker's clock", ReasonStaleSignature}
	}
	return refuse(badKey)
}

const badKey = "device signature invalid (unknown device, revoked key or wrong key)"

// firstUse records s, verified by k, in the shared store when there is one (its error is
// returned), else in memory.
func (a *Authenticator) firstUse(ctx context.Context, k Key, s attest.Signed) (Use, error) {
	key := s.ReplayKey()
	if a.replays != nil {
		return a.replays(ctx, k.CredentialID, s.DeviceID, key, s.Timestamp)
	}
	if a.firstUseInMemory(key) {
		return UseFirst, nil
	}
	return UseReplayed, nil
}

// firstUseInMemory records key and reports whether it had not been seen within the replay
// horizon of this process.
func (a *Authenticator) firstUseInMemory(key [32]byte) bool {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.last) > a.window {
		for k, t := range a.seen {
			if now.Sub(t) > 2*a.window {
				delete(a.seen, k)
			}
		}
		a.last = now
	}
	if _, dup := a.seen[key]; dup {
		return false
	}
	a.seen[key] = now
	return true
}
