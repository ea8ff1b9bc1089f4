package gateway_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// Verification levels through the real gateway: a worker enrolls over HTTP, asks for challenges
// and submits proofs with confidential-computing evidence made by simulated GPUs (attest/nvidia's
// simulation CA); docs/attestation.md, "Verification levels".

// newCCOwners serves a gateway whose evidence verifier trusts the simulation CA (zero-config dev
// mode) or not (a production gateway given a database URL).
func newCCOwners(t *testing.T, trustSimulation bool) *owners {
	t.Helper()
	p := newIDP(t)
	return newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"},
		Workers: resolvers.WorkerConfig{Difficulty: 8, CC: nvidia.New(nvidia.Options{TrustSimulation: trustSimulation})}})
}

// simGPUs returns one simulated CC GPU per GPU of snap, each keyed by its UUID (the same GPU
// keeps its hardware identity).
func simGPUs(t *testing.T, snap attest.Snapshot) []*nvidia.SimulatedGPU {
	t.Helper()
	out := make([]*nvidia.SimulatedGPU, len(snap.GPUs))
	for i, g := range snap.GPUs {
		out[i] = simGPU(t, g.UUID)
	}
	return out
}

func simGPU(t *testing.T, seed string) *nvidia.SimulatedGPU {
	t.Helper()
	g, err := nvidia.NewSimulatedGPU(nvidia.SimulationOptions{Seed: []byte(seed)})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

type issued struct {
	ID         string
	Nonce      []byte
	Difficulty int
}

func (w *worker) issue(t *testing.T) issued {
	t.Helper()
	id, nonce, difficulty := w.challenge(t)
	return issued{id, nonce, difficulty}
}

// evidenceFor is the entry for snapshot index idx made by g over the nonce of (challenge,
// key, nonceIndex): a genuine worker passes its own challenge, key and idx.
func evidenceFor(t *testing.T, g *nvidia.SimulatedGPU, idx int, ch issued, key ed25519.PublicKey, nonceIndex int) map[string]any {
	t.Helper()
	nonce := attest.CCNonce(ch.ID, ch.Nonce, key, nonceIndex)
	ev, err := g.Evidence(nonce[:])
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"index": idx, "report": base64.StdEncoding.EncodeToString(ev.Report), "certificateChain": string(ev.Chain)}
}

// allEvidence is every GPU's genuine evidence for ch.
func (w *worker) allEvidence(t *testing.T, gpus []*nvidia.SimulatedGPU, ch issued) []map[string]any {
	t.Helper()
	var out []map[string]any
	for i, g := range gpus {
		out = append(out, evidenceFor(t, g, i, ch, w.priv.Public().(ed25519.PublicKey), i))
	}
	return out
}

// proofVars is a genuine proof of snap for ch, carrying evidence.
func (w *worker) proofVars(t *testing.T, ch issued, snap attest.Snapshot, evidence []map[string]any) map[string]any {
	t.Helper()
	proof, err := attest.Prove(context.Background(), w.priv, ch.ID, ch.Nonce, ch.Difficulty, snap)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(proof.Snapshot)
	in := map[string]any{"challengeId": proof.ChallengeID, "counter": strconv.FormatUint(proof.Counter, 10),
		"snapshot": string(js), "signature": base64.StdEncoding.EncodeToString(proof.Signature)}
	if evidence != nil {
		in["evidence"] = evidence
	}
	return map[string]any{"d": w.deviceID, "in": in}
}

type gpuJudged struct {
	Index                                                     int
	UUID, Level                                               string
	EvidenceSubmitted, RevocationChecked, MeasurementsChecked bool
	Root, DriverVersion, VbiosVersion                         *string
	Reasons, CertificateSerials                               []string
}

type proofOut struct {
	Verdict, Verification, Level string
	Reasons                      []string
	Gpus                         []gpuJudged
}

const submitCC = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons verification level
	gpus { index uuid level evidenceSubmitted root reasons revocationChecked measurementsChecked driverVersion vbiosVersion certificateSerials } } }`

func (w *worker) submit(t *testing.T, vars map[string]any) proofOut {
	t.Helper()
	var out struct{ SubmitProof proofOut }
	w.call(submitCC, vars).Decode(t, &out)
	return out.SubmitProof
}

// prove asks for a challenge and submits a genuine proof of snap with the evidence mk makes.
func (w *worker) proveCC(t *testing.T, snap attest.Snapshot, mk func(ch issued) []map[string]any) proofOut {
	t.Helper()
	ch := w.issue(t)
	var ev []map[string]any
	if mk != nil {
		ev = mk(ch)
	}
	return w.submit(t, w.proofVars(t, ch, snap, ev))
}

type publicLevels struct {
	Verification, VerificationLevel string
	Gpus                            []struct {
		Index             int
		VerificationLevel string
	}
}

func (o *owners) levels(t *testing.T, id string) publicLevels {
	t.Helper()
	var out struct{ Device publicLevels }
	o.post(`query($id: ID!) { device(id: $id) { verification verificationLevel gpus { index verificationLevel } } }`,
		map[string]any{"id": id}).Decode(t, &out)
	return out.Device
}

func gpuLevels(p publicLevels) string {
	var s []string
	for _, g := range p.Gpus {
		s = append(s, g.VerificationLevel)
	}
	return strings.Join(s, ",")
}

func repeat(level string, n int) string {
	return strings.TrimSuffix(strings.Repeat(level+",", n), ",")
}

func judgedLevels(p proofOut) string {
	var s []string
	for _, g := range p.Gpus {
		s = append(s, g.Level)
	}
	return strings.Join(s, ",")
}

// Valid evidence for every GPU of a dev-trust gateway: ATTESTED, publicly and per GPU, with the
// facts for the owner; the deprecated field answers VERIFIED; a retry gets the same judgement.
func TestLevelsAttestedWithEvidenceForEveryGPU(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(40)
	w := o.enrolledWorker(t, "alice", snap)
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "PENDING" || l.Verification != "PENDING" || gpuLevels(l) != repeat("PENDING", 8) {
		t.Fatalf("enrolled: %+v", l)
	}
	gpus := simGPUs(t, snap)
	ch := w.issue(t)
	vars := w.proofVars(t, ch, snap, w.allEvidence(t, gpus, ch))
	res := w.submit(t, vars)
	if res.Verdict != "PASSED" || res.Level != "ATTESTED" || res.Verification != "VERIFIED" || judgedLevels(res) != repeat("ATTESTED", 8) {
		t.Fatalf("genuine CC proof: %+v", res)
	}
	for i, g := range res.Gpus {
		if g.Index != i || g.UUID != attest.UUIDKey(snap.GPUs[i].UUID) || !g.EvidenceSubmitted || g.Root == nil || *g.Root != "SIMULATION" ||
			len(g.Reasons) != 0 || len(g.CertificateSerials) == 0 || g.DriverVersion == nil || g.RevocationChecked || g.MeasurementsChecked {
			t.Fatalf("GPU %d facts: %+v", i, g)
		}
	}
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "ATTESTED" || l.Verification != "VERIFIED" || gpuLevels(l) != repeat("ATTESTED", 8) {
		t.Fatalf("public after the proof: %+v", l)
	}
	// A retry of the same submission: the original verdict, level and facts; nothing stored.
	if again := w.submit(t, vars); again.Verdict != "PASSED" || again.Level != "ATTESTED" || judgedLevels(again) != repeat("ATTESTED", 8) {
		t.Fatalf("retried proof: %+v", again)
	}
	var n int
	if err := o.x.Get(&n, `SELECT count(*) FROM attestations WHERE device_id = $1`, w.deviceID); err != nil || n != 1 {
		t.Fatalf("%d attestations (%v), want 1", n, err)
	}
	// The owner's history has the level and the facts.
	var priv struct {
		Device struct {
			Private struct {
				Attestations []struct {
					Verdict, Level string
					Gpus           []gpuJudged
				}
			}
		}
	}
	// (Few GPU fields: 50 attestations of up to 64 GPUs each are what the cost limit counts.)
	o.as(o.user("alice"), `query($id: ID!) { device(id: $id) { private { attestations { verdict level
		gpus { root } } } } }`, map[string]any{"id": w.deviceID}).Decode(t, &priv)
	a := priv.Device.Private.Attestations
	if len(a) != 1 || a[0].Level != "ATTESTED" || len(a[0].Gpus) != 8 || a[0].Gpus[3].Root == nil || *a[0].Gpus[3].Root != "SIMULATION" {
		t.Fatalf("owner's attestations: %+v", a)
	}
}

// Without evidence a passing proof is SELF_REPORTED; with one GPU's evidence missing the device
// is SELF_REPORTED while the others are ATTESTED; with one GPU's evidence failing the proof and
// every GPU are FLAGGED, the failing GPU naming its reason.
func TestLevelsSelfReportedAndFlaggedMix(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(41)
	w := o.enrolledWorker(t, "alice", snap)
	gpus := simGPUs(t, snap)

	res := w.proveCC(t, snap, nil)
	if res.Verdict != "PASSED" || res.Level != "SELF_REPORTED" || res.Verification != "VERIFIED" || judgedLevels(res) != repeat("SELF_REPORTED", 8) ||
		res.Gpus[0].EvidenceSubmitted || res.Gpus[0].Root != nil {
		t.Fatalf("no evidence: %+v", res)
	}
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "SELF_REPORTED" || l.Verification != "VERIFIED" || gpuLevels(l) != repeat("SELF_REPORTED", 8) {
		t.Fatalf("public, no evidence: %+v", l)
	}

	res = w.proveCC(t, snap, func(ch issued) []map[string]any { return w.allEvidence(t, gpus, ch)[:7] })
	if res.Verdict != "PASSED" || res.Level != "SELF_REPORTED" || judgedLevels(res) != repeat("ATTESTED", 7)+",SELF_REPORTED" {
		t.Fatalf("GPU 7 without evidence: %+v", res)
	}
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "SELF_REPORTED" || gpuLevels(l) != repeat("ATTESTED", 7)+",SELF_REPORTED" {
		t.Fatalf("public, GPU 7 without evidence: %+v", l)
	}

	res = w.proveCC(t, snap, func(ch issued) []map[string]any {
		ev := w.allEvidence(t, gpus, ch)
		ev[7] = evidenceFor(t, gpus[7], 7, ch, w.priv.Public().(ed25519.PublicKey), 6) // signed for GPU 6's nonce
		return ev
	})
	if res.Verdict != "FLAGGED" || res.Level != "FLAGGED" || res.Verification != "FLAGGED" || judgedLevels(res) != repeat("FLAGGED", 8) ||
		strings.Join(res.Gpus[7].Reasons, ",") != "CC_NONCE_MISMATCH" || len(res.Gpus[0].Reasons) != 0 ||
		!slices.Contains(res.Reasons, "CC_NONCE_MISMATCH") {
		t.Fatalf("GPU 7 failing: %+v", res)
	}
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "FLAGGED" || l.Verification != "FLAGGED" || gpuLevels(l) != repeat("FLAGGED", 8) {
		t.Fatalf("public, GPU 7 failing: %+v", l)
	}
	// And back: a genuine proof with every GPU's evidence.
	if res = w.proveCC(t, snap, func(ch issued) []map[string]any { return w.allEvidence(t, gpus, ch) }); res.Level != "ATTESTED" {
		t.Fatalf("genuine proof after the flag: %+v", res)
	}
}

// A production gateway (no --cc-trust-simulation) never takes the simulation CA's word.
func TestLevelsSimulationEvidenceOnProductionGatewayIsFlagged(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, false)
	snap := h100Host(42)
	w := o.enrolledWorker(t, "alice", snap)
	gpus := simGPUs(t, snap)
	res := w.proveCC(t, snap, func(ch issued) []map[string]any { return w.allEvidence(t, gpus, ch) })
	if res.Verdict != "FLAGGED" || res.Level != "FLAGGED" || strings.Join(res.Reasons, ",") != "CC_CHAIN_UNTRUSTED" {
		t.Fatalf("simulated evidence on a production gateway: %+v", res)
	}
	for _, g := range res.Gpus {
		if strings.Join(g.Reasons, ",") != "CC_CHAIN_UNTRUSTED" || g.Root != nil {
			t.Fatalf("GPU %d: %+v", g.Index, g)
		}
	}
	if l := o.levels(t, w.deviceID); l.VerificationLevel != "FLAGGED" {
		t.Fatalf("public: %+v", l)
	}
}

// Evidence made for another challenge, another device key or another GPU index does not verify.
func TestLevelsEvidenceBoundToChallengeKeyAndIndex(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(43)
	w := o.enrolledWorker(t, "alice", snap)
	gpus := simGPUs(t, snap)
	pub := w.priv.Public().(ed25519.PublicKey)
	other := newWorker(o).priv.Public().(ed25519.PublicKey)
	cases := []struct {
		name string
		mk   func(ch, spare issued) map[string]any
	}{
		{"another challenge", func(ch, spare issued) map[string]any { return evidenceFor(t, gpus[2], 2, spare, pub, 2) }},
		{"another device key", func(ch, spare issued) map[string]any { return evidenceFor(t, gpus[2], 2, ch, other, 2) }},
		{"another GPU index", func(ch, spare issued) map[string]any { return evidenceFor(t, gpus[2], 2, ch, pub, 3) }},
	}
	for _, c := range cases {
		spare := w.issue(t)
		ch := w.issue(t)
		ev := w.allEvidence(t, gpus, ch)
		ev[2] = c.mk(ch, spare)
		res := w.submit(t, w.proofVars(t, ch, snap, ev))
		if res.Verdict != "FLAGGED" || res.Level != "FLAGGED" || strings.Join(res.Gpus[2].Reasons, ",") != "CC_NONCE_MISMATCH" ||
			strings.Join(res.Reasons, ",") != "CC_NONCE_MISMATCH" {
			t.Fatalf("%s: %+v", c.name, res)
		}
		// The spare challenge is still open: spend it genuinely (keeps the open-challenge cap).
		if res := w.submit(t, w.proofVars(t, spare, snap, w.allEvidence(t, gpus, spare))); res.Level != "ATTESTED" {
			t.Fatalf("%s: the spare challenge: %+v", c.name, res)
		}
	}
}

// One real CC GPU must not attest eight: the same hardware for several GPUs of a proof is
// CC_HARDWARE_REUSED on each of them.
func TestLevelsOneGPUForAllIndicesIsHardwareReused(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(44)
	w := o.enrolledWorker(t, "alice", snap)
	one := simGPU(t, snap.GPUs[0].UUID)
	res := w.proveCC(t, snap, func(ch issued) []map[string]any {
		var ev []map[string]any
		for i := range 8 {
			ev = append(ev, evidenceFor(t, one, i, ch, w.priv.Public().(ed25519.PublicKey), i)) // 8 nonces, one GPU
		}
		return ev
	})
	if res.Verdict != "FLAGGED" || res.Level != "FLAGGED" || strings.Join(res.Reasons, ",") != "CC_HARDWARE_REUSED" {
		t.Fatalf("one GPU for 8: %+v", res)
	}
	for _, g := range res.Gpus {
		if strings.Join(g.Reasons, ",") != "CC_HARDWARE_REUSED" {
			t.Fatalf("GPU %d: %+v", g.Index, g)
		}
	}
	var n int
	if err := o.x.Get(&n, `SELECT count(*) FROM gpu_hardware`); err != nil || n != 0 {
		t.Fatalf("a flagged proof bound %d hardware identities (%v)", n, err)
	}
}

// A hardware identity attested by one device's GPU stays that GPU's: another device presenting
// it is flagged (the earlier keeps ATTESTED), and the GPU UUID presenting other hardware later
// is CC_HARDWARE_CHANGED.
func TestLevelsHardwareBoundAcrossDevicesAndProofs(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snapA, snapB := h100Host(45), h100Host(46)
	a, b := o.enrolledWorker(t, "alice", snapA), o.enrolledWorker(t, "bob", snapB)
	gpusA, gpusB := simGPUs(t, snapA), simGPUs(t, snapB)
	if res := a.proveCC(t, snapA, func(ch issued) []map[string]any { return a.allEvidence(t, gpusA, ch) }); res.Level != "ATTESTED" {
		t.Fatalf("A: %+v", res)
	}
	// B's GPU 0 "is" A's GPU 0 (its evidence, for B's own nonce).
	res := b.proveCC(t, snapB, func(ch issued) []map[string]any {
		ev := b.allEvidence(t, gpusB, ch)
		ev[0] = evidenceFor(t, gpusA[0], 0, ch, b.priv.Public().(ed25519.PublicKey), 0)
		return ev
	})
	if res.Verdict != "FLAGGED" || strings.Join(res.Reasons, ",") != "CC_HARDWARE_REUSED" || strings.Join(res.Gpus[0].Reasons, ",") != "CC_HARDWARE_REUSED" {
		t.Fatalf("B presenting A's hardware: %+v", res)
	}
	if res := a.proveCC(t, snapA, func(ch issued) []map[string]any { return a.allEvidence(t, gpusA, ch) }); res.Level != "ATTESTED" {
		t.Fatalf("A after B's claim: %+v", res)
	}
	if l := o.levels(t, a.deviceID); l.VerificationLevel != "ATTESTED" {
		t.Fatalf("A public: %+v", l)
	}
	// A's GPU 3 now presents other hardware under its UUID.
	res = a.proveCC(t, snapA, func(ch issued) []map[string]any {
		ev := a.allEvidence(t, gpusA, ch)
		ev[3] = evidenceFor(t, simGPU(t, "another board"), 3, ch, a.priv.Public().(ed25519.PublicKey), 3)
		return ev
	})
	if res.Verdict != "FLAGGED" || strings.Join(res.Reasons, ",") != "CC_HARDWARE_CHANGED" || strings.Join(res.Gpus[3].Reasons, ",") != "CC_HARDWARE_CHANGED" {
		t.Fatalf("A's GPU 3 with other hardware: %+v", res)
	}
	// A proof without evidence for GPUs that attested before: SELF_REPORTED, not flagged.
	if res := a.proveCC(t, snapA, nil); res.Verdict != "PASSED" || res.Level != "SELF_REPORTED" {
		t.Fatalf("A without evidence: %+v", res)
	}
}

// Malformed evidence is refused as BAD_USER_INPUT before the challenge is touched: nothing is
// stored and the same challenge then takes a genuine proof.
func TestLevelsBadEvidenceInputStoresNothing(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(47)
	w := o.enrolledWorker(t, "alice", snap)
	gpus := simGPUs(t, snap)
	ch := w.issue(t)
	good := w.allEvidence(t, gpus, ch)
	entry := func(idx int, report, chain string) map[string]any {
		return map[string]any{"index": idx, "report": report, "certificateChain": chain}
	}
	okReport, okChain := good[0]["report"].(string), good[0]["certificateChain"].(string)
	big := base64.StdEncoding.EncodeToString(make([]byte, 16<<10+1))
	var many []map[string]any
	for range 65 {
		many = append(many, entry(0, okReport, okChain))
	}
	cases := []struct {
		name string
		ev   []map[string]any
		msg  string
	}{
		{"65 entries", many, "at most 64"},
		{"index past the snapshot", append(slices.Clone(good[:7]), entry(8, okReport, okChain)), "not a GPU of the snapshot"},
		{"negative index", []map[string]any{entry(-1, okReport, okChain)}, "not a GPU of the snapshot"},
		{"duplicate index", append(slices.Clone(good), entry(3, okReport, okChain)), "given twice"},
		{"report not base64", []map[string]any{entry(0, "%%%not base64%%%", okChain)}, "report must be non-empty base64"},
		{"empty report", []map[string]any{entry(0, "", okChain)}, "report must be non-empty base64"},
		{"report over 16 KiB", []map[string]any{entry(0, big, okChain)}, "over 16 KiB"},
		{"chain neither PEM nor base64", []map[string]any{entry(0, okReport, "not a chain!")}, "certificateChain must be non-empty base64"},
		{"chain PEM without a block", []map[string]any{entry(0, okReport, "-----BEGIN CERTIFICATE-----\nnope")}, "not PEM"},
		{"chain over 16 KiB", []map[string]any{entry(0, okReport, big)}, "over 16 KiB"},
		{"PEM chain over 16 KiB", []map[string]any{entry(0, okReport, okChain+strings.Repeat(" ", 16<<10)+okChain)}, "over 16 KiB"},
	}
	count := func() (n int) {
		t.Helper()
		if err := o.x.Get(&n, `SELECT (SELECT count(*) FROM attestations WHERE device_id = $1) +
			(SELECT count(*) FROM challenges WHERE device_id = $1 AND consumed_at IS NOT NULL) + (SELECT count(*) FROM gpu_hardware)`, w.deviceID); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	for _, c := range cases {
		r := w.call(submitCC, w.proofVars(t, ch, snap, c.ev))
		r.WantError(t, "BAD_USER_INPUT", c.msg)
		if r.Status != http.StatusOK {
			t.Fatalf("%s: HTTP %d", c.name, r.Status)
		}
		if n := count(); n != before {
			t.Fatalf("%s stored something", c.name)
		}
	}
	if res := w.submit(t, w.proofVars(t, ch, snap, good)); res.Verdict != "PASSED" || res.Level != "ATTESTED" {
		t.Fatalf("the challenge after the refusals: %+v", res)
	}
}

// GpuEvidence is the owner's alone: anonymous callers, bad tokens, forged headers, other users,
// admins and devices get no attestation facts.
func TestLevelsEvidenceFactsAreOwnerOnly(t *testing.T) {
	t.Parallel()
	o := newCCOwners(t, true)
	snap := h100Host(48)
	w := o.enrolledWorker(t, "alice", snap)
	gpus := simGPUs(t, snap)
	if res := w.proveCC(t, snap, func(ch issued) []map[string]any { return w.allEvidence(t, gpus, ch) }); res.Level != "ATTESTED" {
		t.Fatalf("proof: %+v", res)
	}
	const q = `query($id: ID!) { device(id: $id) { verificationLevel private { attestations { level gpus { root } } } } }`
	vars := map[string]any{"id": w.deviceID}
	callers := []struct {
		name  string
		send  func() response
		owner bool
	}{
		{"anonymous", func() response { return o.as(nil, q, vars) }, false},
		{"bad token", func() response { return o.as(bearer("not.a.token"), q, vars) }, false},
		{"forged user headers", func() response {
			return o.as(http.Header{"X-User-Id": {o.alice}, "X-Device-Id": {w.deviceID}}, q, vars)
		}, false},
		{"other user", func() response { return o.as(o.user("bob"), q, vars) }, false},
		{"admin", func() response { return o.as(o.user("admin", "ADMIN"), q, vars) }, false},
		{"the device itself", func() response { return w.call(q, vars) }, false},
		{"owner", func() response { return o.as(o.user("alice"), q, vars) }, true},
	}
	for _, c := range callers {
		r := c.send()
		body := string(r.RawBody)
		hasFacts := strings.Contains(body, "SIMULATION") || strings.Contains(body, `"gpus"`)
		switch {
		case c.owner && (!hasFacts || len(r.Errors) > 0):
			t.Fatalf("%s: want the facts, got %s", c.name, body)
		case !c.owner && hasFacts:
			t.Fatalf("%s sees GPU evidence: %s", c.name, body)
		case !c.owner && len(r.Errors) == 0 && !strings.Contains(body, `"private":null`):
			t.Fatalf("%s: want private null, got %s", c.name, body)
		}
	}
}

// networkStats counts devices by their level and GPUs by their own level (an ATTESTED GPU in a
// SELF_REPORTED device counts as ATTESTED); the demo data has every level; a cursor of another
// order or a forged level key is refused.
func TestLevelsStatsAndCursors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 400, gateway.Config{})
	var stats struct {
		NetworkStats struct {
			Devices, Gpus       int
			ByVerificationLevel []struct {
				Level         string
				Devices, Gpus int
			}
			ByVerification []struct {
				Verification  string
				Devices, Gpus int
			}
		}
	}
	e.post(`{ networkStats { devices gpus byVerificationLevel { level devices gpus } byVerification { verification devices gpus } } }`, nil).Decode(t, &stats)
	var want []struct {
		Level   string `db:"level"`
		Devices int    `db:"devices"`
		GPUs    int    `db:"gpus"`
	}
	// Counted from the gpus rows themselves, not from the devices' attested_gpus.
	if err := e.x.Select(&want, `SELECT l.level,
			(SELECT count(*) FROM devices d WHERE d.removed_at IS NULL AND d.verification_level = l.level) AS devices,
			(SELECT count(*) FROM gpus g JOIN devices d ON d.id = g.device_id WHERE d.removed_at IS NULL AND g.verification_level = l.level) AS gpus
		FROM unnest(ARRAY['FLAGGED', 'PENDING', 'SELF_REPORTED', 'ATTESTED']) WITH ORDINALITY AS l(level, n) ORDER BY l.n`); err != nil {
		t.Fatal(err)
	}
	got := stats.NetworkStats.ByVerificationLevel
	if len(got) != 4 {
		t.Fatalf("byVerificationLevel %+v; the demo data should have every level", got)
	}
	devices, gpus := 0, 0
	for i, w := range want {
		if got[i].Level != w.Level || got[i].Devices != w.Devices || got[i].Gpus != w.GPUs || w.Devices == 0 {
			t.Fatalf("byVerificationLevel[%d] = %+v, want %+v", i, got[i], w)
		}
		devices, gpus = devices+w.Devices, gpus+w.GPUs
	}
	if devices != stats.NetworkStats.Devices || gpus != stats.NetworkStats.Gpus {
		t.Fatalf("levels add up to %d devices and %d GPUs; totals %d and %d", devices, gpus, stats.NetworkStats.Devices, stats.NetworkStats.Gpus)
	}
	var mixed int // SELF_REPORTED devices with ATTESTED GPUs: the GPU counts differ from the devices'
	if err := e.x.Get(&mixed, `SELECT count(*) FROM devices d WHERE verification_level = 'SELF_REPORTED'
		AND EXISTS (SELECT 1 FROM gpus g WHERE g.device_id = d.id AND g.verification_level = 'ATTESTED')`); err != nil || mixed == 0 {
		t.Fatalf("%d SELF_REPORTED devices with ATTESTED GPUs in the demo data (%v)", mixed, err)
	}
	for _, v := range stats.NetworkStats.ByVerification {
		if v.Verification == "VERIFIED" && v.Devices != want[2].Devices+want[3].Devices {
			t.Fatalf("deprecated VERIFIED counts %d devices; SELF_REPORTED+ATTESTED are %d", v.Devices, want[2].Devices+want[3].Devices)
		}
	}

	byLevel := map[string]any{"field": "VERIFICATION_LEVEL", "direction": "DESC"}
	first := e.page(5, nil, nil, byLevel)
	if first.Edges[0].Node.Level != "ATTESTED" {
		t.Fatalf("strongest first: %+v", first.Edges[0].Node)
	}
	byCreated := e.page(5, nil, nil, map[string]any{"field": "CREATED_AT", "direction": "DESC"})
	vars := map[string]any{"first": 5, "after": byCreated.PageInfo.EndCursor, "orderBy": byLevel}
	e.post(listQuery, vars).WantError(t, "BAD_USER_INPUT", "cursor for another order")
	vars = map[string]any{"first": 5, "after": first.PageInfo.EndCursor, "orderBy": map[string]any{"field": "VERIFICATION_LEVEL", "direction": "ASC"}}
	e.post(listQuery, vars).WantError(t, "BAD_USER_INPUT", "cursor for another order")
	for _, key := range []string{"9/2025-01-01T00:00:00Z", "x/2025-01-01T00:00:00Z", "3", "3/yesterday", "-1/2025-01-01T00:00:00Z"} {
		forged, _ := json.Marshal(map[string]any{"v": 1, "o": "VERIFICATION_LEVEL_DESC", "k": key, "i": first.Edges[0].Node.ID})
		vars = map[string]any{"first": 5, "after": base64.RawURLEncoding.EncodeToString(forged), "orderBy": byLevel}
		e.post(listQuery, vars).WantError(t, "BAD_USER_INPUT", "not a cursor")
	}
	e.post(listQuery, map[string]any{"first": 5, "filter": map[string]any{"verificationLevel": "VERIFIED"}}).WantError(t, "BAD_USER_INPUT", "not a valid VerificationLevel")
}

// With --cc-require-revocation (or --cc-require-rims), evidence that verified but whose
// revocation (measurements) could not be checked leaves the GPU SELF_REPORTED, the fact recorded.
func TestLevelsRequirementsKeepUncheckedGPUsSelfReported(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cfg  resolvers.WorkerConfig
	}{
		{"revocation", resolvers.WorkerConfig{RequireRevocation: true}},
		{"measurements", resolvers.WorkerConfig{RequireRIMs: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newIDP(t)
			c.cfg.Difficulty, c.cfg.CC = 8, nvidia.New(nvidia.Options{TrustSimulation: true})
			o := newOwnersWith(t, p, gateway.Config{Verifier: p.verifier, RoleNames: map[model.Role]string{model.RoleAdmin: "ADMIN"}, Workers: c.cfg})
			snap := h100Host(49)
			w := o.enrolledWorker(t, "alice", snap)
			gpus := simGPUs(t, snap)
			res := w.proveCC(t, snap, func(ch issued) []map[string]any { return w.allEvidence(t, gpus, ch) })
			if res.Verdict != "PASSED" || res.Level != "SELF_REPORTED" || judgedLevels(res) != repeat("SELF_REPORTED", 8) {
				t.Fatalf("%+v", res)
			}
			for _, g := range res.Gpus {
				if !g.EvidenceSubmitted || g.Root == nil || len(g.Reasons) != 0 || g.RevocationChecked || g.MeasurementsChecked {
					t.Fatalf("GPU %d facts: %+v", g.Index, g)
				}
			}
		})
	}
}
