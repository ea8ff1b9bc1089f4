package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// h100Host is a plausible 8-GPU DGX H100 snapshot with GPU identities derived from seed.
func h100Host(seed byte) attest.Snapshot {
	s := attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040}
	for i := range 8 {
		s.GPUs = append(s.GPUs, attest.GPU{
			UUID: fmt.Sprintf("GPU-%02x%06x-1111-4222-8333-%012x", seed, i, i), Name: "NVIDIA H100 80GB HBM3",
			PCIDeviceID: 0x2330, PCIVendorID: attest.VendorNVIDIA, BusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			MemoryTotalBytes: 81559 << 20, Architecture: "Hopper", ComputeMajor: 9, ComputeMinor: 0,
			Serial: fmt.Sprintf("1653%03d%06d", seed, i), // H100 boards report their 13-digit serial
		})
	}
	return s
}

// worker is a device key talking to the gateway with signed requests.
type worker struct {
	o        *owners
	priv     ed25519.PrivateKey
	deviceID string
}

func newWorker(o *owners) *worker {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &worker{o: o, priv: priv}
}

func (w *worker) pub() string {
	return base64.StdEncoding.EncodeToString(w.priv.Public().(ed25519.PublicKey))
}

// body encodes one operation exactly as sent, so it can be signed.
func body(query string, vars map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return b
}

// signed sends body signed by key as device (which may differ from w's own device).
func (w *worker) signed(key ed25519.PrivateKey, device string, at time.Time, b []byte, extra http.Header) response {
	h := http.Header{attest.SignatureHeader: {attest.SignRequest(key, device, "POST", "/graphql", at, b)}}
	for k, v := range extra {
		h[k] = v
	}
	return w.o.raw(http.MethodPost, "/graphql", "application/json", b, h)
}

func (w *worker) call(query string, vars map[string]any) response {
	return w.signed(w.priv, w.deviceID, time.Now(), body(query, vars), nil)
}

const enrollMutation = `mutation($in: EnrollDeviceInput!) { enrollDevice(input: $in) { deviceId credentialId } }`

func (o *owners) enrollmentToken(t *testing.T, user string) string {
	t.Helper()
	var out struct{ CreateEnrollmentToken struct{ Token string } }
	o.as(bearer(o.idp.sign(o.idp.claims(user))), `mutation { createEnrollmentToken { token expiresAt } }`, nil).Decode(t, &out)
	return out.CreateEnrollmentToken.Token
}

func (w *worker) enrollInput(token string, snap attest.Snapshot) map[string]any {
	js, _ := json.Marshal(snap)
	return map[string]any{"in": map[string]any{"token": token, "publicKey": w.pub(), "region": "eu-west",
		"hostname": "dgx-01", "snapshot": string(js)}}
}

func (w *worker) enroll(t *testing.T, token string, snap attest.Snapshot) {
	t.Helper()
	var out struct{ EnrollDevice struct{ DeviceID string } }
	w.signed(w.priv, "", time.Now(), body(enrollMutation, w.enrollInput(token, snap)), nil).Decode(t, &out)
	w.deviceID = out.EnrollDevice.DeviceID
}

// enrolledWorker returns a new worker enrolled with snap by a token of user.
func (o *owners) enrolledWorker(t *testing.T, user string, snap attest.Snapshot) *worker {
	t.Helper()
	w := newWorker(o)
	w.enroll(t, o.enrollmentToken(t, user), snap)
	return w
}

func newWorkerOwners(t *testing.T) *owners {
	t.Helper()
	p := newIDP(t)
	return newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers: resolvers.WorkerConfig{Difficulty: 8}})
}

func TestWorkerEnrollsProvesAndHeartbeats(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	w := o.enrolledWorker(t, "alice", h100Host(1))

	var owner string
	if err := o.x.Get(&owner, `SELECT owner_id FROM devices WHERE id = $1`, w.deviceID); err != nil || owner != o.alice {
		t.Fatalf("the device belongs to %q (%v), want alice", owner, err)
	}
	var dev struct {
		Device struct {
			Verification, Status, GpuModel string
			GpuCount                       int
		}
	}
	o.post(`query($id: ID!) { device(id: $id) { verification status gpuModel gpuCount } }`, map[string]any{"id": w.deviceID}).Decode(t, &dev)
	if dev.Device.Verification != "PENDING" || dev.Device.GpuCount != 8 {
		t.Fatalf("after enrollment: %+v", dev.Device)
	}

	var ch struct {
		RequestChallenge struct {
			ID, Nonce  string
			Difficulty int
		}
	}
	w.call(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty expiresAt } }`, map[string]any{"d": w.deviceID}).Decode(t, &ch)
	nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
	proof, err := attest.Prove(context.Background(), w.priv, ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty, h100Host(1))
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := json.Marshal(proof.Snapshot)
	proofVars := map[string]any{"d": w.deviceID, "in": map[string]any{"challengeId": proof.ChallengeID,
		"counter": strconv.FormatUint(proof.Counter, 10), "snapshot": string(snap),
		"signature": base64.StdEncoding.EncodeToString(proof.Signature)}}
	const submit = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification } }`
	var res struct {
		SubmitProof struct {
			Verdict, Verification string
			Reasons               []string
		}
	}
	w.call(submit, proofVars).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" || res.SubmitProof.Verification != "VERIFIED" {
		t.Fatalf("genuine proof: %+v", res.SubmitProof)
	}
	// The same proof again (a retry): its original verdict, nothing stored.
	w.call(submit, proofVars).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" || res.SubmitProof.Verification != "VERIFIED" {
		t.Fatalf("retried proof: %+v", res.SubmitProof)
	}
	// Another proof for the spent challenge: the challenge is spent, the verdict says so.
	proofVars["in"].(map[string]any)["counter"] = strconv.FormatUint(proof.Counter+1, 10)
	w.call(submit, proofVars).Decode(t, &res)
	if res.SubmitProof.Verdict != "FLAGGED" || strings.Join(res.SubmitProof.Reasons, ",") != "CHALLENGE_REPLAYED" {
		t.Fatalf("replayed proof: %+v", res.SubmitProof)
	}

	var hb struct {
		Heartbeat struct {
			Status        string
			NextInSeconds int
		}
	}
	w.call(`mutation($d: ID!, $in: HeartbeatInput!) { heartbeat(deviceId: $d, input: $in) { status nextInSeconds } }`,
		map[string]any{"d": w.deviceID, "in": map[string]any{"gpus": []map[string]any{{"uuid": "GPU-x", "utilizationPercent": 97, "temperatureC": 61}}}}).Decode(t, &hb)
	if hb.Heartbeat.Status != "UP" || hb.Heartbeat.NextInSeconds != 30 {
		t.Fatalf("heartbeat: %+v", hb.Heartbeat)
	}
	// The owner sees the verdicts and the key; the public sees the device as UP (and flagged by
	// the replay, the latest verdict).
	var priv struct {
		Device struct {
			Status  string
			Private struct {
				Credentials []struct {
					Fingerprint string
					LastUsedAt  *time.Time
				}
				Attestations []struct {
					Verdict string
					Reasons []string
				}
			}
		}
	}
	o.as(bearer(o.idp.sign(o.idp.claims("alice"))), `query($id: ID!) { device(id: $id) { status private {
		credentials { fingerprint lastUsedAt } attestations { verdict reasons } } } }`, map[string]any{"id": w.deviceID}).Decode(t, &priv)
	if priv.Device.Status != "UP" || len(priv.Device.Private.Credentials) != 1 || len(priv.Device.Private.Attestations) != 2 ||
		priv.Device.Private.Attestations[0].Verdict != "FLAGGED" || priv.Device.Private.Credentials[0].LastUsedAt == nil {
		t.Fatalf("owner view: %+v", priv.Device)
	}
}

// Every worker mutation refuses everyone but the device's own, fresh, unreplayed signature, and
// a refused request changes nothing.
func TestWorkerRequestsNeedTheDevicesOwnSignature(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	a, b := newWorker(o), newWorker(o)
	a.enroll(t, o.enrollmentToken(t, "alice"), h100Host(2))
	b.enroll(t, o.enrollmentToken(t, "bob"), h100Host(3))
	heartbeat := body(`mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`, map[string]any{"d": a.deviceID})
	challenge := body(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id } }`, map[string]any{"d": a.deviceID})
	replayed := attest.SignRequest(a.priv, a.deviceID, "POST", "/graphql", time.Now(), heartbeat)
	if r := o.raw(http.MethodPost, "/graphql", "application/json", heartbeat, http.Header{attest.SignatureHeader: {replayed}}); len(r.Errors) > 0 {
		t.Fatalf("the original request: %s", r.RawBody)
	}
	state := func() string {
		var s string
		if err := o.x.Get(&s, `SELECT coalesce(last_seen_at::text, '') || (SELECT count(*) FROM challenges)::text FROM devices WHERE id = $1`, a.deviceID); err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	tampered := append([]byte{}, heartbeat...)
	tampered[len(tampered)-3] = ' '
	cases := []struct {
		name   string
		send   func(b []byte) response
		status int
		code   string
	}{
		{"unsigned", func(bd []byte) response { return o.raw(http.MethodPost, "/graphql", "application/json", bd, nil) }, 200, "UNAUTHENTICATED"},
		{"the owner's user token", func(bd []byte) response {
			return o.raw(http.MethodPost, "/graphql", "application/json", bd, bearer(o.idp.sign(o.idp.claims("alice"))))
		}, 200, "UNAUTHENTICATED"},
		{"admin token", func(bd []byte) response {
			return o.raw(http.MethodPost, "/graphql", "application/json", bd, bearer(o.idp.sign(o.idp.claims("admin", "ADMIN"))))
		}, 200, "UNAUTHENTICATED"},
		{"device B's valid signature", func(bd []byte) response { return b.signed(b.priv, b.deviceID, time.Now(), bd, nil) }, 200, "FORBIDDEN"},
		{"B's key claiming to be A", func(bd []byte) response { return b.signed(b.priv, a.deviceID, time.Now(), bd, nil) }, 401, "UNAUTHENTICATED"},
		{"a stranger's key", func(bd []byte) response { return a.signed(stranger, a.deviceID, time.Now(), bd, nil) }, 401, "UNAUTHENTICATED"},
		{"stale timestamp", func(bd []byte) response {
			return a.signed(a.priv, a.deviceID, time.Now().Add(-10*time.Minute), bd, nil)
		}, 401, "UNAUTHENTICATED"},
		{"future timestamp", func(bd []byte) response { return a.signed(a.priv, a.deviceID, time.Now().Add(10*time.Minute), bd, nil) }, 401, "UNAUTHENTICATED"},
		{"replayed request", func(bd []byte) response {
			return o.raw(http.MethodPost, "/graphql", "application/json", heartbeat, http.Header{attest.SignatureHeader: {replayed}})
		}, 401, "UNAUTHENTICATED"},
		{"body changed after signing", func(bd []byte) response {
			sig := attest.SignRequest(a.priv, a.deviceID, "POST", "/graphql", time.Now(), heartbeat)
			return o.raw(http.MethodPost, "/graphql", "application/json", tampered, http.Header{attest.SignatureHeader: {sig}})
		}, 401, "UNAUTHENTICATED"},
		{"garbage signature header", func(bd []byte) response {
			return o.raw(http.MethodPost, "/graphql", "application/json", bd, http.Header{attest.SignatureHeader: {"v1 device=' OR 1=1 -- ts=1 sig=x"}})
		}, 401, "UNAUTHENTICATED"},
		{"forged device headers", func(bd []byte) response {
			return o.raw(http.MethodPost, "/graphql", "application/json", bd, http.Header{"X-Device-Id": {a.deviceID}, "X-User-Id": {o.alice}})
		}, 200, "UNAUTHENTICATED"},
	}
	for _, op := range []struct {
		name string
		body []byte
	}{{"heartbeat", heartbeat}, {"requestChallenge", challenge}} {
		for _, c := range cases {
			t.Run(op.name+"/"+c.name, func(t *testing.T) {
				before := state()
				r := c.send(op.body)
				if r.Status != c.status {
					t.Fatalf("HTTP %d, want %d: %s", r.Status, c.status, r.RawBody)
				}
				r.WantError(t, c.code, "")
				if after := state(); after != before {
					t.Fatalf("refused request changed the device: %s -> %s", before, after)
				}
			})
		}
	}
}

func TestEnrollmentRules(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	w := newWorker(o)
	token := o.enrollmentToken(t, "alice")
	devices := func() int {
		var n int
		if err := o.x.Get(&n, `SELECT count(*) FROM devices`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := devices()
	in := w.enrollInput(token, h100Host(4))
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	// Unsigned, or signed by another key than the one enrolled: refused, token still usable.
	o.raw(http.MethodPost, "/graphql", "application/json", body(enrollMutation, in), nil).WantError(t, "UNAUTHENTICATED", "")
	w.signed(other, "", time.Now(), body(enrollMutation, in), nil).WantError(t, "UNAUTHENTICATED", "enrollment signature invalid")
	if devices() != before {
		t.Fatal("a refused enrollment created a device")
	}
	w.enroll(t, token, h100Host(4))
	// The token is single use, even for another key.
	w2 := newWorker(o)
	w2.signed(w2.priv, "", time.Now(), body(enrollMutation, w2.enrollInput(token, h100Host(5))), nil).
		WantError(t, "BAD_USER_INPUT", "unknown, expired or already used")
	w2.signed(w2.priv, "", time.Now(), body(enrollMutation, w2.enrollInput("gpe_forged", h100Host(5))), nil).
		WantError(t, "BAD_USER_INPUT", "unknown, expired or already used")
	if devices() != before+1 {
		t.Fatalf("devices: %d, want %d", devices(), before+1)
	}
	// Only a hash of the token is stored.
	var leaked int
	if err := o.x.Get(&leaked, `SELECT count(*) FROM enrollment_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'`, token[4:20]); err != nil || leaked != 0 {
		t.Fatalf("the token is stored in clear: %d %v", leaked, err)
	}
	// Anonymous callers cannot create tokens.
	o.post(`mutation { createEnrollmentToken { token } }`, nil).WantError(t, "UNAUTHENTICATED", "")
}

func TestKeyRotationAndRevocation(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	w := o.enrolledWorker(t, "alice", h100Host(6))
	alice := bearer(o.idp.sign(o.idp.claims("alice")))
	hb := `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`
	var creds struct {
		Device struct {
			Private struct{ Credentials []struct{ ID string } }
		}
	}
	o.as(alice, `query($id: ID!) { device(id: $id) { private { credentials { id } } } }`, map[string]any{"id": w.deviceID}).Decode(t, &creds)
	oldCred := creds.Device.Private.Credentials[0].ID

	_, next, _ := ed25519.GenerateKey(rand.Reader)
	nextPub := base64.StdEncoding.EncodeToString(next.Public().(ed25519.PublicKey))
	// bob cannot add a key to alice's device.
	o.as(bearer(o.idp.sign(o.idp.claims("bob"))), `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`,
		map[string]any{"id": w.deviceID, "k": nextPub}).WantError(t, "FORBIDDEN", "")
	var added struct {
		AddDeviceKey struct{ ID, Fingerprint string }
	}
	o.as(alice, `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id fingerprint } }`,
		map[string]any{"id": w.deviceID, "k": nextPub}).Decode(t, &added)
	if w.signed(next, w.deviceID, time.Now(), body(hb, map[string]any{"d": w.deviceID}), nil).Errors != nil {
		t.Fatal("the new key is refused")
	}
	if r := w.call(hb, map[string]any{"d": w.deviceID}); r.Errors != nil {
		t.Fatalf("the old key, not yet revoked: %s", r.RawBody)
	}
	o.as(alice, `mutation($id: ID!, $c: ID!) { revokeDeviceKey(id: $id, credentialId: $c) { revokedAt } }`,
		map[string]any{"id": w.deviceID, "c": oldCred}).Decode(t, &struct{}{})
	// Revoked: refused at once, not after a cache expires.
	r := w.call(hb, map[string]any{"d": w.deviceID})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("revoked key: HTTP %d %s", r.Status, r.RawBody)
	}
	if w.signed(next, w.deviceID, time.Now(), body(hb, map[string]any{"d": w.deviceID}), nil).Errors != nil {
		t.Fatal("the new key stopped working after the old one was revoked")
	}
}

// A bad heartbeat fails only its sender, never the batch it shared with other devices.
func TestBadHeartbeatFailsOnlyItsSender(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	good, bad := newWorker(o), newWorker(o)
	good.enroll(t, o.enrollmentToken(t, "alice"), h100Host(7))
	bad.enroll(t, o.enrollmentToken(t, "bob"), h100Host(8))
	hb := `mutation($d: ID!, $in: HeartbeatInput!) { heartbeat(deviceId: $d, input: $in) { status } }`
	for _, uuid := range []string{"GPU-a\x00", "GPU-\u202e", strings.Repeat("x", 97)} {
		done := make(chan response, 1)
		go func() {
			done <- good.call(hb, map[string]any{"d": good.deviceID, "in": map[string]any{"gpus": []map[string]any{{"uuid": "GPU-ok"}}}})
		}()
		bad.call(hb, map[string]any{"d": bad.deviceID, "in": map[string]any{"gpus": []map[string]any{{"uuid": uuid}}}}).
			WantError(t, "BAD_USER_INPUT", "gpus.uuid")
		if r := <-done; len(r.Errors) > 0 {
			t.Fatalf("a good heartbeat failed next to a bad one: %s", r.RawBody)
		}
	}
}

// A device created before workers enrolled themselves (no enrollment snapshot) gets a worker
// key from its owner; its first passing proof becomes the baseline.
func TestDeviceWithoutEnrollmentSnapshotCanProve(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	w := newWorker(o)
	w.deviceID = o.aliceDevice
	o.as(bearer(o.idp.sign(o.idp.claims("alice"))), `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`,
		map[string]any{"id": w.deviceID, "k": w.pub()}).Decode(t, &struct{}{})
	prove := func() string {
		var ch struct {
			RequestChallenge struct {
				ID, Nonce  string
				Difficulty int
			}
		}
		w.call(`mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`, map[string]any{"d": w.deviceID}).Decode(t, &ch)
		nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
		p, err := attest.Prove(context.Background(), w.priv, ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty, h100Host(9))
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := json.Marshal(p.Snapshot)
		var res struct{ SubmitProof struct{ Verdict string } }
		w.call(`mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict } }`,
			map[string]any{"d": w.deviceID, "in": map[string]any{"challengeId": p.ChallengeID, "counter": strconv.FormatUint(p.Counter, 10),
				"snapshot": string(snap), "signature": base64.StdEncoding.EncodeToString(p.Signature)}}).Decode(t, &res)
		return res.SubmitProof.Verdict
	}
	if v := prove(); v != "PASSED" {
		t.Fatalf("first proof: %s", v)
	}
	var baseline bool
	if err := o.x.Get(&baseline, `SELECT enrollment_snapshot IS NOT NULL FROM devices WHERE id = $1`, w.deviceID); err != nil || !baseline {
		t.Fatalf("no baseline after the first passing proof: %v", err)
	}
	if v := prove(); v != "PASSED" {
		t.Fatalf("second proof against the baseline: %s", v)
	}
}
