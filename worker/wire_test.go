package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/worker/client"
)

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// inTransit is a base transport under the SigningTransport: it edits the request after it was
// signed, as a man in the middle would, then sends it.
func inTransit(edit func(*http.Request)) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		edit(r)
		return http.DefaultTransport.RoundTrip(r)
	})
}

// gqlResult is a GraphQL response as sent over the wire.
type gqlResult struct {
	status int
	Data   struct {
		Device *struct{ ID, Name string }
	}
	Errors []struct {
		Message    string
		Extensions struct{ Code string }
	}
}

func (r gqlResult) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Extensions.Code
}

func sendRaw(t *testing.T, rt http.RoundTripper, req *http.Request) gqlResult {
	t.Helper()
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, err := readAll(resp)
	if err != nil {
		t.Fatal(err)
	}
	var out gqlResult
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%s %s: HTTP %d, not JSON: %s", req.Method, req.URL, resp.StatusCode, body)
	}
	out.status = resp.StatusCode
	return out
}

// Item 7: a request signature covers the query string, where a GET carries its whole operation.
// The worker's transport signs the request URI it sends (escapes included) and the gateway
// verifies over the one it received, on the device path and on the enrollment path: a query
// string changed in transit is refused.
func TestSignatureCoversTheQueryString(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	c, a, _ := enrolled(t, g, "alice")
	_, b, _ := enrolled(t, g, "bob")
	bName := g.listed(t, b.DeviceID).Name

	// A signed GET whose query string needs escaping: a comment with non-ASCII and reserved
	// characters, lower-case percent escapes (which no encoder would produce, so the raw query
	// must reach the signature unnormalised) and an escaped path letter.
	const query = "# signed GET: ü & + % = ? /\nquery Dev($id: ID!) { device(id: $id) { id name } }"
	getURL := func(deviceID string) string {
		vars, _ := json.Marshal(map[string]string{"id": deviceID})
		raw := url.Values{"query": {query}, "variables": {string(vars)}}.Encode()
		raw = strings.ReplaceAll(raw, "%7B", "%7b")
		return g.url + "/graph%71l?" + raw
	}
	signedGET := func(key *KeyFile, edit func(*http.Request)) gqlResult {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, getURL(a.DeviceID), nil)
		if err != nil {
			t.Fatal(err)
		}
		base := http.DefaultTransport
		if edit != nil {
			base = inTransit(edit)
		}
		return sendRaw(t, &client.SigningTransport{Base: base, Key: key.Key(), DeviceID: key.DeviceID}, req)
	}

	r := signedGET(a, nil)
	if r.status != http.StatusOK || len(r.Errors) != 0 || r.Data.Device == nil || r.Data.Device.ID != a.DeviceID {
		t.Fatalf("the worker's signed GET: HTTP %d %+v", r.status, r)
	}
	if !strings.Contains(getURL(a.DeviceID), "%7b") || !strings.Contains(getURL(a.DeviceID), "%C3%BC") {
		t.Fatal("the test URL lost its escapes")
	}

	for name, edit := range map[string]func(*http.Request){
		"variables swapped": func(r *http.Request) {
			u, _ := url.Parse(getURL(b.DeviceID))
			r.URL.RawQuery = u.RawQuery
		},
		"parameter added":  func(r *http.Request) { r.URL.RawQuery += "&operationName=Dev" },
		"query string cut": func(r *http.Request) { r.URL.RawQuery = "" },
		"re-encoded": func(r *http.Request) { // same values, canonical escapes
			r.URL.RawQuery = r.URL.Query().Encode()
		},
		"path unescaped": func(r *http.Request) { r.URL.RawPath = "" },
	} {
		r := signedGET(a, edit)
		if r.status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" || r.Data.Device != nil {
			t.Errorf("%s in transit: HTTP %d %+v, want 401 UNAUTHENTICATED", name, r.status, r)
		}
		if len(r.Errors) > 0 && bName != "" && strings.Contains(r.Errors[0].Message, bName) {
			t.Errorf("%s: the answer names the other device", name)
		}
	}

	// A signature over the path alone (what the worker signed before) does not cover a query.
	req, _ := http.NewRequest(http.MethodGet, getURL(a.DeviceID), nil)
	req.Header.Set(attest.SignatureHeader, attest.SignRequest(a.Key(), a.DeviceID, http.MethodGet, "/graphql", time.Now(), nil))
	if r := sendRaw(t, http.DefaultTransport, req); r.status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" {
		t.Errorf("a path-only signature with a query string: HTTP %d %+v", r.status, r)
	}

	// POST, device path: a query string added in transit to a signed heartbeat.
	tampered := client.New(g.url+"/graphql", a.Key(), a.DeviceID, inTransit(func(r *http.Request) { r.URL.RawQuery = "x=1" }), 10*time.Second)
	_, err := client.Heartbeat(context.Background(), tampered, a.DeviceID, client.HeartbeatInput{Gpus: []client.GpuReadingInput{}})
	if _, code, _, _ := gqlErrorOf(err); code != "UNAUTHENTICATED" {
		t.Errorf("a heartbeat with a query string added in transit: %v", err)
	}
	if _, err := client.Heartbeat(context.Background(), c, a.DeviceID, client.HeartbeatInput{Gpus: []client.GpuReadingInput{}}); err != nil {
		t.Errorf("the untampered heartbeat: %v", err)
	}

	// POST, enrollment path (signed by the key being enrolled): refused when tampered, and the
	// token is still good for the genuine request.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	lib, _ := Simulate("dgxh200", pub, nil)
	snap, err := Collect(lib)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(snap)
	in := client.EnrollDeviceInput{Token: g.token(t, "alice"), PublicKey: base64.StdEncoding.EncodeToString(pub), Region: "eu-west", Snapshot: string(js)}
	tampered = client.New(g.url+"/graphql", priv, "", inTransit(func(r *http.Request) { r.URL.RawQuery = "region=elsewhere" }), 10*time.Second)
	if _, err := client.EnrollDevice(context.Background(), tampered, in); err == nil {
		t.Error("an enrollment with a query string added in transit was accepted")
	} else if _, code, _, _ := gqlErrorOf(err); code != "UNAUTHENTICATED" {
		t.Errorf("an enrollment with a query string added in transit: %v", err)
	}
	if _, err := client.EnrollDevice(context.Background(), client.New(g.url+"/graphql", priv, "", nil, 10*time.Second), in); err != nil {
		t.Errorf("the untampered enrollment: %v", err)
	}
}

// Item 7: the worker talks to a gateway without TLS only on loopback, or with --insecure.
func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server                    string
		insecure                  bool
		ok, cleartext, notTLSRule bool
	}{
		{server: "http://127.0.0.1:8080", ok: true},
		{server: "http://127.9.8.7", ok: true},
		{server: "http://[::1]:8080/", ok: true},
		{server: "http://localhost:8080", ok: true},
		{server: "http://LocalHost.:8080", ok: true},
		{server: "https://gateway.example", ok: true},
		{server: "https://10.1.2.3:8443/api/graphql", ok: true},
		{server: "http://10.1.2.3:8080"},
		{server: "http://gateway.example"},
		{server: "http://localhost.gateway.example"},
		{server: "http://127.0.0.1.nip.io"},
		{server: "http://[::ffff:10.0.0.1]"},
		{server: "http://0.0.0.0:8080"},
		{server: "http://10.1.2.3:8080", insecure: true, ok: true, cleartext: true},
		{server: "http://127.0.0.1:8080", insecure: true, ok: true},
		{server: "https://gateway.example", insecure: true, ok: true},
		{server: "https://worker:secret@gateway.example", notTLSRule: true},
		{server: "ftp://gateway.example", notTLSRule: true},
	} {
		_, cleartext, err := graphqlEndpoint(tc.server, tc.insecure)
		if tc.ok != (err == nil) || cleartext != tc.cleartext {
			t.Errorf("%s (insecure %v): cleartext %v, %v", tc.server, tc.insecure, cleartext, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tc.server, err)
		}
		if !tc.ok && !tc.notTLSRule && (!errors.Is(err, ErrInsecureServer) || !strings.Contains(err.Error(), "--insecure")) {
			t.Errorf("%s: %v, want ErrInsecureServer naming --insecure", tc.server, err)
		}
	}

	// A lab gateway by a name that is not loopback: the transport reaches the test gateway
	// whatever the name, and counts the connections.
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	var dials atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, g.srv.Listener.Addr().String())
	}}
	t.Cleanup(tr.CloseIdleConnections)
	const lab = "http://gpugate-lab.internal:8080"
	path := keyPath(t, "k.json")
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Server, o.Transport = lab, tr
	err := Run(context.Background(), o)
	if !errors.Is(err, ErrInsecureServer) || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("run against %s: %v", lab, err)
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d connections to a cleartext gateway", n)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was created for a refused gateway: %v", err)
	}
	var stdout, stderr bytes.Buffer
	code := mainContext(context.Background(), []string{"--server", lab, "--simulate", "dgxh100", "--key-file", path, "--once"},
		nil, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "--insecure") {
		t.Fatalf("gpugate worker --server %s: exit %d: %s", lab, code, stderr.String())
	}

	// --insecure: allowed, with a warning.
	logs := testutil.LogOnFailure(t, "worker (insecure)")
	o.Insecure, o.Logger = true, newTestLogger(logs)
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("run with Insecure: %v", err)
	}
	if dials.Load() == 0 || !strings.Contains(logs.String(), "level=WARN msg=\"--insecure") {
		t.Fatalf("no warning, or the gateway was not reached (%d connections):\n%s", dials.Load(), logs.String())
	}
	stderr.Reset()
	code = mainContext(context.Background(), []string{"--server", lab, "--insecure", "--simulate", "dgxh100", "--key-file", path, "--once"},
		func(o *Options) { o.Transport = tr }, &stdout, &stderr)
	if code != 0 || !strings.Contains(stderr.String(), "--insecure") {
		t.Fatalf("gpugate worker --insecure: exit %d: %s", code, stderr.String())
	}
}

// Item 7: the worker follows no redirect: it would carry the enrollment token and signed
// requests to wherever the answer points, past the check of --server.
func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	var redirected atomic.Int64
	mover := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, g.url+"/graphql", http.StatusPermanentRedirect) // 308 keeps method and body
	}))
	t.Cleanup(mover.Close)
	token := g.token(t, "alice")
	path := keyPath(t, "k.json")
	o := g.options(t, "dgxh100", path, token)
	o.Server = mover.URL
	err := Run(context.Background(), o)
	if !errors.Is(err, client.ErrRedirect) || !strings.Contains(err.Error(), g.url) {
		t.Fatalf("run against a redirecting server: %v", err)
	}
	if n := redirected.Load(); n != 1 {
		t.Fatalf("%d requests to the redirecting server; a redirect is not retried", n)
	}
	if k, _ := LoadKeyFile(path); k != nil && k.DeviceID != "" {
		t.Fatalf("enrolled through a redirect as %s", k.DeviceID)
	}
	// The token never reached the gateway: it still works.
	if err := Run(context.Background(), g.options(t, "dgxh100", path, token)); err != nil {
		t.Fatalf("the token after the refused redirect: %v", err)
	}
}

// hostileGateway is a real HTTP server in front of the real gateway that rewrites every
// challenge it hands out with edit, as a hostile or broken gateway would. It counts the
// proofs submitted through it and signals each challenge it served on served.
type hostileGateway struct {
	url     string
	submits atomic.Int64
	served  chan struct{}
}

func newHostileGateway(t *testing.T, g *testGateway, edit func(ch map[string]any)) *hostileGateway {
	t.Helper()
	h := &hostileGateway{served: make(chan struct{}, 100)}
	target, _ := url.Parse(g.url)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			body, err := readAll(resp)
			if err != nil {
				return err
			}
			var doc struct {
				Data map[string]map[string]any `json:"data"`
			}
			if json.Unmarshal(body, &doc) == nil && doc.Data["requestChallenge"] != nil {
				edit(doc.Data["requestChallenge"])
				body, _ = json.Marshal(doc)
				h.served <- struct{}{}
			}
			resp.Body = nopCloser(body)
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body, _ := readBody(r); bytes.Contains(body, []byte(`"operationName":"SubmitProof"`)) {
			h.submits.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// runBounded runs the worker and fails the test if it is still working after a generous
// bound (a worker without bounds would search for years); ctx is cancelled when the test ends.
func runBounded(t *testing.T, ctx context.Context, o Options) error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the worker is still searching a proof of work")
		return nil
	}
}

// Item 7: a hostile or broken gateway cannot make the worker burn CPU without end: difficulty
// above the bound is refused before any work, and the search stops MaxChallengeTTL after the
// challenge arrived however far away its expiry, and when the worker is stopped.
func TestHostileChallengeIsBounded(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	farAway := func(bits int) func(map[string]any) {
		return func(ch map[string]any) {
			ch["difficulty"] = bits
			ch["expiresAt"] = "9999-12-31T23:59:59Z"
		}
	}

	t.Run("difficulty above the bound", func(t *testing.T) {
		t.Parallel()
		h := newHostileGateway(t, g, func(ch map[string]any) { ch["difficulty"] = MaxDifficultyLimit + 1 })
		o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
		o.Server = h.url
		err := runBounded(t, context.Background(), o)
		if !errors.Is(err, ErrChallengeRefused) || !strings.Contains(err.Error(), "--max-difficulty") {
			t.Fatalf("run: %v", err)
		}
		if len(h.served) != 1 || h.submits.Load() != 0 {
			t.Fatalf("%d challenges served, %d proofs submitted; want 1 and 0 (a refusal is not retried)", len(h.served), h.submits.Load())
		}
	})

	t.Run("difficulty above a lowered bound", func(t *testing.T) {
		t.Parallel()
		o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
		o.MaxDifficulty = 8 // the test gateway asks for 12
		if err := runBounded(t, context.Background(), o); !errors.Is(err, ErrChallengeRefused) {
			t.Fatalf("run: %v", err)
		}
	})

	t.Run("expiry years away", func(t *testing.T) {
		t.Parallel()
		h := newHostileGateway(t, g, farAway(MaxDifficultyLimit))
		logs := testutil.LogOnFailure(t, "worker")
		o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
		o.Server, o.Logger, o.MaxChallengeTTL = h.url, newTestLogger(logs), 300*time.Millisecond
		err := runBounded(t, context.Background(), o)
		if !errors.Is(err, ErrChallengeRefused) || !strings.Contains(err.Error(), "--max-challenge-ttl") {
			t.Fatalf("run: %v", err)
		}
		if !strings.Contains(logs.String(), "the proof of work stops earlier") || h.submits.Load() != 0 {
			t.Fatalf("%d proofs submitted:\n%s", h.submits.Load(), logs.String())
		}
	})

	t.Run("stopped mid-search", func(t *testing.T) {
		t.Parallel()
		h := newHostileGateway(t, g, farAway(MaxDifficultyLimit))
		logs := testutil.LogOnFailure(t, "worker")
		o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
		o.Server, o.Logger = h.url, newTestLogger(logs)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-h.served
			time.Sleep(100 * time.Millisecond) // into the search
			cancel()
		}()
		if err := runBounded(t, ctx, o); err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
		if !strings.Contains(logs.String(), "stopped") || h.submits.Load() != 0 {
			t.Fatalf("%d proofs submitted:\n%s", h.submits.Load(), logs.String())
		}
	})
}

// A gateway answer larger than any the worker needs is refused, not read into memory.
func TestOversizedAnswerIsRefused(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	h := newHostileGateway(t, g, func(ch map[string]any) { ch["nonce"] = strings.Repeat("A", 2*client.MaxResponseBytes) })
	o := g.options(t, "dgxh100", keyPath(t, "k.json"), g.token(t, "alice"))
	o.Server = h.url
	if err := runBounded(t, context.Background(), o); !errors.Is(err, client.ErrResponseTooLarge) {
		t.Fatalf("run: %v", err)
	}
	if len(h.served) != 1 || h.submits.Load() != 0 {
		t.Fatalf("%d challenges served, %d proofs submitted; want 1 and 0", len(h.served), h.submits.Load())
	}
}

func TestWorkBoundsCanOnlyBeLowered(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--max-difficulty", strconv.Itoa(MaxDifficultyLimit + 1)},
		{"--max-difficulty", "0"},
		{"--max-challenge-ttl", (MaxChallengeTTLLimit + time.Second).String()},
		{"--max-challenge-ttl", "0s"},
	} {
		var stdout, stderr bytes.Buffer
		code := mainContext(context.Background(), append(args, "--simulate", "dgxh100", "--key-file", keyPath(t, "k.json")), nil, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), args[0]) {
			t.Errorf("%v: exit %d: %s", args, code, stderr.String())
		}
	}
	for _, o := range []Options{{MaxDifficulty: MaxDifficultyLimit + 1}, {MaxChallengeTTL: MaxChallengeTTLLimit + 1}} {
		o.Server, o.KeyFile = "http://127.0.0.1:1", keyPath(t, "k.json")
		if err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not raised") {
			t.Errorf("Run with %+v: %v", o, err)
		}
	}
}

// Item 2: a public name never derives from private data. The simulated worker's public name
// contains no part of its key fingerprint, hostname or device id; a worker given no --name
// sends none (the gateway picks one) and sends the hostname only as the owner-only hostname.
func TestPublicNameLeaksNothingPrivate(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	const hostname = "alice-gpu-box-7731.corp.example"
	var sent []byte
	capture := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if body, _ := readBody(r); bytes.Contains(body, []byte(`"operationName":"EnrollDevice"`)) {
			sent = body
		}
		return http.DefaultTransport.RoundTrip(r)
	})

	path := keyPath(t, "sim.json")
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Hostname, o.Transport = hostname, capture
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(k.PublicKey())
	name := strings.ToLower(g.listed(t, k.DeviceID).Name)
	if !strings.HasPrefix(name, "sim-dgxh100-") {
		t.Fatalf("public name %q", name)
	}
	private := map[string]string{
		"key fingerprint": hex.EncodeToString(fp[:]),
		"public key":      hex.EncodeToString(k.PublicKey()),
		"device id":       k.DeviceID,
		"device id, bare": strings.ReplaceAll(k.DeviceID, "-", ""),
		"hostname":        hostname,
	}
	const part = 5 // any five consecutive characters
	for what, v := range private {
		v = strings.ToLower(v)
		for i := 0; i+part <= len(v); i++ {
			if strings.Contains(name, v[i:i+part]) {
				t.Fatalf("public name %q contains %q from the %s %s", name, v[i:i+part], what, v)
			}
		}
	}
	// Two simulated hosts of one profile get different names.
	other := keyPath(t, "sim2.json")
	if err := Run(context.Background(), g.options(t, "dgxh100", other, g.token(t, "alice"))); err != nil {
		t.Fatal(err)
	}
	if n2 := strings.ToLower(g.listed(t, deviceOf(t, other)).Name); n2 == name {
		t.Fatalf("two simulated hosts named %q", name)
	}

	// A host with real (here: injected) NVML and no --name: no name is sent; the hostname goes
	// only into the owner-only hostname field.
	lib, _ := Simulate("dgxh100", []byte("a real host"), nil)
	o = g.options(t, "", keyPath(t, "real.json"), g.token(t, "alice"))
	o.NVML, o.Hostname, o.Transport = lib, hostname, capture
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	var req struct {
		Variables struct {
			Input map[string]any `json:"input"`
		} `json:"variables"`
	}
	if err := json.Unmarshal(sent, &req); err != nil {
		t.Fatalf("enrollment request %s: %v", sent, err)
	}
	in := req.Variables.Input
	if in["name"] != nil || in["hostname"] != hostname {
		t.Fatalf("enrollment sent name %v, hostname %v; want no name and the hostname as hostname", in["name"], in["hostname"])
	}
}
