package gateway_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/oidc"
)

const audience = "gpugate-api"

// idp is an OpenID provider for tests: go-oidc's oidctest server (discovery + JWKS) with one
// advertised key, and a second key it never advertises.
type idp struct {
	url          string
	key, rogue   *rsa.PrivateKey
	verifier     *oidc.Verifier
	publicKeyDER []byte
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	rogue, _ := rsa.GenerateKey(rand.Reader, 2048)
	ots := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "RS256"}}}
	srv := httptest.NewServer(ots)
	t.Cleanup(srv.Close)
	ots.SetIssuer(srv.URL)
	v, err := oidc.New(context.Background(), oidc.Config{Issuers: []oidc.IssuerConfig{{URL: srv.URL, Audience: audience, RolesClaim: "groups"}}})
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	return &idp{url: srv.URL, key: key, rogue: rogue, verifier: v, publicKeyDER: der}
}

// claims returns valid access-token claims for subject, to be adjusted by a test.
func (p *idp) claims(sub string, groups ...string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": p.url, "sub": sub, "aud": []string{audience}, "iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "email": sub + "@example.com", "email_verified": true,
		"groups": append([]string{}, groups...)}
}

func (p *idp) sign(claims map[string]any) string { return p.signWith(p.key, "k1", claims) }

func (p *idp) signWith(key *rsa.PrivateKey, kid string, claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return oidctest.SignIDToken(key, kid, "RS256", string(b))
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// owners is a gateway whose database has alice's, bob's and admin's identities at the test IdP.
type owners struct {
	*env
	idp                   *idp
	alice, bob, admin     string // user ids
	aliceDevice, bobDevic string
}

func newOwners(t *testing.T) *owners {
	t.Helper()
	p := newIDP(t)
	return newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}})
}

func newOwnersWith(t *testing.T, p *idp, cfg gateway.Config) *owners {
	t.Helper()
	e := newEnv(t, 40, cfg)
	o := &owners{env: e, idp: p}
	for _, u := range []struct {
		name string
		id   *string
	}{{"alice", &o.alice}, {"bob", &o.bob}, {"admin", &o.admin}} {
		if err := e.db.LinkIdentity(context.Background(), db.Identity{Issuer: p.url, Subject: u.name}, u.name+"@example.com", "mapping"); err != nil {
			t.Fatal(err)
		}
		if err := e.x.Get(u.id, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, p.url, u.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.x.Get(&o.aliceDevice, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, o.alice); err != nil {
		t.Fatal(err)
	}
	if err := e.x.Get(&o.bobDevic, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 1`, o.bob); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *owners) as(header http.Header, query string, vars map[string]any) response {
	o.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return o.raw(http.MethodPost, "/graphql", "application/json", body, header)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// snapshot is everything a write could change about the target device.
func (o *owners) snapshot(id string) string {
	o.t.Helper()
	var s string
	err := o.x.Get(&s, `SELECT coalesce((SELECT row_to_json(d)::text FROM devices d WHERE id = $1), 'absent')
		|| (SELECT count(*) FROM gpus WHERE device_id = $1)::text
		|| (SELECT count(*) FROM devices)::text`, id)
	if err != nil {
		o.t.Fatal(err)
	}
	return s
}

// The authorization matrix: every mutation and owner-only field × every kind of caller, with the
// exact outcome, and the database unchanged whenever the caller is refused.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	type caller struct {
		name   string
		header func(o *owners) http.Header
		// invalid token: the request is refused before GraphQL (HTTP 401, UNAUTHENTICATED).
		invalid bool
	}
	p0 := func(o *owners) *idp { return o.idp }
	callers := []caller{
		{"anonymous", func(o *owners) http.Header { return nil }, false},
		{"garbage token", func(o *owners) http.Header { return bearer("garbage") }, true},
		{"empty bearer", func(o *owners) http.Header { return http.Header{"Authorization": {"Bearer "}} }, true},
		{"basic auth", func(o *owners) http.Header { return http.Header{"Authorization": {"Basic YWxpY2U6eA=="}} }, true},
		{"alg none", func(o *owners) http.Header {
			return bearer(b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + b64(p0(o).claims("alice")) + ".")
		}, true},
		{"HS256 signed with the public key", func(o *owners) http.Header {
			signing := b64(map[string]string{"alg": "HS256", "typ": "JWT", "kid": "k1"}) + "." + b64(p0(o).claims("alice"))
			mac := hmac.New(sha256.New, o.idp.publicKeyDER)
			mac.Write([]byte(signing))
			return bearer(signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)))
		}, true},
		{"wrong issuer", func(o *owners) http.Header {
			c := o.idp.claims("alice")
			c["iss"] = "https://issuer.example"
			return bearer(o.idp.sign(c))
		}, true},
		{"wrong audience", func(o *owners) http.Header {
			c := o.idp.claims("alice")
			c["aud"] = []string{"another-api"}
			return bearer(o.idp.sign(c))
		}, true},
		{"expired", func(o *owners) http.Header {
			c := o.idp.claims("alice")
			c["exp"], c["iat"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
			return bearer(o.idp.sign(c))
		}, true},
		{"not yet valid", func(o *owners) http.Header {
			c := o.idp.claims("alice")
			c["nbf"], c["iat"] = time.Now().Add(time.Hour).Unix(), time.Now().Add(time.Hour).Unix()
			c["exp"] = time.Now().Add(2 * time.Hour).Unix()
			return bearer(o.idp.sign(c))
		}, true},
		{"unknown kid", func(o *owners) http.Header {
			return bearer(o.idp.signWith(o.idp.rogue, "k-unknown", o.idp.claims("alice")))
		}, true},
		{"valid signature from another key", func(o *owners) http.Header {
			return bearer(o.idp.signWith(o.idp.rogue, "k1", o.idp.claims("alice")))
		}, true},
		{"tampered payload", func(o *owners) http.Header {
			parts := strings.Split(o.idp.sign(o.idp.claims("bob")), ".")
			parts[1] = b64(o.idp.claims("alice"))
			return bearer(strings.Join(parts, "."))
		}, true},
		{"forged identity headers", func(o *owners) http.Header {
			return http.Header{"X-User-Id": {o.alice}, "X-Owner-Id": {o.alice}, "X-Device-Id": {o.aliceDevice},
				"X-Forwarded-User": {"alice"}, "X-Auth-Request-Email": {"alice@example.com"}}
		}, false},
		{"another user", func(o *owners) http.Header { return bearer(o.idp.sign(o.idp.claims("bob"))) }, false},
		{"another user with forged headers", func(o *owners) http.Header {
			h := bearer(o.idp.sign(o.idp.claims("bob")))
			h.Set("X-User-Id", o.alice)
			return h
		}, false},
		{"owner", func(o *owners) http.Header { return bearer(o.idp.sign(o.idp.claims("alice"))) }, false},
		{"admin", func(o *owners) http.Header { return bearer(o.idp.sign(o.idp.claims("admin", "ADMIN"))) }, false},
		{"owner claiming admin in another claim", func(o *owners) http.Header {
			c := o.idp.claims("alice")
			c["roles"] = []string{"ADMIN"}
			return bearer(o.idp.sign(c))
		}, false},
	}
	type op struct {
		name, query string
		write       bool
	}
	ops := []op{
		{"updateDevice", `mutation($id: ID!) { updateDevice(id: $id, input: {name: "vandalised", labels: ["x"]}) { id name } }`, true},
		{"pauseDevice", `mutation($id: ID!) { pauseDevice(id: $id) { id status } }`, true},
		{"resumeDevice", `mutation($id: ID!) { resumeDevice(id: $id) { id status } }`, true},
		{"quarantineDevice", `mutation($id: ID!) { quarantineDevice(id: $id, reason: "spoofed GPUs") { id status } }`, true},
		{"releaseDevice", `mutation($id: ID!) { releaseDevice(id: $id) { id status } }`, true},
		// GPU_UUID is one of the target device's own GPUs: for an admin the award is a no-op.
		{"reassignGpu", `mutation($id: ID!) { reassignGpu(uuid: "GPU_UUID", deviceId: $id) { id gpuCount } }`, true},
		{"gpuConflicts", `{ gpuConflicts(first: 10) { uuid claimant { id } holder { id } sameOwner } }`, false},
		{"device.private", `query($id: ID!) { device(id: $id) { id private { hostname labels } } }`, false},
		{"viewer", `{ viewer { id devices(first: 5) { edges { node { id } } } } }`, false},
		{"removeDevice", `mutation($id: ID!) { removeDevice(id: $id) { id } }`, true},
	}
	// want[caller][op]: "ok", "null" (private field hidden, no error) or the error code.
	ownerOps := map[string]string{"updateDevice": "ok", "pauseDevice": "ok", "resumeDevice": "ok",
		"quarantineDevice": "FORBIDDEN", "releaseDevice": "FORBIDDEN", "reassignGpu": "FORBIDDEN", "gpuConflicts": "FORBIDDEN",
		"device.private": "ok", "viewer": "ok", "removeDevice": "ok"}
	unauth := map[string]string{"updateDevice": "UNAUTHENTICATED", "pauseDevice": "UNAUTHENTICATED",
		"resumeDevice": "UNAUTHENTICATED", "quarantineDevice": "UNAUTHENTICATED", "releaseDevice": "UNAUTHENTICATED",
		"reassignGpu": "UNAUTHENTICATED", "gpuConflicts": "UNAUTHENTICATED",
		"device.private": "null", "viewer": "UNAUTHENTICATED", "removeDevice": "UNAUTHENTICATED"}
	other := map[string]string{"updateDevice": "FORBIDDEN", "pauseDevice": "FORBIDDEN", "resumeDevice": "FORBIDDEN",
		"quarantineDevice": "FORBIDDEN", "releaseDevice": "FORBIDDEN", "reassignGpu": "FORBIDDEN", "gpuConflicts": "FORBIDDEN",
		"device.private": "null", "viewer": "ok", "removeDevice": "FORBIDDEN"}
	admin := map[string]string{"updateDevice": "FORBIDDEN", "pauseDevice": "FORBIDDEN", "resumeDevice": "FORBIDDEN",
		"quarantineDevice": "ok", "releaseDevice": "ok", "reassignGpu": "ok", "gpuConflicts": "ok",
		"device.private": "null", "viewer": "ok", "removeDevice": "FORBIDDEN"}
	want := map[string]map[string]string{
		"anonymous": unauth, "forged identity headers": unauth,
		"another user": other, "another user with forged headers": other,
		"owner": ownerOps, "owner claiming admin in another claim": ownerOps, "admin": admin,
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := newOwners(t)
			header := c.header(o)
			var gpu string
			if err := o.x.Get(&gpu, `SELECT uuid FROM gpus WHERE device_id = $1 ORDER BY idx LIMIT 1`, o.aliceDevice); err != nil {
				t.Fatal(err)
			}
			for _, op := range ops {
				before := o.snapshot(o.aliceDevice)
				r := o.as(header, strings.ReplaceAll(op.query, "GPU_UUID", gpu), map[string]any{"id": o.aliceDevice})
				outcome := want[c.name][op.name]
				if c.invalid {
					outcome = "UNAUTHENTICATED"
					if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") == "" {
						t.Fatalf("%s: an invalid token must be refused with 401, got %d: %s", op.name, r.Status, r.RawBody)
					}
				}
				switch outcome {
				case "ok":
					if len(r.Errors) > 0 || r.Status != http.StatusOK || strings.Contains(string(r.Data), "null") && op.name == "device.private" {
						t.Fatalf("%s: want success, got HTTP %d: %s", op.name, r.Status, r.RawBody)
					}
				case "null":
					if len(r.Errors) > 0 || !strings.Contains(string(r.Data), `"private":null`) {
						t.Fatalf("%s: want private null and no error, got %s", op.name, r.RawBody)
					}
				default:
					r.WantError(t, outcome, "")
					if strings.Contains(r.RawBody, o.alice) {
						t.Fatalf("%s: the refusal names the owner: %s", op.name, r.RawBody)
					}
				}
				if op.write && outcome != "ok" {
					if after := o.snapshot(o.aliceDevice); after != before {
						t.Fatalf("%s refused (%s) but the database changed:\nbefore %s\nafter  %s", op.name, outcome, before, after)
					}
				}
			}
		})
	}
}

func TestOwnerMutationsChangeWhatTheyShould(t *testing.T) {
	t.Parallel()
	o := newOwners(t)
	alice := bearer(o.idp.sign(o.idp.claims("alice")))
	adm := bearer(o.idp.sign(o.idp.claims("admin", "ADMIN")))
	vars := map[string]any{"id": o.aliceDevice}
	if _, err := o.x.Exec(`UPDATE devices SET last_seen_at = now(), status = 'UP', paused = false, quarantined_at = NULL WHERE id = $1`, o.aliceDevice); err != nil {
		t.Fatal(err)
	}
	status := func() string {
		var s struct{ Device struct{ Status string } }
		o.post(`query($id: ID!) { device(id: $id) { status } }`, vars).Decode(t, &s)
		return s.Device.Status
	}
	type dev struct {
		Name    string
		Status  string
		Private *struct {
			Labels           []string
			Paused           bool
			QuarantineReason *string
		}
	}
	var out struct{ UpdateDevice dev }
	o.as(alice, `mutation($id: ID!) { updateDevice(id: $id, input: {name: "  Cafe\u0301 rig  ", labels: ["lab", "lab", "gpu"]}) {
		name status private { labels paused } } }`, vars).Decode(t, &out)
	if out.UpdateDevice.Name != "Café rig" || strings.Join(out.UpdateDevice.Private.Labels, ",") != "lab,gpu" {
		t.Fatalf("update: %+v", out.UpdateDevice)
	}
	// Omitted fields keep their value.
	o.as(alice, `mutation($id: ID!) { updateDevice(id: $id, input: {labels: []}) { name private { labels } } }`, vars).Decode(t, &out)
	if out.UpdateDevice.Name != "Café rig" || len(out.UpdateDevice.Private.Labels) != 0 {
		t.Fatalf("partial update: %+v", out.UpdateDevice)
	}
	var pr struct{ PauseDevice dev }
	o.as(alice, `mutation($id: ID!) { pauseDevice(id: $id) { status private { paused } } }`, vars).Decode(t, &pr)
	if pr.PauseDevice.Status != "PAUSED" || !pr.PauseDevice.Private.Paused || status() != "PAUSED" {
		t.Fatalf("pause: %+v", pr)
	}
	var qr struct{ QuarantineDevice dev }
	o.as(adm, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "cloned GPU UUIDs") { status } }`, vars).Decode(t, &qr)
	if qr.QuarantineDevice.Status != "QUARANTINED" {
		t.Fatalf("quarantine: %+v", qr)
	}
	// Resuming a quarantined device does not lift the quarantine; the owner sees the reason.
	var rr struct{ ResumeDevice dev }
	o.as(alice, `mutation($id: ID!) { resumeDevice(id: $id) { status private { paused quarantineReason } } }`, vars).Decode(t, &rr)
	if rr.ResumeDevice.Status != "QUARANTINED" || rr.ResumeDevice.Private.Paused ||
		rr.ResumeDevice.Private.QuarantineReason == nil || *rr.ResumeDevice.Private.QuarantineReason != "cloned GPU UUIDs" {
		t.Fatalf("resume while quarantined: %+v", rr.ResumeDevice)
	}
	var rel struct{ ReleaseDevice dev }
	o.as(adm, `mutation($id: ID!) { releaseDevice(id: $id) { status } }`, vars).Decode(t, &rel)
	if rel.ReleaseDevice.Status != "UP" {
		t.Fatalf("release of a device with a fresh heartbeat: %+v", rel)
	}
	// The public listing and stats see the new state; the owner's list has the device.
	var viewer struct {
		Viewer struct {
			ID      string
			Devices connection
		}
	}
	o.as(alice, `{ viewer { id devices(first: 100) { edges { node { id name } } pageInfo { hasNextPage } } } }`, nil).Decode(t, &viewer)
	if viewer.Viewer.ID != o.alice {
		t.Fatalf("viewer id %s, want alice's %s", viewer.Viewer.ID, o.alice)
	}
	mine := o.ids("owner_id = $1", o.alice)
	if got := nodeIDs(func() []node {
		var ns []node
		for _, e := range viewer.Viewer.Devices.Edges {
			ns = append(ns, e.Node)
		}
		return ns
	}()); strings.Join(got, ",") != strings.Join(mine, ",") {
		t.Fatalf("viewer.devices %v, want alice's %v", got, mine)
	}
	var rm struct{ RemoveDevice struct{ ID string } }
	o.as(alice, `mutation($id: ID!) { removeDevice(id: $id) { id } }`, vars).Decode(t, &rm)
	if rm.RemoveDevice.ID != o.aliceDevice {
		t.Fatalf("remove: %+v", rm)
	}
	// Removal is soft: the device is gone from every view, its row and GPU claims stay as evidence.
	o.post(`query($id: ID!) { device(id: $id) { id } }`, vars).WantError(t, "NOT_FOUND", "device not found")
	var removed bool
	if err := o.x.Get(&removed, `SELECT removed_at IS NOT NULL AND gpu_count = (SELECT count(*) FROM gpus WHERE device_id = $1)
		FROM devices WHERE id = $1`, o.aliceDevice); err != nil || !removed {
		t.Fatalf("remove: row not kept as removed (%v)", err)
	}
	o.as(alice, `mutation($id: ID!) { removeDevice(id: $id) { id } }`, vars).WantError(t, "NOT_FOUND", "device not found")
}

func TestOwnerInputIsValidated(t *testing.T) {
	t.Parallel()
	o := newOwners(t)
	alice := bearer(o.idp.sign(o.idp.claims("alice")))
	adm := bearer(o.idp.sign(o.idp.claims("admin", "ADMIN")))
	labels17 := make([]string, 17)
	for i := range labels17 {
		labels17[i] = fmt.Sprintf("l%d", i)
	}
	cases := []struct {
		name   string
		header http.Header
		query  string
		vars   map[string]any
		msg    string
	}{
		{"empty name", alice, `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id } }`, map[string]any{"n": "   "}, "name must be 1 to 64"},
		{"long name", alice, `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id } }`, map[string]any{"n": strings.Repeat("é", 65)}, "name must be 1 to 64"},
		{"control character", alice, `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id } }`, map[string]any{"n": "rig\x00"}, "control or format"},
		{"right-to-left override", alice, `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id } }`, map[string]any{"n": "rig\u202egnp.exe"}, "control or format"},
		{"newline", alice, `mutation($id: ID!, $n: String) { updateDevice(id: $id, input: {name: $n}) { id } }`, map[string]any{"n": "a\nb"}, "control or format"},
		{"too many labels", alice, `mutation($id: ID!, $l: [String!]) { updateDevice(id: $id, input: {labels: $l}) { id } }`, map[string]any{"l": labels17}, "at most 16"},
		{"long label", alice, `mutation($id: ID!, $l: [String!]) { updateDevice(id: $id, input: {labels: $l}) { id } }`, map[string]any{"l": []string{strings.Repeat("x", 33)}}, "labels must be 1 to 32"},
		{"malformed id", alice, `mutation { updateDevice(id: "1 OR 1=1", input: {name: "x"}) { id } }`, nil, "not a valid device ID"},
		{"empty reason", adm, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "") { id } }`, nil, "reason must be 1 to 200"},
		{"unknown device", alice, `mutation { pauseDevice(id: "00000000-0000-4000-8000-000000000000") { id } }`, nil, "device not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vars := map[string]any{"id": o.aliceDevice}
			for k, v := range c.vars {
				vars[k] = v
			}
			before := o.snapshot(o.aliceDevice)
			r := o.as(c.header, c.query, vars)
			code := "BAD_USER_INPUT"
			if c.name == "unknown device" {
				code = "NOT_FOUND"
			}
			r.WantError(t, code, c.msg)
			if o.snapshot(o.aliceDevice) != before {
				t.Fatal("a refused write changed the device")
			}
		})
	}
}

func TestFirstRequestProvisionsExactlyOneUser(t *testing.T) {
	t.Parallel()
	o := newOwners(t)
	token := bearer(o.idp.sign(o.idp.claims("carol")))
	var before int
	if err := o.x.Get(&before, `SELECT count(*) FROM users`); err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 8)
	for range 8 {
		go func() {
			var v struct{ Viewer struct{ ID, Email string } }
			r := o.as(token, `{ viewer { id email } }`, nil)
			if len(r.Errors) > 0 {
				ids <- "error: " + r.RawBody
				return
			}
			_ = json.Unmarshal(r.Data, &v)
			ids <- v.Viewer.ID
		}()
	}
	first := <-ids
	for range 7 {
		if id := <-ids; id != first {
			t.Fatalf("concurrent first requests got different users: %s vs %s", first, id)
		}
	}
	var after int
	if err := o.x.Get(&after, `SELECT count(*) FROM users`); err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Fatalf("users: %d -> %d, want exactly one new", before, after)
	}
	// A new identity is a new user even if its email matches an existing account: no silent merge.
	if first == o.alice || first == o.bob {
		t.Fatal("a new identity was merged into an existing user")
	}
	var viewer struct {
		Viewer struct{ Devices connection }
	}
	o.as(token, `{ viewer { devices(first: 10) { edges { node { id } } } } }`, nil).Decode(t, &viewer)
	if len(viewer.Viewer.Devices.Edges) != 0 {
		t.Fatalf("a new user owns devices: %+v", viewer)
	}
}
