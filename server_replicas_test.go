package main

// Stateless replicas (docs/scale-out.md, "Stateless replicas"): three `gpugate serve` processes on
// one database, each with its own memory, behave as one gateway for everything that decides
// who may do what: a signed request accepted by one is a replay on the others, a key revoked
// through one is refused by the others on their very next request, a key added through one works
// on the others at once, a kill switch set on one holds on the others.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/oidc/devissuer"
)

// replicaCluster is n gateways on one fresh database, trusting one dev issuer.
type replicaCluster struct {
	x      *sqlx.DB
	g      []*process
	iss    *devissuer.Server
	client string
}

const replicaRedirect = "http://127.0.0.1/callback"

func replicaStart(t *testing.T, n int) *replicaCluster {
	t.Helper()
	iss, err := devissuer.Start(t.Context(), devissuer.Options{
		Addr: "127.0.0.1:0",
		Users: []devissuer.User{
			{Username: "alice", Subject: "dev|alice", Email: "alice@example.com", Name: "Alice"},
			{Username: "admin", Subject: "dev|admin", Email: "admin@example.com", Name: "Admin", Roles: []string{"ADMIN"}},
		},
		Audience: "gpugate-api", ClientID: "gpugate-replicas", RedirectURIs: []string{replicaRedirect},
	})
	if err != nil {
		t.Fatalf("dev issuer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = iss.Close(ctx)
	})
	x, dsn := dbtest.NewWithDSN(t)
	c := &replicaCluster{x: x, iss: iss, client: "gpugate-replicas"}
	for range n {
		c.g = append(c.g, start(t, []string{"DATABASE_URL=" + dsn},
			"--oidc-issuer", iss.Issuer(), "--oidc-token-type", "at+jwt",
			"--allow-simulated-gpus", "--audit-flush-interval", "50ms"))
	}
	return c
}

// token signs username in at the issuer.
func (c *replicaCluster) token(t *testing.T, username string) string {
	t.Helper()
	tok, err := devissuer.FetchToken(t.Context(), c.iss.Issuer(), c.client, replicaRedirect, username)
	if err != nil {
		t.Fatalf("sign in as %s: %v", username, err)
	}
	return tok
}

// owner runs an owner or admin operation on g and decodes its data into out.
func replicaOwner(t *testing.T, g *process, token, query string, vars map[string]any, out any) {
	t.Helper()
	r := testutil.PostGraphQL(t.Context(), t, "http://"+g.addr, token, query, vars)
	r.Decode(t, out)
}

// replicaSigned posts a GraphQL request signed by key for device (empty: an enrollment) to g,
// with the exact signature header value given (so it can be replayed byte for byte).
func replicaSigned(t *testing.T, g *process, body []byte, sig string) testutil.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+g.addr+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(attest.SignatureHeader, sig)
	return testutil.Do(t, req)
}

func replicaBody(query string, vars map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return b
}

// replicaSign signs body as a worker does.
func replicaSign(key ed25519.PrivateKey, device string, body []byte) string {
	return attest.SignRequest(key, device, http.MethodPost, "/graphql", time.Now(), body)
}

func replicaHost() attest.Snapshot {
	s := attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040}
	var id [6]byte
	_, _ = rand.Read(id[:])
	s.GPUs = append(s.GPUs, attest.GPU{
		UUID: fmt.Sprintf("GPU-%x-1111-4222-8333-%x", id[:4], id), Name: "NVIDIA H100 80GB HBM3",
		PCIDeviceID: 0x2330, PCIVendorID: attest.VendorNVIDIA, BusID: "00000000:18:00.0",
		MemoryTotalBytes: 81559 << 20, Architecture: "Hopper", ComputeMajor: 9,
	})
	return s
}

// enroll enrolls a fresh worker of the token's user through g and returns its ID, credential and key.
func (c *replicaCluster) enroll(t *testing.T, g *process, token string) (string, string, ed25519.PrivateKey) {
	t.Helper()
	var tok struct{ CreateEnrollmentToken struct{ Token string } }
	replicaOwner(t, g, token, `mutation { createEnrollmentToken { token } }`, nil, &tok)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	snap, _ := json.Marshal(replicaHost())
	body := replicaBody(`mutation($in: EnrollDeviceInput!) { enrollDevice(input: $in) { deviceId credentialId } }`,
		map[string]any{"in": map[string]any{"token": tok.CreateEnrollmentToken.Token, "publicKey": base64.StdEncoding.EncodeToString(pub),
			"region": "eu-west", "hostname": "dgx-01", "snapshot": string(snap)}})
	var out struct {
		EnrollDevice struct{ DeviceID, CredentialID string }
	}
	replicaSigned(t, g, body, replicaSign(priv, "", body)).Decode(t, &out)
	return out.EnrollDevice.DeviceID, out.EnrollDevice.CredentialID, priv
}

const replicaHeartbeat = `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`

// heartbeat sends a freshly signed heartbeat of device to g.
func replicaBeat(t *testing.T, g *process, key ed25519.PrivateKey, device string) testutil.Response {
	t.Helper()
	body := replicaBody(replicaHeartbeat, map[string]any{"d": device})
	return replicaSigned(t, g, body, replicaSign(key, device, body))
}

func replicaWantOK(t *testing.T, what string, r testutil.Response) {
	t.Helper()
	if r.Status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("%s: HTTP %d %s", what, r.Status, r.RawBody)
	}
}

func replicaWantRefused(t *testing.T, what string, r testutil.Response, msg string) {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("%s: HTTP %d %s, want 401", what, r.Status, r.RawBody)
	}
	r.WantError(t, "UNAUTHENTICATED", msg)
}

// A signed request accepted by replica A and replayed byte for byte to B and C is refused
// there (REPLAYED_REQUEST in the audit log), and the heartbeat is written once.
func TestReplicasRefuseAReplayedRequest(t *testing.T) {
	t.Parallel()
	c := replicaStart(t, 3)
	alice := c.token(t, "alice")
	device, _, key := c.enroll(t, c.g[0], alice)
	body := replicaBody(replicaHeartbeat, map[string]any{"d": device})
	sig := replicaSign(key, device, body)
	replicaWantOK(t, "first use on A", replicaSigned(t, c.g[0], body, sig))
	for i, g := range c.g[1:] {
		replicaWantRefused(t, fmt.Sprintf("replayed to replica %d", i+1), replicaSigned(t, g, body, sig), "replayed request")
	}
	replicaWantRefused(t, "replayed to A", replicaSigned(t, c.g[0], body, sig), "replayed request")
	waitFor(t, func() bool {
		var n int
		if err := c.x.Get(&n, `SELECT count(*) FROM audit_events WHERE outcome = 'DENIED' AND reason = 'REPLAYED_REQUEST'
			AND target = $1`, device); err != nil {
			t.Fatal(err)
		}
		return n == 3
	})
	// A fresh signature of the same request is not a replay, on any replica.
	for i, g := range c.g {
		replicaWantOK(t, fmt.Sprintf("fresh signature on replica %d", i), replicaBeat(t, g, key, device))
	}
}

// A key revoked through A is refused by B and C on their very next request, though both
// cached it a moment before; a key added through A works on B and C at once, though both cached
// the device's keys without it; a device removed through B is refused by A and C at once.
func TestReplicasHonourKeyChangesOnTheNextRequest(t *testing.T) {
	t.Parallel()
	c := replicaStart(t, 3)
	alice := c.token(t, "alice")
	device, cred, key := c.enroll(t, c.g[0], alice)
	for i, g := range c.g {
		replicaWantOK(t, fmt.Sprintf("replica %d caches the key", i), replicaBeat(t, g, key, device))
	}
	// The key revoked through A: refused everywhere on the next request, no waiting.
	var revoked struct{ RevokeDeviceKey struct{ ID string } }
	replicaOwner(t, c.g[0], alice, `mutation($id: ID!, $c: ID!) { revokeDeviceKey(id: $id, credentialId: $c) { id } }`,
		map[string]any{"id": device, "c": cred}, &revoked)
	for _, i := range []int{1, 2, 0} {
		replicaWantRefused(t, fmt.Sprintf("the revoked key on replica %d", i), replicaBeat(t, c.g[i], key, device), "revoked key")
	}
	// Now every replica caches the device with no key. A new key, added through A, works on
	// every replica at once.
	for i, g := range c.g {
		replicaWantRefused(t, fmt.Sprintf("replica %d caches no key", i), replicaBeat(t, g, key, device), "revoked key")
	}
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	var added struct{ AddDeviceKey struct{ ID string } }
	replicaOwner(t, c.g[0], alice, `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`,
		map[string]any{"id": device, "k": base64.StdEncoding.EncodeToString(pub2)}, &added)
	for _, i := range []int{1, 2, 0} {
		replicaWantOK(t, fmt.Sprintf("the new key on replica %d at once", i), replicaBeat(t, c.g[i], key2, device))
	}
	// The device removed through B: its key refused by A and C on their next request.
	var removed struct{ RemoveDevice struct{ ID string } }
	replicaOwner(t, c.g[1], alice, `mutation($id: ID!) { removeDevice(id: $id) { id } }`, map[string]any{"id": device}, &removed)
	for _, i := range []int{0, 2, 1} {
		replicaWantRefused(t, fmt.Sprintf("the removed device on replica %d", i), replicaBeat(t, c.g[i], key2, device), "revoked key")
	}
	var live int
	if err := c.x.Get(&live, `SELECT count(*) FROM device_credentials WHERE device_id = $1 AND revoked_at IS NULL`, device); err != nil || live != 0 {
		t.Fatalf("%d unrevoked keys (%v)", live, err)
	}
}

// A kill switch set through A holds on B and C (they learn it through LISTEN/NOTIFY, or re-read
// it within seconds), and lifted through C it lifts everywhere.
func TestReplicasShareKillSwitches(t *testing.T) {
	t.Parallel()
	c := replicaStart(t, 3)
	alice, admin := c.token(t, "alice"), c.token(t, "admin")
	device, _, key := c.enroll(t, c.g[0], alice)
	var sw struct{ DisableWrites struct{ Enabled bool } }
	replicaOwner(t, c.g[0], admin, `mutation { disableWrites(class: HEARTBEATS, reason: "replica test") { enabled } }`, nil, &sw)
	for _, g := range c.g {
		waitFor(t, func() bool {
			r := replicaBeat(t, g, key, device)
			return len(r.Errors) == 1 && r.Errors[0].Code() == "DISABLED"
		})
	}
	var on struct{ EnableWrites struct{ Enabled bool } }
	replicaOwner(t, c.g[2], admin, `mutation { enableWrites(class: HEARTBEATS) { enabled } }`, nil, &on)
	for _, g := range c.g {
		waitFor(t, func() bool {
			r := replicaBeat(t, g, key, device)
			return r.Status == http.StatusOK && len(r.Errors) == 0
		})
	}
}
