package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

const (
	// dexPackage is the command built from the tools/dex module, whose go.mod pins its version.
	dexPackage = "github.com/dexidp/dex/cmd/dex"
	// clientID is Dex's static client; Dex puts it in the access tokens' "aud".
	clientID     = "gpugate-api"
	clientSecret = "e2e-client-secret"
)

// dexUser is one of Dex's static password users. The hashes are bcrypt (cost 10) of the
// passwords, computed once: golang.org/x/crypto is not a dependency of the main module.
type dexUser struct {
	email, username, userID, password, hash string
}

var (
	alice = dexUser{"alice@example.com", "alice", "1b0c6f1e-7c52-4a43-9a57-0d0e3c1e0a01", "alice-password",
		"$2a$10$BZm9aBZJTA9Dgm8wPvcoj..fm8trHaDlF8rYz3ELZObvR4iSK2iKq"}
	bob = dexUser{"bob@example.com", "bob", "2c1d7f2f-8d63-4b54-8b68-1e1f4d2f1b02", "bob-password",
		"$2a$10$sDe1xRulNtLrOGAevpyfCuaTsbI8sLXQcAT1Wdf9HM8SHsIYU7PoW"}
)

// TestDexEndToEnd runs the gateway against a real Dex and a real PostgreSQL: the tokens come from
// Dex's token endpoint (OAuth2 password grant), the gateway discovers Dex and fetches its JWKS
// over HTTP, and every request goes over real HTTP.
func TestDexEndToEnd(t *testing.T) {
	bin := dexBinary(t)
	dex := startDex(t, bin, []dexUser{alice, bob})
	ctx := t.Context()

	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(ctx, 40); err != nil {
		t.Fatalf("seed: %v", err)
	}
	// Dex's access tokens are ID tokens (see "Dex issues no distinct access tokens" below): the
	// issuer is trusted with token type "id-token", and its audience, the client id Dex puts in
	// "aud", is what keeps tokens for other clients out.
	v, err := oidc.New(ctx, oidc.Config{Issuers: []oidc.IssuerConfig{{
		URL: dex.issuer, Audience: clientID, RolesClaim: "groups", TokenType: oidc.TokenTypeIDToken,
	}}})
	if err != nil {
		t.Fatalf("oidc.New against Dex: %v", err)
	}

	aliceToken, aliceIDToken := dex.tokens(t, alice)
	bobToken, _ := dex.tokens(t, bob)
	// Dex's subject is opaque (base64 of the user id and the connector id): learn it from the
	// token, then link it as an operator would.
	aliceClaims := claimsOf(t, aliceToken)
	if aliceClaims.Iss != dex.issuer || !slices.Contains(aliceClaims.Aud, clientID) || aliceClaims.Email != alice.email || aliceClaims.Sub == "" {
		t.Fatalf("Dex's access token for alice has unexpected claims: %+v", aliceClaims)
	}
	ids := map[string]string{} // email -> gpugate user id
	for _, u := range []struct {
		user  dexUser
		token string
	}{{alice, aliceToken}, {bob, bobToken}} {
		sub := claimsOf(t, u.token).Sub
		t.Logf("Dex's subject for %s: %s", u.user.email, sub)
		if err := store.LinkIdentity(ctx, db.Identity{Issuer: dex.issuer, Subject: sub}, u.user.email, "mapping"); err != nil {
			t.Fatalf("link %s: %v", u.user.email, err)
		}
		var id string
		if err := x.Get(&id, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, dex.issuer, sub); err != nil {
			t.Fatal(err)
		}
		ids[u.user.email] = id
	}
	if claimsOf(t, bobToken).Sub == aliceClaims.Sub || ids[alice.email] == ids[bob.email] {
		t.Fatalf("alice and bob share a subject or a user: %v", ids)
	}

	gw := startGateway(t, store, v)

	mine := sqlIDs(t, x, ids[alice.email])
	if len(mine) == 0 || len(mine) > 10 {
		t.Fatalf("the seed gave alice %d devices; this test expects 1 to 10", len(mine))
	}
	aliceDevice := mine[0]

	t.Run("viewer lists alice's devices", func(t *testing.T) {
		var out struct {
			Viewer struct {
				Email   string
				Devices struct {
					Edges []struct{ Node struct{ ID, Name string } }
				}
			}
		}
		gw.post(t, aliceToken, `{ viewer { email devices(first: 10) { edges { node { id name } } } } }`).Decode(t, &out)
		if out.Viewer.Email != alice.email {
			t.Fatalf("viewer.email = %q, want %q", out.Viewer.Email, alice.email)
		}
		var got []string
		for _, e := range out.Viewer.Devices.Edges {
			got = append(got, e.Node.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, mine) {
			t.Fatalf("viewer.devices = %v, want alice's devices in SQL %v", got, mine)
		}
	})

	t.Run("alice renames her device", func(t *testing.T) {
		var out struct{ UpdateDevice struct{ Name string } }
		gw.post(t, aliceToken, fmt.Sprintf(`mutation { updateDevice(id: %q, input: {name: "renamed-by-alice"}) { name } }`, aliceDevice)).Decode(t, &out)
		if out.UpdateDevice.Name != "renamed-by-alice" {
			t.Fatalf("updateDevice returned name %q", out.UpdateDevice.Name)
		}
		var name string
		if err := x.Get(&name, `SELECT name FROM devices WHERE id = $1`, aliceDevice); err != nil {
			t.Fatal(err)
		}
		if name != "renamed-by-alice" {
			t.Fatalf("the row's name is %q after the rename", name)
		}
	})

	t.Run("bob cannot rename alice's device", func(t *testing.T) {
		before := snapshot(t, x, aliceDevice)
		r := gw.post(t, bobToken, fmt.Sprintf(`mutation { updateDevice(id: %q, input: {name: "renamed-by-bob"}) { name } }`, aliceDevice))
		if len(r.Errors) != 1 || r.Errors[0].Code() != "FORBIDDEN" {
			t.Fatalf("want one FORBIDDEN error, got HTTP %d: %s", r.Status, r.RawBody)
		}
		if strings.Contains(r.RawBody, ids[alice.email]) {
			t.Fatalf("the refusal names the owner: %s", r.RawBody)
		}
		if after := snapshot(t, x, aliceDevice); after != before {
			t.Fatalf("refused, but the row changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("Dex issues no distinct access tokens", func(t *testing.T) {
		// Dex mints its access token with its ID-token code: same issuer, key, subject and
		// audience, and an at_hash (of a random value) too. Nothing tells them apart, which is
		// why the issuer needs the explicit token type "id-token".
		for name, tok := range map[string]string{"access token": aliceToken, "ID token": aliceIDToken} {
			c := claimsOf(t, tok)
			if c.Sub != aliceClaims.Sub || !slices.Equal(c.Aud, aliceClaims.Aud) || c.AtHash == "" {
				t.Fatalf("Dex's %s: %+v; want alice's sub and aud and an at_hash", name, c)
			}
		}
		// Under the default token type, Dex's tokens are refused as the ID tokens they are.
		def, err := oidc.New(ctx, oidc.Config{Issuers: []oidc.IssuerConfig{{URL: dex.issuer, Audience: clientID}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := def.Verify(ctx, aliceToken); err != oidc.ErrIDToken { //nolint:errorlint // the exact sentinel
			t.Fatalf("Dex's access token under the default token type: %v, want %v", err, oidc.ErrIDToken)
		}
		// Under "id-token", the audience alone decides: a token for another API is refused.
		other, err := oidc.New(ctx, oidc.Config{Issuers: []oidc.IssuerConfig{{
			URL: dex.issuer, Audience: "another-api", TokenType: oidc.TokenTypeIDToken,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Verify(ctx, aliceIDToken); err != oidc.ErrAudienceMismatch { //nolint:errorlint
			t.Fatalf("Dex's ID token for another audience: %v, want %v", err, oidc.ErrAudienceMismatch)
		}
	})

	t.Run("tampered tokens are refused with 401", func(t *testing.T) {
		parts := strings.Split(aliceToken, ".")
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatalf("signature of Dex's token: %v", err)
		}
		sig[len(sig)/2] ^= 0x01 // a middle byte: the last character may carry only padding bits
		bobParts := strings.Split(bobToken, ".")
		for name, tok := range map[string]string{
			"flipped signature bit":           parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig),
			"alice's claims, bob's signature": parts[0] + "." + parts[1] + "." + bobParts[2],
		} {
			before := snapshot(t, x, aliceDevice)
			r := gw.post(t, tok, fmt.Sprintf(`mutation { updateDevice(id: %q, input: {name: "tampered"}) { name } }`, aliceDevice))
			if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s: want HTTP 401 with WWW-Authenticate, got %d: %s", name, r.Status, r.RawBody)
			}
			if len(r.Errors) != 1 || r.Errors[0].Code() != "UNAUTHENTICATED" {
				t.Fatalf("%s: want one UNAUTHENTICATED error, got %s", name, r.RawBody)
			}
			if after := snapshot(t, x, aliceDevice); after != before {
				t.Fatalf("%s: refused, but the row changed", name)
			}
		}
		// The untampered token still works: the refusals were about the tampering.
		var out struct{ Viewer struct{ Email string } }
		gw.post(t, aliceToken, `{ viewer { email } }`).Decode(t, &out)
		if out.Viewer.Email != alice.email {
			t.Fatalf("viewer.email = %q after the refusals", out.Viewer.Email)
		}
	})
}

var (
	// dexBuildFlags: no symbol table or DWARF, for a faster link of a binary no one debugs here.
	dexBuildFlags = []string{"-ldflags=-s -w"}
	// dexBuildEnv: Dex's command does not compile without cgo (its SQLite storage), although the
	// test uses the memory storage; SQLite's C code, never run, is compiled at -O0 (about a
	// minute less than the default -O2 -g on two cores). GOWORK=off keeps a go.work above the
	// repository from pulling the tools module into a workspace.
	dexBuildEnv = []string{"CGO_ENABLED=1", "CGO_CFLAGS=-O0", "GOWORK=off"}
)

// dexBinary returns the path of a Dex binary built from tools/dex, building it only when the
// cache (under os.UserCacheDir, keyed by the tools module's go.mod and go.sum and the Go
// version) has none, so that only a machine's first run pays for the build.
func dexBinary(t *testing.T) string {
	t.Helper()
	toolsDir, err := filepath.Abs(filepath.Join("..", "tools", "dex"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(toolsDir, f))
		if err != nil {
			t.Fatalf("the Dex tools module: %v", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%s %s/%s %q %q\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, dexBuildFlags, dexBuildEnv)
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "gpugate", "dex-"+hex.EncodeToString(h.Sum(nil))[:16])
	bin := filepath.Join(dir, "dex")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		t.Logf("Dex: using the cached build %s", bin)
		return bin
	}

	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building Dex needs the Go toolchain: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Build under a temporary name and rename: a concurrent run never sees half a binary.
	tmp, err := os.CreateTemp(dir, "dex-*.partial")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	start := time.Now()
	cmd := exec.Command(goCmd, append(append([]string{"build"}, dexBuildFlags...), "-o", tmp.Name(), dexPackage)...)
	cmd.Dir = toolsDir
	cmd.Env = append(os.Environ(), dexBuildEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", dexPackage, toolsDir, err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("Dex: built %s in %v", bin, time.Since(start).Round(100*time.Millisecond))
	return bin
}

// dexServer is a running Dex.
type dexServer struct {
	issuer string
}

// startDex starts Dex with in-memory storage on a free loopback port and waits for its
// discovery document. Dex is stopped when the test ends; its log is shown if the test failed.
func startDex(t *testing.T, bin string, users []dexUser) *dexServer {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // the free port may be taken before Dex binds it
		d, err := tryStartDex(t, bin, users)
		if err == nil {
			return d
		}
		lastErr = err
		t.Logf("Dex did not start (attempt %d): %v", attempt+1, err)
	}
	t.Fatalf("Dex did not start: %v", lastErr)
	return nil
}

func tryStartDex(t *testing.T, bin string, users []dexUser) (*dexServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	issuer := "http://" + addr + "/dex"

	var passwords []map[string]string
	for _, u := range users {
		passwords = append(passwords, map[string]string{"email": u.email, "username": u.username, "userID": u.userID, "hash": u.hash})
	}
	// JSON is YAML: Dex reads it as its YAML configuration.
	config, err := json.MarshalIndent(map[string]any{
		"issuer":  issuer,
		"storage": map[string]any{"type": "memory"},
		"web":     map[string]any{"http": addr},
		"logger":  map[string]any{"level": "info", "format": "text"},
		"oauth2": map[string]any{
			"passwordConnector":  "local",
			"skipApprovalScreen": true,
			"grantTypes":         []string{"authorization_code", "refresh_token", "password"},
		},
		"enablePasswordDB": true,
		"staticPasswords":  passwords,
		"staticClients": []map[string]any{{
			"id": clientID, "secret": clientSecret, "name": "gpugate e2e",
			"redirectURIs": []string{"http://127.0.0.1/callback"},
		}},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(t.TempDir(), "dex.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		return nil, err
	}

	logs := &testutil.SyncBuffer{}
	cmd := exec.Command(bin, "serve", path)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = sysProcAttr()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	discovery := issuer + "/.well-known/openid-configuration"
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("dex exited: %v\n%s", waitErr, logs.String())
		default:
		}
		ready, err := discoveryReady(discovery, issuer)
		if ready {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("no discovery document at %s after 30s (%v)\n%s", discovery, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("Dex: ready at %s in %v", issuer, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("Dex log:\n%s", logs.String())
		}
	})
	return &dexServer{issuer: issuer}, nil
}

func discoveryReady(u, issuer string) (bool, error) {
	resp, err := http.Get(u)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return false, err
	}
	if doc.Issuer != issuer {
		return false, fmt.Errorf("discovery names issuer %q, want %q", doc.Issuer, issuer)
	}
	return true, nil
}

// tokens gets an access token and an ID token for u from Dex's token endpoint with the OAuth2
// password grant.
func (d *dexServer) tokens(t *testing.T, u dexUser) (access, id string) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {u.email}, "password": {u.password},
		"scope": {"openid email profile"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, d.issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Dex token endpoint: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tr struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
		TokenType   string `json:"token_type"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tr) != nil || tr.AccessToken == "" || tr.IDToken == "" {
		t.Fatalf("password grant for %s: HTTP %d: %s", u.email, resp.StatusCode, body)
	}
	if !strings.EqualFold(tr.TokenType, "bearer") || strings.Count(tr.AccessToken, ".") != 2 {
		t.Fatalf("Dex's access token for %s is not a bearer JWT: type %q, %q", u.email, tr.TokenType, tr.AccessToken)
	}
	return tr.AccessToken, tr.IDToken
}

type claims struct {
	Iss    string
	Sub    string
	Aud    audience
	Email  string
	AtHash string `json:"at_hash"`
}

// audience decodes "aud", which Dex writes as a string (one audience) or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

// claimsOf decodes a JWT's payload without verifying it (the gateway verifies; this only reads).
func claimsOf(t *testing.T, jwt string) claims {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c claims
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		t.Fatalf("JWT payload %q: %v", parts[1], err)
	}
	return c
}

// sqlIDs returns the ids of the devices owned by owner, sorted.
func sqlIDs(t *testing.T, x *sqlx.DB, owner string) []string {
	t.Helper()
	var out []string
	if err := x.Select(&out, `SELECT id FROM devices WHERE owner_id = $1`, owner); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// snapshot is everything a write could change about the device.
func snapshot(t *testing.T, x *sqlx.DB, id string) string {
	t.Helper()
	var s string
	err := x.Get(&s, `SELECT coalesce((SELECT row_to_json(d)::text FROM devices d WHERE id = $1), 'absent')
		|| (SELECT count(*) FROM gpus WHERE device_id = $1)::text
		|| (SELECT count(*) FROM devices)::text`, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// client posts GraphQL operations to the gateway over real HTTP.
type client struct {
	t   *testing.T
	url string
}

// startGateway serves the gateway with verifier v over store; its log is shown if the test
// fails.
func startGateway(t *testing.T, store *db.DB, v *oidc.Verifier) *client {
	logs := testutil.LogOnFailure(t, "gateway")
	cfg := gateway.Defaults()
	cfg.Verifier = v
	srv := httptest.NewServer(gateway.New(cfg, store, slog.New(slog.NewTextHandler(logs, nil))))
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL}
}

// post sends one GraphQL operation with token as the bearer token (30 s at most).
func (c *client) post(t *testing.T, token, query string) testutil.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return testutil.PostGraphQL(ctx, t, c.url, token, query, nil)
}
