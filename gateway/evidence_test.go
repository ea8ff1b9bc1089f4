package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/resolvers"
)

const (
	submitProofMutation = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification } }`
	challengeMutation   = `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty expiresAt } }`
	heartbeatMutation   = `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`
)

func newEvidenceOwners(t *testing.T, w resolvers.WorkerConfig) *owners {
	t.Helper()
	p := newIDP(t)
	if w.Difficulty == 0 {
		w.Difficulty = 8
	}
	return newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}, Workers: w})
}

// bulky returns s as JSON grown to at least size bytes with insignificant whitespace. Since CC
// evidence left the snapshot (it travels in ProofInput.evidence), no valid field makes a
// snapshot this large; the budget applies to the bytes received, so padding tests it as well.
func bulky(s attest.Snapshot, size int) string {
	js, _ := json.Marshal(s)
	return string(js) + strings.Repeat(" ", max(1, size-len(js))) // spaces: no escaping in the GraphQL string
}

func (w *worker) challenge(t *testing.T) (string, []byte, int) {
	t.Helper()
	var ch struct {
		RequestChallenge struct {
			ID, Nonce  string
			Difficulty int
		}
	}
	w.call(challengeMutation, map[string]any{"d": w.deviceID}).Decode(t, &ch)
	nonce, _ := base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
	return ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty
}

func proofVars(deviceID string, p attest.Proof) map[string]any {
	snap, _ := json.Marshal(p.Snapshot)
	return proofVarsJSON(deviceID, p, string(snap))
}

// proofVarsJSON is proofVars with the snapshot JSON as given.
func proofVarsJSON(deviceID string, p attest.Proof, snap string) map[string]any {
	return map[string]any{"d": deviceID, "in": map[string]any{"challengeId": p.ChallengeID,
		"counter": strconv.FormatUint(p.Counter, 10), "snapshot": snap,
		"signature": base64.StdEncoding.EncodeToString(p.Signature)}}
}

// submitProofResponse is the data of a submitProof mutation (proofResult: lifecycle_test.go).
type submitProofResponse struct{ SubmitProof proofResult }

func (o *owners) attestationsBytes(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := o.x.Get(&n, `SELECT pg_total_relation_size('attestations')`); err != nil {
		t.Fatal(err)
	}
	return n
}

// Item 4: the flooding attack. A device key used to store a ~1 MB snapshot with every proof that
// named a made-up challenge id (20 calls grew attestations by 22 MB). Now an oversized snapshot
// is refused before anything is stored, a submission refused before its challenge checks out
// keeps only its finding and hash, and the key is rate limited.
func TestEvidenceFloodingIsBounded(t *testing.T) {
	t.Parallel()
	// The default burst (10) with a refill slow enough that the count below is exact.
	o := newEvidenceOwners(t, resolvers.WorkerConfig{ProofRate: resolvers.Rate{Every: time.Hour, Burst: 10}})
	w := o.enrolledWorker(t, "alice", h100Host(40))
	before := o.attestationsBytes(t)

	// The attack as reported: ~0.9 MB snapshots naming random challenge ids.
	huge := bulky(h100Host(40), 900<<10)
	var codes []string
	for range 20 {
		p := attest.Proof{ChallengeID: uuid.NewString(), Counter: 1, Signature: make([]byte, 64)}
		r := w.call(submitProofMutation, proofVarsJSON(w.deviceID, p, huge))
		if len(r.Errors) > 0 {
			codes = append(codes, r.Errors[0].Code())
		}
	}
	grown := o.attestationsBytes(t) - before
	t.Logf("20 oversized submissions grew attestations by %d bytes", grown)
	if grown > 256<<10 {
		t.Fatalf("20 submissions grew attestations by %d bytes", grown)
	}
	if len(codes) != 20 || codes[0] != "BAD_USER_INPUT" {
		t.Fatalf("oversized snapshots: want 20 BAD_USER_INPUT, got %v", codes)
	}
	var rows int
	if err := o.x.Get(&rows, `SELECT count(*) FROM attestations WHERE device_id = $1`, w.deviceID); err != nil || rows != 0 {
		t.Fatalf("%d attestations stored for refused snapshots (%v)", rows, err)
	}

	// Within the budget, but naming made-up challenges: the finding and the submission's hash
	// are kept, not the snapshot; after the burst the key is limited, and nothing more is stored.
	fits := bulky(h100Host(40), 30<<10)
	var limited *gqlError
	stored := 0
	for i := range 20 {
		p := attest.Proof{ChallengeID: uuid.NewString(), Counter: uint64(i), Signature: make([]byte, 64)}
		r := w.call(submitProofMutation, proofVarsJSON(w.deviceID, p, fits))
		if len(r.Errors) > 0 {
			e := r.WantError(t, "RATE_LIMITED", "submitProof")
			limited = &e
			continue
		}
		stored++
		var res submitProofResponse
		r.Decode(t, &res)
		if res.SubmitProof.Verdict != "FLAGGED" || strings.Join(res.SubmitProof.Reasons, ",") != "CHALLENGE_FOREIGN" {
			t.Fatalf("made-up challenge: %+v", res.SubmitProof)
		}
	}
	if limited == nil || stored != 10 {
		t.Fatalf("want 10 verdicts then RATE_LIMITED, got %d verdicts (limited: %v)", stored, limited)
	}
	if ra, _ := limited.Extensions["retryAfterSeconds"].(float64); ra < 1 {
		t.Fatalf("RATE_LIMITED without a retry-after hint: %+v", limited.Extensions)
	}
	var kept struct {
		Rows, WithPayload, WithHash int
	}
	if err := o.x.Get(&kept, `SELECT count(*) AS rows, count(snapshot) + count(cc_report) AS withpayload,
		count(*) FILTER (WHERE length(proof_hash) = 32) AS withhash FROM attestations WHERE device_id = $1`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	if kept.Rows != 10 || kept.WithPayload != 0 || kept.WithHash != 10 {
		t.Fatalf("refused submissions stored: %+v; want 10 rows, no payload, each with its hash", kept)
	}
	grown = o.attestationsBytes(t) - before
	t.Logf("10 stored refusals (+10 limited) grew attestations by %d bytes", grown)
	if grown > 256<<10 {
		t.Fatalf("attestations grew by %d bytes", grown)
	}
}

// The snapshot budget lets a real host through: an 8-GPU host proves, the same host's snapshot
// grown past the budget (under the 1 MB parser limit) does not, and enrollment applies the same
// budget. (CC evidence, the largest part a real host sent, now travels in ProofInput.evidence.)
func TestSnapshotBudgetFitsRealHosts(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{})
	w := newWorker(o)
	big := bulky(h100Host(41), db.SnapshotBudget(8)+1)
	if len(big) <= db.SnapshotBudget(8) || len(big) > attest.MaxSnapshotBytes {
		t.Fatalf("test snapshot is %d bytes; want over the budget %d and under the parser limit", len(big), db.SnapshotBudget(8))
	}
	devices := func() int {
		var n int
		if err := o.x.Get(&n, `SELECT count(*) FROM devices WHERE owner_id = $1`, o.alice); err != nil {
			t.Fatal(err)
		}
		return n
	}
	had := devices()
	in := w.enrollInput(o.enrollmentToken(t, "alice"), h100Host(41))
	in["in"].(map[string]any)["snapshot"] = big
	w.signed(w.priv, "", time.Now(), body(enrollMutation, in), nil).WantError(t, "BAD_USER_INPUT", "snapshot is")
	if n := devices(); n != had {
		t.Fatalf("a refused enrollment stored a device (%d -> %d)", had, n)
	}

	w.enroll(t, o.enrollmentToken(t, "alice"), h100Host(41))
	id, nonce, diff := w.challenge(t)
	real := h100Host(41)
	p, err := attest.Prove(context.Background(), w.priv, id, nonce, diff, real)
	if err != nil {
		t.Fatal(err)
	}
	var res submitProofResponse
	w.call(submitProofMutation, proofVarsJSON(w.deviceID, p, bulky(real, db.SnapshotBudget(8)+1))).
		WantError(t, "BAD_USER_INPUT", "snapshot is")
	w.call(submitProofMutation, proofVars(w.deviceID, p)).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" {
		t.Fatalf("a real host: %+v", res.SubmitProof)
	}
}

// Rate limits and the open-challenge cap answer RATE_LIMITED with a retry-after hint and write
// nothing of the refused request.
func TestWorkerLimitsRefuseWithoutWriting(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{HeartbeatRate: resolvers.Rate{Every: time.Hour, Burst: 2}})
	w := o.enrolledWorker(t, "alice", h100Host(42))

	for range 2 {
		w.call(heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})
	}
	var seen time.Time
	if err := o.x.Get(&seen, `UPDATE devices SET last_seen_at = now() - interval '1 day' WHERE id = $1 RETURNING last_seen_at`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	e := w.call(heartbeatMutation, map[string]any{"d": w.deviceID}).WantError(t, "RATE_LIMITED", "heartbeat")
	if ra, _ := e.Extensions["retryAfterSeconds"].(float64); ra < 60 {
		t.Fatalf("retry-after %v; the bucket refills in an hour", e.Extensions)
	}
	var after time.Time
	if err := o.x.Get(&after, `SELECT last_seen_at FROM devices WHERE id = $1`, w.deviceID); err != nil || !after.Equal(seen) {
		t.Fatalf("a limited heartbeat wrote last_seen_at (%v -> %v, %v)", seen, after, err)
	}

	// The open-challenge cap: a device holds at most db.MaxOpenChallenges.
	for range db.MaxOpenChallenges {
		w.challenge(t)
	}
	e = w.call(challengeMutation, map[string]any{"d": w.deviceID}).WantError(t, "RATE_LIMITED", "open challenges")
	if ra, _ := e.Extensions["retryAfterSeconds"].(float64); ra < 1 {
		t.Fatalf("no retry-after: %v", e.Extensions)
	}
	var open int
	if err := o.x.Get(&open, `SELECT count(*) FROM challenges WHERE device_id = $1`, w.deviceID); err != nil || open != db.MaxOpenChallenges {
		t.Fatalf("%d challenges stored (%v)", open, err)
	}
	if !strings.Contains(o.log.String(), "reason=RATE_LIMITED") {
		t.Fatal("the limited request is not in the audit log")
	}
}

// Item 5: a retried submitProof never flags a genuine device. A proxy retry of the identical
// signed request is refused as a replay on the same gateway and on any other of the same
// database (the replay window is shared: docs/scale-out.md), nothing written, the device
// untouched; a worker retry re-signs and gets the original verdict; only a different proof for
// the spent challenge is a finding.
func TestRetriedProofKeepsItsVerdict(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{})
	w := o.enrolledWorker(t, "alice", h100Host(43))
	id, nonce, diff := w.challenge(t)
	p, err := attest.Prove(context.Background(), w.priv, id, nonce, diff, h100Host(43))
	if err != nil {
		t.Fatal(err)
	}
	req := body(submitProofMutation, proofVars(w.deviceID, p))
	sig := http.Header{attest.SignatureHeader: {attest.SignRequest(w.priv, w.deviceID, "POST", "/graphql", time.Now(), req)}}
	var res submitProofResponse
	o.raw(http.MethodPost, "/graphql", "application/json", req, sig).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" || res.SubmitProof.Verification != "VERIFIED" {
		t.Fatalf("first submission: %+v", res.SubmitProof)
	}
	state := func() (string, int) {
		var v string
		var n int
		if err := o.x.QueryRow(`SELECT verification, (SELECT count(*) FROM attestations WHERE device_id = $1)
			FROM devices WHERE id = $1`, w.deviceID).Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		return v, n
	}

	// A proxy retries the identical request on the same gateway.
	o.raw(http.MethodPost, "/graphql", "application/json", req, sig).WantError(t, "UNAUTHENTICATED", "replayed request")
	if v, n := state(); v != "VERIFIED" || n != 1 {
		t.Fatalf("after a proxy retry: %s with %d attestations", v, n)
	}
	// ... or on another gateway of the same database: the same refusal.
	other := httptest.NewServer(gateway.New(gateway.Config{Workers: resolvers.WorkerConfig{Difficulty: 8}}, o.db,
		slog.New(slog.NewTextHandler(&testutil.SyncBuffer{}, nil))))
	defer other.Close()
	hreq, _ := http.NewRequest(http.MethodPost, other.URL+"/graphql", bytes.NewReader(req))
	hreq.Header = sig.Clone()
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var viaOther response
	if err := json.Unmarshal(raw, &viaOther); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	viaOther.Status = resp.StatusCode
	viaOther.RawBody = string(raw)
	viaOther.WantError(t, "UNAUTHENTICATED", "replayed request")
	if v, n := state(); v != "VERIFIED" || n != 1 {
		t.Fatalf("after a proxy retry on another gateway: %s with %d attestations", v, n)
	}
	// The worker retries: the same proof, a fresh signature.
	w.call(submitProofMutation, proofVars(w.deviceID, p)).Decode(t, &res)
	if res.SubmitProof.Verdict != "PASSED" || res.SubmitProof.Verification != "VERIFIED" || len(res.SubmitProof.Reasons) != 0 {
		t.Fatalf("worker retry: %+v", res.SubmitProof)
	}
	if v, n := state(); v != "VERIFIED" || n != 1 {
		t.Fatalf("after retries: %s with %d attestations; want VERIFIED with the one verdict", v, n)
	}

	// A different proof for the spent challenge is a replay.
	p.Counter++
	w.call(submitProofMutation, proofVars(w.deviceID, p)).Decode(t, &res)
	if res.SubmitProof.Verdict != "FLAGGED" || strings.Join(res.SubmitProof.Reasons, ",") != "CHALLENGE_REPLAYED" {
		t.Fatalf("different proof: %+v", res.SubmitProof)
	}
	// Retried, that finding keeps its own verdict and is not stored twice.
	w.call(submitProofMutation, proofVars(w.deviceID, p)).Decode(t, &res)
	if v, n := state(); res.SubmitProof.Verdict != "FLAGGED" || v != "FLAGGED" || n != 2 {
		t.Fatalf("retried replay: %+v, device %s with %d attestations", res.SubmitProof, v, n)
	}
}

// callFrom sends a signed worker request from the loopback address src (127.0.0.0/8 is all
// local on Linux), so the gateway sees it come from there.
func (w *worker) callFrom(t *testing.T, src, query string, vars map[string]any) response {
	t.Helper()
	b := body(query, vars)
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	req, _ := http.NewRequest(http.MethodPost, w.o.url+"/graphql", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(attest.SignatureHeader, attest.SignRequest(w.priv, w.deviceID, "POST", "/graphql", time.Now(), b))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("from %s: %v", src, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, RawBody: string(raw)}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return out
}

// Item 8: each signed request's source address is recorded per device, owner-only and for
// admins; a device whose address changes unusually often is reported ADDRESS_CHURN for review
// (admin view and audit log) and never blocked; an unchanged address is not rewritten per
// request.
func TestSourceAddressesAndChurn(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{AddressChurn: db.AddressChurn{Limit: 3, Window: time.Hour}})
	w := o.enrolledWorker(t, "alice", h100Host(44))

	w.callFrom(t, "127.0.0.2", heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})
	if _, err := o.x.Exec(`UPDATE device_addresses SET last_seen_at = '2001-01-01' WHERE device_id = $1`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	w.callFrom(t, "127.0.0.2", heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})
	var last time.Time
	if err := o.x.Get(&last, `SELECT last_seen_at FROM device_addresses WHERE device_id = $1`, w.deviceID); err != nil || last.Year() != 2001 {
		t.Fatalf("an unchanged address was rewritten by the next heartbeat (%v, %v)", last, err)
	}
	if _, err := o.x.Exec(`UPDATE device_addresses SET last_seen_at = now() WHERE device_id = $1`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"} {
		// Churn is reported, never a block.
		w.callFrom(t, src, heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})
	}

	var rep struct {
		DeviceAddresses struct {
			Addresses []struct{ Address string }
			Findings  []struct{ Reason, Detail string }
		}
	}
	const adminQuery = `query($id: ID!) { deviceAddresses(id: $id) { deviceId addresses { address firstSeenAt lastSeenAt } findings { reason detail createdAt } } }`
	o.as(bearer(o.idp.sign(o.idp.claims("admin", "ADMIN"))), adminQuery, map[string]any{"id": w.deviceID}).Decode(t, &rep)
	if len(rep.DeviceAddresses.Addresses) != 5 || rep.DeviceAddresses.Addresses[0].Address != "127.0.0.6" {
		t.Fatalf("admin view of addresses: %+v", rep.DeviceAddresses.Addresses)
	}
	if len(rep.DeviceAddresses.Findings) != 1 || rep.DeviceAddresses.Findings[0].Reason != "ADDRESS_CHURN" {
		t.Fatalf("want one ADDRESS_CHURN finding, got %+v", rep.DeviceAddresses.Findings)
	}
	if !strings.Contains(o.log.String(), "ADDRESS_CHURN") {
		t.Fatal("the churn finding is not in the audit log")
	}
	var verification string
	if err := o.x.Get(&verification, `SELECT verification FROM devices WHERE id = $1`, w.deviceID); err != nil || verification != "PENDING" {
		t.Fatalf("churn changed the verification to %s (%v)", verification, err)
	}
	// Not for the owner through the admin query, nor for anyone else.
	o.as(bearer(o.idp.sign(o.idp.claims("alice"))), adminQuery, map[string]any{"id": w.deviceID}).WantError(t, "FORBIDDEN", "")
	o.post(adminQuery, map[string]any{"id": w.deviceID}).WantError(t, "UNAUTHENTICATED", "")

	// The owner sees them in private; another user and the public do not, in any field.
	const deviceQuery = `query($id: ID!) { device(id: $id) { id name status region verification gpuModel gpuCount lastSeenAt createdAt
		gpus { uuid model } private { hostname sourceAddresses { address firstSeenAt lastSeenAt } } } }`
	var mine struct {
		Device struct {
			Private *struct{ SourceAddresses []struct{ Address string } }
		}
	}
	o.as(bearer(o.idp.sign(o.idp.claims("alice"))), deviceQuery, map[string]any{"id": w.deviceID}).Decode(t, &mine)
	if mine.Device.Private == nil || len(mine.Device.Private.SourceAddresses) != 5 {
		t.Fatalf("owner view: %+v", mine.Device.Private)
	}
	for _, h := range []http.Header{bearer(o.idp.sign(o.idp.claims("bob"))), bearer(o.idp.sign(o.idp.claims("admin", "ADMIN"))), nil} {
		r := o.as(h, deviceQuery, map[string]any{"id": w.deviceID})
		if len(r.Errors) > 0 || strings.Contains(string(r.Data), "127.0.0.") || !strings.Contains(string(r.Data), `"private":null`) {
			t.Fatalf("a non-owner sees the addresses: %s", r.RawBody)
		}
	}
}
