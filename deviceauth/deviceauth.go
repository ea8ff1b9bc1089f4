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
	// No replay record here: the enrollment token is single use, so a replayed enrollment is
	// refused by the token, and anonymous callers cannot grow the replay set.
	if err := attest.VerifyRequest(pub, e.signed, e.method, e.path, e.body, e.auth.now(), e.auth.window); err != nil {
		return refuse("enrollment signature invalid: sign the request with the key being enrolled")
	}
	return nil
}

// Authenticator verifies request signatures. It caches device keys briefly (Revoke drops a
// device's entry at once) and remembers signatures it accepted for twice the freshness window,
// so a captured request cannot be replayed.
type Authenticator struct {
	keys   Keys
	window time.Duration
	now    func() time.Time
	cache  *ttlcache.LRU[string, []Key]
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
	a := &Authenticator{keys: keys, window: o.Window, now: o.Now, seen: map[[32]byte]time.Time{},
		cache: ttlcache.New[string, []Key](100_000, o.CacheTTL)}
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
	a.cache.Remove(deviceID)
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
	keys, ok := a.cache.Get(s.DeviceID)
	if !ok {
		a.fillMu.Lock()
		gen := a.gen
		a.fillMu.Unlock()
		var err error
		if keys, err = a.keys(ctx, s.DeviceID); err != nil {
			return Principal{}, err // an outage, not a refusal: presented as internal
		}
		a.fillMu.Lock()
		if a.gen == gen {
			a.cache.Add(s.DeviceID, keys)
		}
		a.fillMu.Unlock()
	}
	now := a.now()
	for _, k := range keys {
		err := attest.VerifyRequest(k.PublicKey, s, method, uri, body, now, a.window)
		if errors.Is(err, attest.ErrStale) {
			return Principal{}, &refusal{"device signature expired: check the worker's clock", ReasonStaleSignature}
		}
		if err != nil {
			continue
		}
		if !a.firstUse(s) {
			return Principal{}, &refusal{"replayed request", ReasonReplayed}
		}
		if a.touch != nil {
			a.touch(k.CredentialID)
		}
		return Principal{DeviceID: s.DeviceID, CredentialID: k.CredentialID, PublicKey: k.PublicKey}, nil
	}
	return Principal{}, refuse("device signature invalid (unknown device, revoked key or wrong key)")
}

// firstUse records s and reports whether it had not been seen within the replay horizon.
func (a *Authenticator) firstUse(s attest.Signed) bool {
	key := s.ReplayKey()
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
