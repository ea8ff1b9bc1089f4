package gateway_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// GPU identities outlive devices (docs/attestation.md, "GPU identity lifecycle"): these tests drive the
// rules through real HTTP, with real worker signatures and proofs, on a real database.

type proofResult struct {
	Verdict, Verification string
	Reasons               []string
}

// prove requests a challenge, does the work over snap and submits the proof.
func (w *worker) prove(t *testing.T, snap attest.Snapshot) proofResult {
	t.Helper()
	vars := w.proofVars(t, w.issue(t), snap, nil)
	var res struct{ SubmitProof proofResult }
	w.call(`mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification } }`,
		vars).Decode(t, &res)
	return res.SubmitProof
}

type publicDevice struct {
	Name, Status, Verification string
	GpuCount                   int
}

// public is the device as an anonymous caller sees it.
func (o *owners) public(t *testing.T, id string) publicDevice {
	t.Helper()
	var out struct{ Device publicDevice }
	o.post(`query($id: ID!) { device(id: $id) { name status verification gpuCount } }`, map[string]any{"id": id}).Decode(t, &out)
	return out.Device
}

func (o *owners) user(name string, roles ...string) http.Header {
	return bearer(o.idp.sign(o.idp.claims(name, roles...)))
}

func (o *owners) remove(t *testing.T, user, id string) {
	t.Helper()
	o.as(o.user(user), `mutation($id: ID!) { removeDevice(id: $id) { id } }`, map[string]any{"id": id}).Decode(t, &struct{}{})
}

// replica is a second gateway over the same database, as in a deployment with several replicas:
// it has its own device-key cache.
func (o *owners) replica(t *testing.T) *owners {
	t.Helper()
	srv := httptest.NewServer(gateway.New(gateway.Config{Verifier: o.idp.verifier,
		RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}, Workers: resolvers.WorkerConfig{Difficulty: 8}},
		o.db, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	e := *o.env
	e.url = srv.URL
	r := *o
	r.env = &e
	return &r
}

func hasReason(p proofResult, reason attest.Reason) bool {
	return slices.Contains(p.Reasons, string(reason))
}

// Squatting: a host removes its device, another account enrolls the host's public GPU UUIDs. The
// claims stay with the removed device, so the squatter holds nothing and is flagged, and the
// genuine host re-enrolls with its full GPU count and is verified.
func TestRemovedHostsGPUsCannotBeSquatted(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	host := h100Host(40)
	genuine := o.enrolledWorker(t, "alice", host)
	if p := genuine.prove(t, host); p.Verification != "VERIFIED" {
		t.Fatalf("genuine host: %+v", p)
	}
	o.remove(t, "alice", genuine.deviceID)

	squatter := o.enrolledWorker(t, "bob", host)
	if d := o.public(t, squatter.deviceID); d.GpuCount != 0 {
		t.Fatalf("the squatter holds %d of the removed host's GPUs", d.GpuCount)
	}
	if p := squatter.prove(t, host); p.Verification != "FLAGGED" || !hasReason(p, attest.ReasonUUIDOnAnotherDevice) {
		t.Fatalf("squatter's proof: %+v", p)
	}

	// The removed device's key is retired: enrolling it again is refused, the token stays usable.
	token := o.enrollmentToken(t, "alice")
	genuine.signed(genuine.priv, "", time.Now(), body(enrollMutation, genuine.enrollInput(token, host)), nil).
		WantError(t, "CONFLICT", "removed device's key cannot enroll again")
	back := newWorker(o)
	back.enroll(t, token, host)
	if d := o.public(t, back.deviceID); d.GpuCount != 8 {
		t.Fatalf("the genuine host re-enrolled with %d GPUs, want 8", d.GpuCount)
	}
	if p := back.prove(t, host); p.Verdict != "PASSED" || p.Verification != "VERIFIED" {
		t.Fatalf("genuine host after re-enrolling: %+v", p)
	}
	if p := squatter.prove(t, host); p.Verification != "FLAGGED" || !hasReason(p, attest.ReasonUUIDOnAnotherDevice) {
		t.Fatalf("squatter after the host came back: %+v", p)
	}
	var moved int
	if err := o.x.Get(&moved, `SELECT count(*) FROM gpu_claim_transfers WHERE from_device_id = $1 AND to_device_id = $2
		AND rule = 'SAME_OWNER'`, genuine.deviceID, back.deviceID); err != nil || moved != 8 {
		t.Fatalf("claim transfers logged: %d (%v), want 8", moved, err)
	}
}

// Quarantine evasion: an admin quarantines a device, its owner removes it and enrolls the same
// GPUs again. The quarantine follows the GPU identities: the new device is quarantined and
// flagged, and the evidence of the old one is kept. Releasing the old device lifts it.
func TestQuarantineFollowsTheGPUs(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	adm := o.user("admin", "ADMIN")
	host := h100Host(41)
	x := o.enrolledWorker(t, "alice", host)
	if p := x.prove(t, host); p.Verification != "VERIFIED" {
		t.Fatalf("first proof: %+v", p)
	}
	o.as(adm, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "reselling rented GPUs") { status } }`,
		map[string]any{"id": x.deviceID}).Decode(t, &struct{}{})
	o.remove(t, "alice", x.deviceID)

	y := o.enrolledWorker(t, "alice", host)
	if d := o.public(t, y.deviceID); d.Status != "QUARANTINED" || d.GpuCount != 0 {
		t.Fatalf("re-enrolled quarantined GPUs: %+v, want QUARANTINED holding none", d)
	}
	p := y.prove(t, host)
	if p.Verification != "FLAGGED" || !hasReason(p, attest.ReasonGPUQuarantined) {
		t.Fatalf("proof with quarantined GPUs: %+v", p)
	}
	var reason struct {
		Device struct {
			Private struct{ QuarantineReason *string }
		}
	}
	o.as(o.user("alice"), `query($id: ID!) { device(id: $id) { private { quarantineReason } } }`, map[string]any{"id": y.deviceID}).Decode(t, &reason)
	if r := reason.Device.Private.QuarantineReason; r == nil || !strings.Contains(*r, "GPU_QUARANTINED") {
		t.Fatalf("the owner is not told why: %v", r)
	}
	// Another account enrolling them is quarantined just the same.
	z := o.enrolledWorker(t, "bob", host)
	if d := o.public(t, z.deviceID); d.Status != "QUARANTINED" {
		t.Fatalf("another account's device with quarantined GPUs: %+v", d)
	}
	// The evidence survived the removal.
	var attestations, gpus int
	if err := o.x.Get(&attestations, `SELECT count(*) FROM attestations WHERE device_id = $1`, x.deviceID); err != nil || attestations == 0 {
		t.Fatalf("the removed device's attestations are gone (%v)", err)
	}
	if err := o.x.Get(&gpus, `SELECT count(*) FROM gpus WHERE device_id = $1`, x.deviceID); err != nil || gpus != 8 {
		t.Fatalf("the removed device holds %d GPU claims (%v), want 8", gpus, err)
	}

	// Releasing the removed device lifts the quarantine it put on the GPUs; once y is released too,
	// its next proof takes the claims over (same owner) and passes.
	for _, id := range []string{x.deviceID, y.deviceID} {
		o.as(adm, `mutation($id: ID!) { releaseDevice(id: $id) { status } }`, map[string]any{"id": id}).Decode(t, &struct{}{})
	}
	if p := y.prove(t, host); p.Verdict != "PASSED" || p.Verification != "VERIFIED" {
		t.Fatalf("after release: %+v", p)
	}
	if d := o.public(t, y.deviceID); d.GpuCount != 8 || d.Status == "QUARANTINED" {
		t.Fatalf("after release: %+v", d)
	}
	if p := z.prove(t, host); !hasReason(p, attest.ReasonUUIDOnAnotherDevice) || hasReason(p, attest.ReasonGPUQuarantined) {
		t.Fatalf("bob's device after the release: %+v", p)
	}
}

// A conflict over a GPU identity is resolved by an admin, never by whoever came last.
func TestAdminReassignsAGPUIdentity(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	adm := o.user("admin", "ADMIN")
	host := h100Host(42)
	seller := o.enrolledWorker(t, "alice", host)
	o.remove(t, "alice", seller.deviceID)
	buyer := o.enrolledWorker(t, "bob", host)

	type conflict struct {
		UUID                                   string
		Claimant, Holder                       struct{ ID string }
		HolderRemoved, HolderQuarantined, Same bool
	}
	conflicts := func() []conflict {
		var out struct{ GpuConflicts []conflict }
		o.as(adm, `{ gpuConflicts(first: 100) { uuid claimant { id } holder { id } holderRemoved holderQuarantined same: sameOwner } }`, nil).Decode(t, &out)
		return out.GpuConflicts
	}
	cs := conflicts()
	if len(cs) != 8 {
		t.Fatalf("conflicts: %+v, want 8", cs)
	}
	for _, c := range cs {
		if c.Claimant.ID != buyer.deviceID || c.Holder.ID != seller.deviceID || !c.HolderRemoved || c.Same {
			t.Fatalf("conflict: %+v", c)
		}
	}

	const reassign = `mutation($u: String!, $id: ID!) { reassignGpu(uuid: $u, deviceId: $id) { id gpuCount } }`
	// Refusals change nothing.
	o.as(o.user("bob"), reassign, map[string]any{"u": host.GPUs[0].UUID, "id": buyer.deviceID}).WantError(t, "FORBIDDEN", "")
	o.as(adm, reassign, map[string]any{"u": h100Host(43).GPUs[0].UUID, "id": buyer.deviceID}).WantError(t, "BAD_USER_INPUT", "did not report")
	o.as(adm, reassign, map[string]any{"u": host.GPUs[0].UUID, "id": seller.deviceID}).WantError(t, "NOT_FOUND", "device not found")
	o.as(adm, reassign, map[string]any{"u": "GPU-\u202e", "id": buyer.deviceID}).WantError(t, "BAD_USER_INPUT", "uuid")
	o.as(adm, reassign, map[string]any{"u": host.GPUs[0].UUID, "id": "not-a-device"}).WantError(t, "BAD_USER_INPUT", "")
	if d := o.public(t, buyer.deviceID); d.GpuCount != 0 {
		t.Fatalf("a refused reassignment moved a GPU: %+v", d)
	}

	var out struct{ ReassignGpu struct{ GpuCount int } }
	o.as(adm, reassign, map[string]any{"u": host.GPUs[0].UUID, "id": buyer.deviceID}).Decode(t, &out)
	if out.ReassignGpu.GpuCount != 1 || len(conflicts()) != 7 {
		t.Fatalf("after one award: count %d, %d conflicts", out.ReassignGpu.GpuCount, len(conflicts()))
	}
	var sellerCount int
	if err := o.x.Get(&sellerCount, `SELECT gpu_count FROM devices WHERE id = $1`, seller.deviceID); err != nil || sellerCount != 7 {
		t.Fatalf("the former holder counts %d GPUs (%v), want 7", sellerCount, err)
	}
	for _, g := range host.GPUs[1:] {
		o.as(adm, reassign, map[string]any{"u": g.UUID, "id": buyer.deviceID}).Decode(t, &out)
	}
	// Awarding again is a no-op.
	o.as(adm, reassign, map[string]any{"u": host.GPUs[0].UUID, "id": buyer.deviceID}).Decode(t, &out)
	if out.ReassignGpu.GpuCount != 8 || len(conflicts()) != 0 {
		t.Fatalf("after every award: count %d, conflicts %+v", out.ReassignGpu.GpuCount, conflicts())
	}
	if p := buyer.prove(t, host); p.Verdict != "PASSED" {
		t.Fatalf("the buyer's proof after the awards: %+v", p)
	}
	var logged int
	if err := o.x.Get(&logged, `SELECT count(*) FROM gpu_claim_transfers WHERE to_device_id = $1 AND rule = 'ADMIN' AND actor = $2`,
		buyer.deviceID, o.admin); err != nil || logged != 8 {
		t.Fatalf("admin transfers logged: %d (%v)", logged, err)
	}
}

// A removed device is in no public or owner view, and no owner operation reaches it; its row,
// claims and history stay.
func TestRemovedDeviceIsHiddenEverywhere(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	alice := o.user("alice")
	w := o.enrolledWorker(t, "alice", h100Host(44))
	o.as(alice, `mutation($id: ID!) { updateDevice(id: $id, input: {name: "vanishing-rig-qz"}) { id } }`, map[string]any{"id": w.deviceID}).Decode(t, &struct{}{})
	w.prove(t, h100Host(44))

	type stats struct{ NetworkStats struct{ Devices, Gpus int } }
	type seen struct {
		byID, inList, inSearch, inIDSearch, inViewer bool
		stats                                        stats
	}
	look := func() seen {
		var s seen
		r := o.post(`query($id: ID!) { device(id: $id) { id } }`, map[string]any{"id": w.deviceID})
		s.byID = len(r.Errors) == 0
		if !s.byID {
			r.WantError(t, "NOT_FOUND", "device not found")
		}
		var list struct{ Devices connection }
		o.post(`{ devices(first: 100) { edges { node { id } } } }`, nil).Decode(t, &list)
		var search, idSearch struct{ SearchDevices connection }
		o.post(`{ searchDevices(query: "vanishing-rig", first: 10) { edges { node { id } } } }`, nil).Decode(t, &search)
		o.post(`query($q: String!) { searchDevices(query: $q, first: 10) { edges { node { id } } } }`,
			map[string]any{"q": w.deviceID[:8]}).Decode(t, &idSearch)
		var viewer struct{ Viewer struct{ Devices connection } }
		o.as(alice, `{ viewer { devices(first: 100) { edges { node { id } } } } }`, nil).Decode(t, &viewer)
		has := func(c connection) bool {
			for _, e := range c.Edges {
				if e.Node.ID == w.deviceID {
					return true
				}
			}
			return false
		}
		s.inList, s.inSearch, s.inIDSearch, s.inViewer = has(list.Devices), has(search.SearchDevices), has(idSearch.SearchDevices), has(viewer.Viewer.Devices)
		o.post(`{ networkStats { devices gpus } }`, nil).Decode(t, &s.stats)
		return s
	}
	before := look()
	if !before.byID || !before.inList || !before.inSearch || !before.inIDSearch || !before.inViewer {
		t.Fatalf("the live device is not everywhere: %+v", before)
	}
	o.remove(t, "alice", w.deviceID)
	after := look()
	if after.byID || after.inList || after.inSearch || after.inIDSearch || after.inViewer {
		t.Fatalf("the removed device is still visible: %+v", after)
	}
	if after.stats.NetworkStats.Devices != before.stats.NetworkStats.Devices-1 || after.stats.NetworkStats.Gpus != before.stats.NetworkStats.Gpus-8 {
		t.Fatalf("stats still count the removed device: %+v -> %+v", before.stats, after.stats)
	}
	// Every owner operation answers NOT_FOUND and changes nothing.
	row := o.snapshot(w.deviceID)
	for _, q := range []string{
		`mutation($id: ID!) { updateDevice(id: $id, input: {name: "back"}) { id } }`,
		`mutation($id: ID!) { pauseDevice(id: $id) { id } }`,
		`mutation($id: ID!) { resumeDevice(id: $id) { id } }`,
		`mutation($id: ID!) { removeDevice(id: $id) { id } }`,
		`mutation($id: ID!) { addDeviceKey(id: $id, publicKey: "` + newWorker(o).pub() + `") { id } }`,
		`mutation($id: ID!) { revokeDeviceKey(id: $id, credentialId: "00000000-0000-4000-8000-000000000000") { id } }`,
	} {
		o.as(alice, q, map[string]any{"id": w.deviceID}).WantError(t, "NOT_FOUND", "device not found")
	}
	if o.snapshot(w.deviceID) != row {
		t.Fatal("an operation on the removed device changed it")
	}
	// Kept: the row, its GPU claims, its attestations, its (now revoked) key.
	var kept struct {
		Rows         int `db:"rows"`
		GPUs         int `db:"gpus"`
		Attestations int `db:"attestations"`
		Keys         int `db:"keys"`
		Unrevoked    int `db:"unrevoked"`
	}
	if err := o.x.Get(&kept, `SELECT (SELECT count(*) FROM devices WHERE id = $1) AS rows,
		(SELECT count(*) FROM gpus WHERE device_id = $1) AS gpus,
		(SELECT count(*) FROM attestations WHERE device_id = $1) AS attestations,
		(SELECT count(*) FROM device_credentials WHERE device_id = $1) AS keys,
		(SELECT count(*) FROM device_credentials WHERE device_id = $1 AND revoked_at IS NULL) AS unrevoked`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	if kept.Rows != 1 || kept.GPUs != 8 || kept.Attestations == 0 || kept.Keys != 1 || kept.Unrevoked != 0 {
		t.Fatalf("after removal: %+v", kept)
	}
}

// A removed device's key stops working on the very next request, on this replica (which drops
// its cached keys) and on any other (the replay insert requires a live key in SQL, whatever the
// replica cached: docs/scale-out.md): UNAUTHENTICATED, never INTERNAL.
func TestRemovedDeviceKeyIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	other := o.replica(t)
	w := o.enrolledWorker(t, "alice", h100Host(45))
	onOther := &worker{o: other, priv: w.priv, deviceID: w.deviceID}
	const hb = `mutation($d: ID!) { heartbeat(deviceId: $d, input: {gpus: []}) { status } }`
	const challenge = `mutation($d: ID!) { requestChallenge(deviceId: $d) { id } }`
	vars := map[string]any{"d": w.deviceID}
	// Both replicas have the key cached.
	w.call(hb, vars).Decode(t, &struct{}{})
	onOther.call(hb, vars).Decode(t, &struct{}{})
	state := func() string {
		var s string
		if err := o.x.Get(&s, `SELECT coalesce((SELECT last_seen_at::text FROM devices WHERE id = $1), 'absent') || ' ' ||
			(SELECT count(*) FROM challenges WHERE device_id = $1)`, w.deviceID); err != nil {
			t.Fatal(err)
		}
		return s
	}

	o.remove(t, "alice", w.deviceID)
	before := state()
	// The other replica still caches the key: the database refuses it all the same.
	for _, c := range []*worker{onOther, w} {
		for _, q := range []string{hb, challenge} {
			r := c.call(q, vars)
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("the removed device's key: HTTP %d %s", r.Status, r.RawBody)
			}
			r.WantError(t, "UNAUTHENTICATED", "revoked key")
		}
	}
	if after := state(); after != before {
		t.Fatalf("the removed device wrote: %s -> %s", before, after)
	}
}

// Enrolling without a name gives a random public name; the hostname stays owner-only, at any
// length a DNS name may have.
func TestEnrollmentDefaultNameIsRandomNotTheHostname(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	pattern := regexp.MustCompile(`^gpu-[a-z]+-[a-z]+-[0-9a-f]{4}$`)
	for i, hostname := range []string{"dgx-01", "h100-node-7.rack-12.dc-frankfurt.corp.example.com." + strings.Repeat("sub.", 30) + "internal"} {
		w := newWorker(o)
		in := w.enrollInput(o.enrollmentToken(t, "alice"), h100Host(byte(46+i)))
		in["in"].(map[string]any)["hostname"] = hostname
		var out struct{ EnrollDevice struct{ DeviceID string } }
		w.signed(w.priv, "", time.Now(), body(enrollMutation, in), nil).Decode(t, &out)
		d := o.public(t, out.EnrollDevice.DeviceID)
		first, _, _ := strings.Cut(hostname, ".")
		if !pattern.MatchString(d.Name) || strings.Contains(d.Name, first) {
			t.Fatalf("public name %q for hostname %q", d.Name, hostname)
		}
		var priv struct {
			Device struct{ Private struct{ Hostname string } }
		}
		o.as(o.user("alice"), `query($id: ID!) { device(id: $id) { private { hostname } } }`, map[string]any{"id": out.EnrollDevice.DeviceID}).Decode(t, &priv)
		if priv.Device.Private.Hostname != hostname {
			t.Fatalf("the owner sees hostname %q, want %q", priv.Device.Private.Hostname, hostname)
		}
	}
	// Beyond a DNS name's 253 characters it is refused, clearly.
	w := newWorker(o)
	in := w.enrollInput(o.enrollmentToken(t, "alice"), h100Host(48))
	in["in"].(map[string]any)["hostname"] = strings.Repeat("a", 254)
	w.signed(w.priv, "", time.Now(), body(enrollMutation, in), nil).WantError(t, "BAD_USER_INPUT", "hostname must be 1 to 253")
}
