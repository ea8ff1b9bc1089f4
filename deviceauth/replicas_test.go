package deviceauth_test

// Several replicas on one database (docs/scale-out.md, "Stateless replicas"): each replica is
// its own Authenticator with its own key cache, sharing only PostgreSQL, as gateway processes do.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/gateway"
)

// replica is one more gateway on the env's database: its own Authenticator (a key cache that
// lives an hour, so nothing below passes by expiry) counting its key lookups.
type replica struct {
	auth    *deviceauth.Authenticator
	srv     *httptest.Server
	lookups atomic.Int32
}

func (e *env) replica() *replica {
	e.t.Helper()
	r := &replica{}
	keys := storeKeys(e.store)
	r.auth = deviceauth.New(func(ctx context.Context, id string) ([]deviceauth.Key, error) {
		r.lookups.Add(1)
		return keys(ctx, id)
	}, deviceauth.Options{CacheTTL: time.Hour, Replays: gateway.DeviceReplays(e.store)})
	r.srv = httptest.NewServer(r.auth.Middleware(rejectStatus)(whoSigned))
	e.t.Cleanup(r.srv.Close)
	return r
}

// on sends rq to replica r (instead of the env's own server).
func (e *env) on(r *replica, rq req) (int, string) {
	e.t.Helper()
	srv := e.srv
	e.srv = r.srv
	defer func() { e.srv = srv }()
	return e.do(rq)
}

func (e *env) acceptedOn(r *replica, what string, rq req, cred string) {
	e.t.Helper()
	code, body := e.on(r, rq)
	if code != http.StatusOK || !strings.HasPrefix(body, "device "+e.device+" "+cred+" ") {
		e.t.Fatalf("%s: %d %q, want the device with credential %s", what, code, body, cred)
	}
}

func (e *env) refusedOn(r *replica, what string, rq req, msg string) {
	e.t.Helper()
	code, body := e.on(r, rq)
	if code != http.StatusUnauthorized || !strings.HasPrefix(body, "refused: ") || !strings.Contains(body, msg) {
		e.t.Fatalf("%s: %d %q, want a refusal saying %q", what, code, body, msg)
	}
}

func replayRows(e *env) int {
	e.t.Helper()
	var n int
	if err := e.store.SQL().Get(&n, `SELECT count(*) FROM device_replays`); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// A request accepted by one replica is a replay on every other, and on itself; a signature
// that does not verify (wrong key, stale, another request) records nothing.
func TestReplicasShareTheReplayWindow(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	a, b, c := e.replica(), e.replica(), e.replica()
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	rq := sign(e.priv, e.device, "POST", gql, body, time.Now())
	e.acceptedOn(a, "first use on A", rq, e.cred)
	e.refusedOn(b, "replayed to B", rq, "replayed request")
	e.refusedOn(c, "replayed to C", rq, "replayed request")
	e.refusedOn(a, "replayed to A", rq, "replayed request")
	if n := replayRows(e); n != 1 {
		t.Fatalf("%d replay rows, want 1", n)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	e.refusedOn(b, "wrong key", sign(other, e.device, "POST", gql, body, time.Now()), "device signature invalid")
	e.refusedOn(b, "stale", sign(e.priv, e.device, "POST", gql, body, time.Now().Add(-2*time.Minute)), "expired")
	tampered := rq
	tampered.body = []byte(`{"query":"mutation { heartbeat(x: 1) }"}`)
	e.refusedOn(c, "another body under the signature", tampered, "device signature invalid")
	if n := replayRows(e); n != 1 {
		t.Fatalf("%d replay rows after unverified signatures, want 1", n)
	}
}

// A key revoked in the database (by any replica, or by hand) is refused by a replica that still
// caches it, on its very next request, with no notification and no expiry: the replay insert
// itself requires the credential to be live.
func TestRevocationBeatsACachedKey(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	b := e.replica()
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	e.acceptedOn(b, "before the revocation", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
	if _, err := e.store.RevokeDeviceKey(t.Context(), e.device, e.owner, e.cred); err != nil {
		t.Fatal(err)
	}
	lookups := b.lookups.Load()
	e.refusedOn(b, "next request after the revocation", sign(e.priv, e.device, "POST", gql, body, time.Now()), "revoked key")
	if b.lookups.Load() != lookups {
		t.Fatal("the refusal read the keys again: it must come from the replay insert")
	}
	// The refusal dropped the cached keys: the next request reads them and finds none.
	e.refusedOn(b, "after that", sign(e.priv, e.device, "POST", gql, body, time.Now()), "revoked key")
	if b.lookups.Load() == lookups {
		t.Fatal("the revoked key stayed cached")
	}
	if n := replayRows(e); n != 1 {
		t.Fatalf("%d replay rows, want only the one before the revocation", n)
	}
	// A removed device alike.
	dev, cred, _, priv := e.enroll()
	e.device = dev
	e.acceptedOn(b, "other device", sign(priv, dev, "POST", gql, body, time.Now()), cred)
	if err := e.store.RemoveDevice(t.Context(), dev, e.owner); err != nil {
		t.Fatal(err)
	}
	e.refusedOn(b, "removed device", sign(priv, dev, "POST", gql, body, time.Now()), "revoked key")
}

// A key added on another replica works on one that cached the device's older keys, on its very
// next request: a signature no cached key verifies reads the keys once more.
func TestNewKeyWorksOnAReplicaCachingOldKeys(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	b := e.replica()
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	e.acceptedOn(b, "old key", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	c, err := e.store.AddDeviceKey(t.Context(), e.device, e.owner, pub)
	if err != nil {
		t.Fatal(err)
	}
	e.acceptedOn(b, "new key at once", sign(priv, e.device, "POST", gql, body, time.Now()), c.ID)
}

// Listen drops a device's cached keys when the database announces a change, and flushes the
// whole cache when it connects (notifications sent while it was away are lost).
func TestListenDropsCachedKeys(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	b := e.replica()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	dsn := dbtest.DSN(t, e.store.SQL())
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	e.acceptedOn(b, "cached before listening", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
	go func() { defer close(done); b.auth.Listen(ctx, dsn, db.DeviceKeysChannel, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	waitLookups := func(what string, want int32) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			e.acceptedOn(b, what, sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
			if b.lookups.Load() >= want {
				return
			}
		}
		t.Fatalf("%s: the cached keys were never dropped (%d lookups)", what, b.lookups.Load())
	}
	waitLookups("flushed on connecting", 2)
	n := b.lookups.Load()
	e.acceptedOn(b, "cached again", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
	if b.lookups.Load() != n {
		t.Fatal("keys not cached")
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := e.store.AddDeviceKey(t.Context(), e.device, e.owner, pub); err != nil {
		t.Fatal(err)
	}
	waitLookups("dropped on a key change", n+1)
}
