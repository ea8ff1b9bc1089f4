package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/oidc"
)

// When the identity provider cannot be reached to fetch a signing key, the token is not at
// fault: the caller gets 503 with Retry-After (and keeps its token), never 401.
func TestIdentityProviderOutageIsNotUnauthenticated(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	ots := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"}}}
	srv := httptest.NewServer(ots)
	ots.SetIssuer(srv.URL)
	v, err := oidc.New(context.Background(), oidc.Config{Issuers: []oidc.IssuerConfig{{URL: srv.URL, Audience: audience, RolesClaim: "groups"}},
		MinRefreshInterval: time.Nanosecond}) // refetch on the first unknown key
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 1, gateway.Config{Verifier: v})
	p := &idp{url: srv.URL, key: key}
	srv.Close() // the provider goes down; a token signed with a key the gateway has not cached arrives
	token := p.signWith(key, "k-rotated", p.claims("alice"))
	r := e.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(token))
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || len(r.Errors) != 1 ||
		r.Errors[0].Extensions["code"] != gateway.CodeInternal {
		t.Fatalf("HTTP %d, Retry-After %q: %s", r.Status, r.Header.Get("Retry-After"), r.RawBody)
	}
}

// idpOutage is a real OpenID provider (go-oidc's oidctest server: discovery and JWKS) on a fixed
// address that a test can stop (connection refused), make answer 500, make hang, start again, and
// whose published keys it can rotate. Requests are counted on the gateway's side
// (idpOutageCounter), so attempts against a stopped provider count too.
type idpOutage struct {
	t    *testing.T
	addr string
	url  string
	mode atomic.Int32 // idpUp, idpFail500, idpHang

	mu   sync.Mutex
	ots  *oidctest.Server
	srv  *http.Server
	stop chan struct{} // closed to release hanging requests
}

const (
	idpUp int32 = iota
	idpFail500
	idpHang
)

func newIdpOutage(t *testing.T, keys ...oidctest.PublicKey) *idpOutage {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &idpOutage{t: t, addr: ln.Addr().String(), ots: &oidctest.Server{PublicKeys: keys}, stop: make(chan struct{})}
	p.url = "http://" + p.addr
	p.ots.SetIssuer(p.url)
	p.serve(ln)
	t.Cleanup(func() {
		close(p.stop)
		p.halt()
	})
	return p
}

func (p *idpOutage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p.mode.Load() {
	case idpFail500:
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	case idpHang:
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ots.ServeHTTP(w, r)
}

func (p *idpOutage) serve(ln net.Listener) {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// halt stops the provider: its port refuses connections.
func (p *idpOutage) halt() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// resume listens on the same address again.
func (p *idpOutage) resume() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("provider: listening again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// publish replaces the JWKS (rotation).
func (p *idpOutage) publish(keys ...oidctest.PublicKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ots.PublicKeys = keys
}

// idpOutageCounter counts the gateway's requests to the provider (discovery and JWKS).
type idpOutageCounter struct{ n atomic.Int64 }

func (c *idpOutageCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// idpOutageLoad sends GraphQL requests with one bearer token per request from several goroutines
// until stopped, and tallies the HTTP statuses.
type idpOutageLoad struct {
	mu       sync.Mutex
	statuses map[int]int
	bad      []string // answers that are not what the status promises
	wg       sync.WaitGroup
	quit     chan struct{}
	once     sync.Once
}

func startIdpOutageLoad(url string, workers int, token func() string, wantViewer string) *idpOutageLoad {
	l := &idpOutageLoad{statuses: map[int]int{}, quit: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.quit:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, url+"/graphql", bytes.NewReader([]byte(`{"query":"{ viewer { id } }"}`)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+token())
				resp, err := client.Do(req)
				if err != nil {
					l.record(0, "transport: "+err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var r struct {
					Data struct {
						Viewer *struct{ ID string } `json:"viewer"`
					} `json:"data"`
					Errors []struct {
						Extensions map[string]any `json:"extensions"`
					} `json:"errors"`
				}
				_ = json.Unmarshal(body, &r)
				bad := ""
				switch resp.StatusCode {
				case http.StatusOK:
					if r.Data.Viewer == nil || r.Data.Viewer.ID != wantViewer || len(r.Errors) != 0 {
						bad = "200: " + string(body)
					}
				case http.StatusUnauthorized:
					if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != gateway.CodeUnauthenticated {
						bad = "401: " + string(body)
					}
				case http.StatusServiceUnavailable:
					if resp.Header.Get("Retry-After") == "" || len(r.Errors) != 1 {
						bad = "503: " + string(body)
					}
				default:
					bad = resp.Status + ": " + string(body)
				}
				l.record(resp.StatusCode, bad)
			}
		})
	}
	return l
}

func (l *idpOutageLoad) record(status int, bad string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.statuses[status]++
	if bad != "" && len(l.bad) < 5 {
		l.bad = append(l.bad, bad)
	}
}

// take returns the tallies since the last take and resets them.
func (l *idpOutageLoad) take() (map[int]int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, b := l.statuses, l.bad
	l.statuses, l.bad = map[int]int{}, nil
	return s, b
}

func (l *idpOutageLoad) end() {
	l.once.Do(func() { close(l.quit) })
	l.wg.Wait()
}

func idpOutageKid() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Identity provider faults under load (docs/resilience.md "Identity provider faults"): owners
// call the gateway with tokens signed by a key it fetched, while a flood of tokens with unknown
// key ids arrives, and the provider is stopped, answers 500, hangs, comes back and rotates keys.
// Cached-key tokens are answered 200 throughout; unknown kids are never accepted (401 when the
// provider answered, 503 with Retry-After while it cannot be asked); the gateway asks the
// provider at most about once per MinRefreshInterval, whatever the flood; a key published later
// is accepted, and a withdrawn one refused once the gateway has refetched.
func TestIdentityProviderFaultsUnderLoad(t *testing.T) {
	t.Parallel()
	key1, _ := rsa.GenerateKey(rand.Reader, 2048)
	key2, _ := rsa.GenerateKey(rand.Reader, 2048)
	rogue, _ := rsa.GenerateKey(rand.Reader, 2048)
	pub1 := oidctest.PublicKey{PublicKey: key1.Public(), KeyID: "k1", Algorithm: "RS256"}
	pub2 := oidctest.PublicKey{PublicKey: key2.Public(), KeyID: "k2", Algorithm: "RS256"}
	provider := newIdpOutage(t, pub1)
	counter := &idpOutageCounter{}
	const minRefresh = 200 * time.Millisecond
	v, err := oidc.New(context.Background(), oidc.Config{
		Issuers:            []oidc.IssuerConfig{{URL: provider.url, Audience: audience, RolesClaim: "groups"}},
		HTTPClient:         &http.Client{Transport: counter, Timeout: time.Second},
		MinRefreshInterval: minRefresh,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{url: provider.url, key: key1, rogue: rogue, verifier: v}
	o := newOwnersWith(t, p, gateway.Config{Verifier: v})
	cachedTok := p.signWith(key1, "k1", p.claims("alice"))
	cached := startIdpOutageLoad(o.url, 3, func() string { return cachedTok }, o.alice)
	flood := startIdpOutageLoad(o.url, 3, func() string { return p.signWith(rogue, idpOutageKid(), p.claims("alice")) }, "")
	defer cached.end()
	defer flood.end()

	// phase runs the load for d and checks what each kind of caller got.
	phase := func(name string, d time.Duration, floodWant ...int) {
		t.Helper()
		cached.take()
		flood.take()
		before := counter.n.Load()
		time.Sleep(d)
		asked := counter.n.Load() - before
		cs, cbad := cached.take()
		fs, fbad := flood.take()
		t.Logf("%s (%v): cached-key tokens %v; unknown kids %v; provider asked %d times", name, d, cs, fs, asked)
		if len(cbad) > 0 || len(fbad) > 0 {
			t.Fatalf("%s: malformed answers: %q %q", name, cbad, fbad)
		}
		if len(cs) != 1 || cs[http.StatusOK] == 0 {
			t.Fatalf("%s: cached-key tokens got %v, want only 200", name, cs)
		}
		if fs[http.StatusOK] != 0 {
			t.Fatalf("%s: %d tokens with unknown kids ACCEPTED", name, fs[http.StatusOK])
		}
		total := 0
		for status, n := range fs {
			total += n
			ok := false
			for _, w := range floodWant {
				ok = ok || status == w
			}
			if !ok {
				t.Fatalf("%s: unknown kids got %v, want only %v", name, fs, floodWant)
			}
		}
		// At most one attempt per MinRefreshInterval (an attempt against a hanging provider
		// lasts up to the client's timeout), plus the one in flight at either end.
		if limit := int64(d/minRefresh) + 2; asked > limit {
			t.Fatalf("%s: the provider was asked %d times for %d unknown kids, want at most %d", name, asked, total, limit)
		}
	}

	phase("provider up", 1500*time.Millisecond, http.StatusUnauthorized)
	provider.halt()
	// Stopped: right after the switch a kid may still be called unknown (the last attempt
	// succeeded); from the first failed attempt on, the provider is "unavailable".
	phase("provider stopped", 1500*time.Millisecond, http.StatusUnauthorized, http.StatusServiceUnavailable)
	phase("provider still stopped", 1500*time.Millisecond, http.StatusServiceUnavailable)
	provider.resume()
	provider.mode.Store(idpFail500)
	phase("provider answering 500", 1500*time.Millisecond, http.StatusUnauthorized, http.StatusServiceUnavailable)
	phase("provider still answering 500", 1500*time.Millisecond, http.StatusServiceUnavailable)
	provider.mode.Store(idpHang)
	phase("provider hanging", 2500*time.Millisecond, http.StatusServiceUnavailable)

	// Back, with a new key published beside the old: tokens signed with it are accepted at the
	// next refetch: within MinRefreshInterval of the last attempt, which against a hanging
	// provider ends at the HTTP client's timeout (1 s here, 10 s by default).
	provider.publish(pub1, pub2)
	provider.mode.Store(idpUp)
	newTok := p.signWith(key2, "k2", p.claims("alice"))
	idpOutageEventually(t, 3*time.Second, "a token signed with the newly published key accepted", func() bool {
		return o.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(newTok)).Status == http.StatusOK
	})
	phase("provider back", 1500*time.Millisecond, http.StatusUnauthorized)

	// The old key is withdrawn: once the gateway has refetched (the flood of unknown kids
	// triggers one per MinRefreshInterval), tokens signed with it are refused.
	cached.end()
	provider.publish(pub2)
	idpOutageEventually(t, 3*time.Second, "a token signed with the withdrawn key refused", func() bool {
		r := o.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(cachedTok))
		return r.Status == http.StatusUnauthorized && len(r.Errors) == 1 && r.Errors[0].Message == oidc.ErrUnknownSigningKey.Error()
	})
	if r := o.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(newTok)); r.Status != http.StatusOK {
		t.Fatalf("the new key after the old one was withdrawn: HTTP %d %s", r.Status, r.RawBody)
	}
}

func idpOutageEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
}

// The provider is down when the gateway starts: the gateway starts (the provider's tokens are
// not needed by anonymous or device requests), answers bearer tokens 503 with Retry-After
// (never 401: the token may be fine), asks the provider at most once per retry interval, and
// accepts the tokens once the provider is up, without a restart.
func TestGatewayStartsWhileIdentityProviderDown(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	provider := newIdpOutage(t, oidctest.PublicKey{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"})
	provider.halt() // connection refused at start
	counter := &idpOutageCounter{}
	const minRefresh = 200 * time.Millisecond
	v, err := oidc.New(context.Background(), oidc.Config{
		Issuers:            []oidc.IssuerConfig{{URL: provider.url, Audience: audience, RolesClaim: "groups"}},
		HTTPClient:         &http.Client{Transport: counter, Timeout: time.Second},
		MinRefreshInterval: minRefresh,
	})
	if err != nil {
		t.Fatalf("the gateway's verifier did not start with the provider down: %v", err)
	}
	p := &idp{url: provider.url, key: key, verifier: v}
	o := newOwnersWith(t, p, gateway.Config{Verifier: v})
	tok := p.sign(p.claims("alice"))

	if r := o.post(`{ devices(first: 1) { edges { node { id } } } }`, nil); r.Status != http.StatusOK || len(r.Errors) != 0 {
		t.Fatalf("anonymous read with the provider down: HTTP %d %s", r.Status, r.RawBody)
	}
	load := startIdpOutageLoad(o.url, 3, func() string { return tok }, o.alice)
	before := counter.n.Load()
	time.Sleep(1500 * time.Millisecond)
	statuses, bad := load.take()
	asked := counter.n.Load() - before
	t.Logf("provider down: %v; provider asked %d times", statuses, asked)
	if len(bad) > 0 || len(statuses) != 1 || statuses[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("with the provider down the tokens got %v %q, want only 503", statuses, bad)
	}
	if limit := int64(1500*time.Millisecond/minRefresh) + 2; asked > limit {
		t.Fatalf("the provider was asked %d times in 1.5 s, want at most %d", asked, limit)
	}
	provider.resume()
	start := time.Now()
	idpOutageEventually(t, 3*time.Second, "tokens accepted after the provider came up", func() bool {
		s, _ := load.take()
		return s[http.StatusOK] > 0
	})
	load.end()
	t.Logf("recovered %v after the provider came up", time.Since(start).Round(time.Millisecond))
	if r := o.raw(http.MethodPost, "/graphql", "application/json", []byte(`{"query":"{ viewer { id } }"}`), bearer(tok)); r.Status != http.StatusOK {
		t.Fatalf("after recovery: HTTP %d %s", r.Status, r.RawBody)
	}
}
