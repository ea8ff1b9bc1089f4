package deviceauth_test

// Signature verification through the real middleware over real HTTP, with device keys read
// from a real store (PostgreSQL via dbtest) the way the gateway reads them.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/deviceauth"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

type env struct {
	t       *testing.T
	store   *db.DB
	auth    *deviceauth.Authenticator
	srv     *httptest.Server
	owner   string
	device  string
	cred    string
	priv    ed25519.PrivateKey
	pub     ed25519.PublicKey
	touched atomic.Int32
	// keys wraps the store's lookup; tests replace it to observe or delay lookups.
	keys atomic.Pointer[deviceauth.Keys]
}

// storeKeys is the gateway's key source: the device's unrevoked keys from the store.
func storeKeys(store *db.DB) deviceauth.Keys {
	return func(ctx context.Context, id string) ([]deviceauth.Key, error) {
		if _, err := db.ParseDeviceID(id); err != nil {
			return nil, nil
		}
		rows, err := store.DeviceKeys(ctx, id)
		if err != nil {
			return nil, err
		}
		out := make([]deviceauth.Key, len(rows))
		for i, k := range rows {
			out[i] = deviceauth.Key{CredentialID: k.CredentialID, PublicKey: k.PublicKey}
		}
		return out, nil
	}
}

// newEnv enrolls one device and serves the real middleware. The inner handler answers who
// signed: "device <id> <credential> <remote>", "enrollment <result>" (it checks the enrollment
// signature against the base64 key in the body) or "anonymous"; a refusal is a 401 carrying
// the error, marked "refused" when it is an ErrUnauthenticated.
func newEnv(t *testing.T, o deviceauth.Options) *env {
	t.Helper()
	t.Parallel()
	e := &env{t: t, store: db.New(dbtest.New(t), db.Options{})}
	ctx := t.Context()
	u, err := e.store.UserForIdentity(ctx, db.Identity{Issuer: "https://issuer.test", Subject: "owner"})
	if err != nil {
		t.Fatal(err)
	}
	e.owner = u.ID
	e.device, e.cred, e.pub, e.priv = e.enroll()
	base := storeKeys(e.store)
	e.keys.Store(&base)
	o.Touch = func(string) { e.touched.Add(1) }
	e.auth = deviceauth.New(func(ctx context.Context, id string) ([]deviceauth.Key, error) {
		return (*e.keys.Load())(ctx, id)
	}, o)
	e.srv = httptest.NewServer(e.auth.Middleware(rejectStatus)(whoSigned))
	t.Cleanup(e.srv.Close)
	return e
}

// whoSigned answers who signed (see newEnv).
var whoSigned = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if p, ok := deviceauth.PrincipalFrom(r.Context()); ok {
		fmt.Fprintf(w, "device %s %s %s", p.DeviceID, p.CredentialID, p.RemoteAddr)
		return
	}
	if en, ok := deviceauth.EnrollmentFrom(r.Context()); ok {
		pub, _ := base64.StdEncoding.DecodeString(string(body))
		if err := en.VerifyEnrollment(pub); err != nil {
			fmt.Fprintf(w, "enrollment refused %v %s", errors.Is(err, deviceauth.ErrUnauthenticated), en.RemoteAddr())
			return
		}
		fmt.Fprintf(w, "enrollment ok %s", en.RemoteAddr())
		return
	}
	fmt.Fprintf(w, "anonymous %d", len(body))
})

// rejectStatus answers a refusal (see newEnv).
func rejectStatus(w http.ResponseWriter, _ *http.Request, err error) {
	w.WriteHeader(http.StatusUnauthorized)
	kind := "outage"
	if errors.Is(err, deviceauth.ErrUnauthenticated) {
		kind = "refused"
	}
	fmt.Fprintf(w, "%s: %v", kind, err)
}

func (e *env) enroll() (id, cred string, pub ed25519.PublicKey, priv ed25519.PrivateKey) {
	e.t.Helper()
	pub, priv, _ = ed25519.GenerateKey(rand.Reader)
	tok, _, err := e.store.CreateEnrollmentToken(e.t.Context(), e.owner)
	if err != nil {
		e.t.Fatal(err)
	}
	id, cred, err = e.store.Enroll(e.t.Context(), db.Enrollment{Token: tok, PublicKey: pub, Region: "r",
		Snapshot: attest.Snapshot{GPUs: []attest.GPU{{UUID: "GPU-" + uuid.NewString(), Name: "NVIDIA H100 80GB HBM3", PCIDeviceID: 0x2330}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return id, cred, pub, priv
}

// req is one request as a worker sends it.
type req struct {
	method, uri string
	body        []byte
	headers     []string // signature header values; none for an unsigned request
}

// sign signs method+uri+body for device with priv at ts.
func sign(priv ed25519.PrivateKey, device, method, uri string, body []byte, ts time.Time) req {
	return req{method: method, uri: uri, body: body, headers: []string{attest.SignRequest(priv, device, method, uri, ts, body)}}
}

// do sends r and returns the status and body.
func (e *env) do(r req) (int, string) {
	e.t.Helper()
	hr, err := http.NewRequest(r.method, e.srv.URL+r.uri, bytes.NewReader(r.body))
	if err != nil {
		e.t.Fatal(err)
	}
	if hr.URL.RequestURI() != r.uri {
		e.t.Fatalf("request URI %q would be sent as %q", r.uri, hr.URL.RequestURI())
	}
	for _, h := range r.headers {
		hr.Header.Add(attest.SignatureHeader, h)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// accepted fails unless r authenticates as the env's device with credential cred.
func (e *env) accepted(what string, r req, cred string) {
	e.t.Helper()
	code, body := e.do(r)
	if code != http.StatusOK || !strings.HasPrefix(body, "device "+e.device+" "+cred+" 127.0.0.1:") {
		e.t.Fatalf("%s: %d %q, want the device with credential %s", what, code, body, cred)
	}
}

// refused fails unless r is refused as unauthenticated with a message containing msg.
func (e *env) refused(what string, r req, msg string) {
	e.t.Helper()
	code, body := e.do(r)
	if code != http.StatusUnauthorized || !strings.HasPrefix(body, "refused: ") || !strings.Contains(body, msg) {
		e.t.Fatalf("%s: %d %q, want a refusal saying %q", what, code, body, msg)
	}
}

const gql = "/graphql"

func TestFreshSignatureAuthenticates(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	e.accepted("fresh POST", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
	// GET carries the operation in the query string, which the signature covers.
	uri := "/graphql?query=%7B+me+%7D&variables=%7B%22a%22%3A1%7D"
	e.accepted("fresh GET with a query", sign(e.priv, e.device, "GET", uri, nil, time.Now()), e.cred)
	// Clock skew inside the window either way.
	e.accepted("50 s behind", sign(e.priv, e.device, "POST", gql, body, time.Now().Add(-50*time.Second)), e.cred)
	e.accepted("50 s ahead", sign(e.priv, e.device, "POST", gql, body, time.Now().Add(50*time.Second)), e.cred)
	// Unsigned requests pass through with their body intact.
	if code, got := e.do(req{method: "POST", uri: gql, body: body}); code != 200 || got != fmt.Sprintf("anonymous %d", len(body)) {
		t.Fatalf("unsigned: %d %q", code, got)
	}
	// Touch is called once per credential (at most once a minute), not per request.
	if n := e.touched.Load(); n != 1 {
		t.Fatalf("Touch called %d times for one credential", n)
	}
}

func TestStaleAndReplayedSignaturesAreRefused(t *testing.T) {
	e := newEnv(t, deviceauth.Options{Window: 30 * time.Second})
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	e.refused("signed 31 s ago", sign(e.priv, e.device, "POST", gql, body, time.Now().Add(-31*time.Second)), "expired")
	e.refused("signed 31 s ahead", sign(e.priv, e.device, "POST", gql, body, time.Now().Add(31*time.Second)), "expired")

	r := sign(e.priv, e.device, "POST", gql, body, time.Now())
	e.accepted("first use", r, e.cred)
	e.refused("exact replay", r, "replayed request")
	// The same request signed again (new nonce) is not a replay.
	e.accepted("a legitimate retry", sign(e.priv, e.device, "POST", gql, body, time.Now()), e.cred)
}

// A fake clock drives the replay horizon: a replayed request is refused as replayed while its
// signature is fresh and as expired afterwards, never accepted.
func TestReplayAcrossTheWindow(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, deviceauth.Options{Window: time.Minute, Now: clock})
	r := sign(e.priv, e.device, "POST", gql, nil, clock())
	e.accepted("first use", r, e.cred)
	for _, step := range []time.Duration{30 * time.Second, 29 * time.Second} {
		advance(step)
		e.refused("replay inside the window", r, "replayed request")
	}
	advance(2 * time.Second)
	e.refused("replay after the window", r, "expired")
	// Purging old replay records (after two windows) lets nothing old back in.
	advance(3 * time.Minute)
	e.accepted("a new request after the purge", sign(e.priv, e.device, "POST", gql, nil, clock()), e.cred)
	e.refused("the old request after the purge", r, "expired")
}

func TestSignatureCoversTheWholeRequest(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	body := []byte(`{"query":"mutation { heartbeat }"}`)
	now := time.Now()
	tamper := func(what string, r req, change func(*req)) {
		t.Helper()
		change(&r)
		e.refused(what, r, "invalid")
	}
	tamper("body changed", sign(e.priv, e.device, "POST", gql, body, now), func(r *req) { r.body = []byte(`{"query":"mutation { removeDevice }"}`) })
	tamper("body dropped", sign(e.priv, e.device, "POST", gql, body, now), func(r *req) { r.body = nil })
	tamper("method changed", sign(e.priv, e.device, "GET", "/graphql?query=x", nil, now), func(r *req) { r.method = "DELETE" })
	tamper("query string added", sign(e.priv, e.device, "POST", gql, body, now), func(r *req) { r.uri = "/graphql?query=%7Bme%7D" })
	tamper("query string changed", sign(e.priv, e.device, "GET", "/graphql?query=%7Bme%7D", nil, now), func(r *req) { r.uri = "/graphql?query=%7Bus%7D" })
	tamper("query string dropped", sign(e.priv, e.device, "GET", "/graphql?query=%7Bme%7D", nil, now), func(r *req) { r.uri = gql })
	tamper("path changed", sign(e.priv, e.device, "POST", "/other", body, now), func(r *req) { r.uri = gql })
	// Escaping is part of the URI: the signer signs what it sends.
	tamper("escaping changed", sign(e.priv, e.device, "GET", "/graphql?query=%7Bme%7D", nil, now), func(r *req) { r.uri = "/graphql?query={me}" })

	// Another device's ID over this device's signature, and this device's ID signed by a key
	// that is not its own.
	otherID, _, _, otherPriv := e.enroll()
	tamper("device ID swapped", sign(e.priv, e.device, "POST", gql, body, now), func(r *req) {
		h := strings.Replace(r.headers[0], "device="+e.device, "device="+otherID, 1)
		r.headers = []string{h}
	})
	e.refused("signed by another device's key", sign(otherPriv, e.device, "POST", gql, body, now), "invalid")
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	e.refused("signed by an unknown key", sign(stranger, e.device, "POST", gql, body, now), "invalid")
	e.refused("unknown device", sign(e.priv, uuid.NewString(), "POST", gql, body, now), "invalid")
	e.refused("device ID not canonical", sign(e.priv, strings.ToUpper(e.device), "POST", gql, body, now), "device ID as issued")
	e.refused("device ID not a UUID", sign(e.priv, "device-1", "POST", gql, body, now), "device ID as issued")

	e.refused("malformed header", req{method: "POST", uri: gql, body: body, headers: []string{"v1 device=x"}}, "malformed")
	two := sign(e.priv, e.device, "POST", gql, body, now)
	two.headers = append(two.headers, sign(e.priv, e.device, "POST", gql, body, now).headers...)
	e.refused("two signatures", two, "one device signature per request")
	big := bytes.Repeat([]byte("x"), deviceauth.MaxBody+1)
	e.refused("body over MaxBody", sign(e.priv, e.device, "POST", gql, big, now), "could not read the request body")
	// None of those reached the handler or used a replay slot: the genuine request still works.
	e.accepted("the untampered request", sign(e.priv, e.device, "POST", gql, body, now), e.cred)
}

func TestKeyLookupFailureIsNotARefusal(t *testing.T) {
	e := newEnv(t, deviceauth.Options{})
	failing := deviceauth.Keys(func(context.Context, string) ([]deviceauth.Key, error) { return nil, errors.New("database down") })
	e.keys.Store(&failing)
	code, body := e.do(sign(e.priv, e.device, "POST", gql, nil, time.Now()))
	if code != http.StatusUnauthorized || !strings.HasPrefix(body, "outage: database down") {
		t.Fatalf("lookup failure: %d %q, want the outage passed to reject unwrapped", code, body)
	}
}

func TestRevokedKeyAndRemovedDevice(t *testing.T) {
	e := newEnv(t, deviceauth.Options{CacheTTL: time.Hour})
	ctx := t.Context()
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	c2, err := e.store.AddDeviceKey(ctx, e.device, e.owner, pub2)
	if err != nil {
		t.Fatal(err)
	}
	e.auth.Revoke(e.device) // as the resolver does after adding a key
	e.accepted("first key", sign(e.priv, e.device, "POST", gql, nil, time.Now()), e.cred)
	e.accepted("second key", sign(priv2, e.device, "POST", gql, nil, time.Now()), c2.ID)

	if _, err := e.store.RevokeDeviceKey(ctx, e.device, e.owner, e.cred); err != nil {
		t.Fatal(err)
	}
	e.auth.Revoke(e.device)
	e.refused("revoked key", sign(e.priv, e.device, "POST", gql, nil, time.Now()), "revoked key")
	e.accepted("the other key still works", sign(priv2, e.device, "POST", gql, nil, time.Now()), c2.ID)

	if err := e.store.RemoveDevice(ctx, e.device, e.owner); err != nil {
		t.Fatal(err)
	}
	e.auth.Revoke(e.device)
	e.refused("removed device", sign(priv2, e.device, "POST", gql, nil, time.Now()), "invalid")
}

func TestEnrollmentSignature(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, deviceauth.Options{Now: clock})
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	body := []byte(base64.StdEncoding.EncodeToString(pub))
	check := func(what string, r req, want string) {
		t.Helper()
		code, got := e.do(r)
		if code != http.StatusOK || !strings.HasPrefix(got, want+" 127.0.0.1:") {
			t.Fatalf("%s: %d %q, want %q", what, code, got, want)
		}
	}
	// An enrollment names no device: the signature is handed to the handler, which checks it
	// against the key being enrolled.
	r := sign(priv, "", "POST", gql, body, clock())
	check("signed by the key being enrolled", r, "enrollment ok")
	check("the same enrollment again (the token refuses replays, not the signature)", r, "enrollment ok")
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	check("signed by another key", sign(other, "", "POST", gql, body, clock()), "enrollment refused true")
	tampered := sign(priv, "", "POST", gql, body, clock())
	tampered.uri = "/graphql?x=1"
	check("URI changed", tampered, "enrollment refused true")
	stale := sign(priv, "", "POST", gql, body, clock())
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	check("stale", stale, "enrollment refused true")
	// A device key used for enrollment is not a device request.
	check("an enrolled device's key", sign(e.priv, "", "POST", gql, []byte(base64.StdEncoding.EncodeToString(e.pub)), clock()), "enrollment ok")
}

// Revocation racing verification: once RevokeDeviceKey and Authenticator.Revoke have both
// returned, no request signed by the revoked key verifies, even when a key lookup that started
// before the revocation finishes after it (the lookup read the key while it was valid, and
// must not put it back in the cache).
func TestRevocationRacingAKeyLookup(t *testing.T) {
	e := newEnv(t, deviceauth.Options{CacheTTL: time.Hour})
	ctx := t.Context()
	base := storeKeys(e.store)
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := deviceauth.Keys(func(ctx context.Context, id string) ([]deviceauth.Key, error) {
		keys, err := base(ctx, id)
		once.Do(func() { close(loaded); <-resume }) // the first lookup stalls after reading
		return keys, err
	})
	e.keys.Store(&slow)

	inFlight := make(chan int, 1)
	go func() {
		code, _ := e.do(sign(e.priv, e.device, "POST", gql, nil, time.Now()))
		inFlight <- code
	}()
	<-loaded // the lookup has read the still-valid key
	if _, err := e.store.RevokeDeviceKey(ctx, e.device, e.owner, e.cred); err != nil {
		t.Fatal(err)
	}
	e.auth.Revoke(e.device)
	close(resume)
	<-inFlight // it began before the revocation: either outcome is linearizable
	e.refused("a request sent after the revocation returned", sign(e.priv, e.device, "POST", gql, nil, time.Now()), "revoked key")
}

// Many requests verifying while the key is revoked: every request sent after the revocation
// returned is refused.
func TestRevocationUnderLoad(t *testing.T) {
	e := newEnv(t, deviceauth.Options{CacheTTL: time.Hour})
	var revoked atomic.Bool
	var served, servedAfter, late atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for servedAfter.Load() < 40 {
				after := revoked.Load()
				code, _ := e.do(sign(e.priv, e.device, "POST", gql, nil, time.Now()))
				served.Add(1)
				if after {
					servedAfter.Add(1)
					if code == http.StatusOK {
						late.Add(1)
					}
				}
			}
		})
	}
	for served.Load() < 40 {
		runtime.Gosched()
	}
	if _, err := e.store.RevokeDeviceKey(t.Context(), e.device, e.owner, e.cred); err != nil {
		t.Fatal(err)
	}
	e.auth.Revoke(e.device)
	revoked.Store(true)
	wg.Wait()
	if n := late.Load(); n != 0 {
		t.Fatalf("%d requests sent after the revocation returned were accepted", n)
	}
}
