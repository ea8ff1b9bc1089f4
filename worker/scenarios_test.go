package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Khan/genqlient/graphql"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/worker/client"
)

// The acceptance command: `gpugate worker --server URL --simulate dgxh100 --enroll TOKEN
// --key-file F --once` exits 0 and the device shows VERIFIED and UP in the public listing.
func TestAcceptanceCommand(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	key := keyPath(t, "worker.json")
	var stdout, stderr bytes.Buffer
	code := mainContext(context.Background(), []string{"--server", g.url, "--simulate", "dgxh100",
		"--enroll", g.token(t, "alice"), "--key-file", key, "--once"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	for _, want := range []string{"created a new device key", "collected the GPU snapshot", "enrolled", "challenge received",
		"proof of work done", "proof passed", "heartbeat sent"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, stderr.String())
		}
	}
	d := g.listed(t, deviceOf(t, key))
	if d.Verification != client.VerificationStateVerified || d.Status != client.DeviceStatusUp || d.GpuCount != 8 {
		t.Fatalf("public listing: %+v", d)
	}
	// A second run with the same key file is the same device with the same GPUs: it passes
	// again without a token.
	stderr.Reset()
	if code := mainContext(context.Background(), []string{"--server", g.url, "--simulate", "dgxh100", "--key-file", key, "--once"},
		nil, &stdout, &stderr); code != 0 {
		t.Fatalf("second run: exit %d:\n%s", code, stderr.String())
	}
	if rows := g.attestations(t, deviceOf(t, key)); len(rows) != 2 || rows[0].Verdict != "PASSED" {
		t.Fatalf("attestations after the restart: %+v", rows)
	}
}

func TestGenuineSimulatedHostsPass(t *testing.T) {
	t.Parallel()
	g := startGateway(t, devConfig(), nil)
	for _, profile := range []string{"dgxa100", "dgxh100", "dgxh200", "dgxb200", "dgxh100-cc"} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			key := keyPath(t, "key.json")
			if err := Run(context.Background(), g.options(t, profile, key, g.token(t, "alice"))); err != nil {
				t.Fatalf("run: %v", err)
			}
			id := deviceOf(t, key)
			rows := g.attestations(t, id)
			if len(rows) != 1 || rows[0].Verdict != "PASSED" || len(rows[0].Reasons) != 0 {
				t.Fatalf("attestations: %+v", rows)
			}
			d := g.listed(t, id)
			if d.Verification != client.VerificationStateVerified || d.Status != client.DeviceStatusUp || d.GpuCount != 8 {
				t.Fatalf("public listing: %+v", d)
			}
		})
	}
}

// A production gateway (simulated GPUs not allowed) flags the go-nvml hosts whose PCI ids exist
// only in the mock, and still verifies those whose ids are real silicon.
func TestSimulatedGPUsAreFlaggedInProduction(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	for profile, want := range map[string][]string{"dgxh200": {"SIMULATED_GPU"}, "dgxb200": {"SIMULATED_GPU"}, "dgxh100": nil} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			key := keyPath(t, "key.json")
			err := Run(context.Background(), g.options(t, profile, key, g.token(t, "alice")))
			rows := g.attestations(t, deviceOf(t, key))
			if want == nil {
				if err != nil || len(rows) != 1 || rows[0].Verdict != "PASSED" {
					t.Fatalf("run: %v, attestations %+v", err, rows)
				}
				return
			}
			var flagged *FlaggedError
			if !errors.As(err, &flagged) || !sameSet(flagged.Reasons, want) {
				t.Fatalf("run: %v, want FLAGGED with %v", err, want)
			}
			if len(rows) != 1 || rows[0].Verdict != "FLAGGED" || !sameSet(rows[0].Reasons, want) {
				t.Fatalf("attestations: %+v", rows)
			}
		})
	}
}

func TestCounterfeitSimulatedHostsAreFlagged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	for _, p := range Profiles {
		if !p.Counterfeit || p.CC {
			continue // the CC counterfeits need a gateway that trusts the simulation CA: cc_scenarios_test.go
		}
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			key := keyPath(t, "key.json")
			err := Run(context.Background(), g.options(t, p.Name, key, g.token(t, "bob")))
			var flagged *FlaggedError
			if !errors.As(err, &flagged) || !sameSet(flagged.Reasons, p.Expect) || flagged.Verification != "FLAGGED" {
				t.Fatalf("run: %v, want FLAGGED with %v", err, p.Expect)
			}
			id := deviceOf(t, key)
			rows := g.attestations(t, id)
			if len(rows) != 1 || rows[0].Verdict != "FLAGGED" || !sameSet(rows[0].Reasons, p.Expect) {
				t.Fatalf("attestations: %+v", rows)
			}
			if d := g.listed(t, id); d.Verification != client.VerificationStateFlagged {
				t.Fatalf("public listing: %+v", d)
			}
		})
	}
}

func TestMainPrintsTheReasonsOfAFlaggedProof(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	var stdout, stderr bytes.Buffer
	code := mainContext(context.Background(), []string{"--server", g.url, "--simulate", "fake-h100-24g",
		"--enroll", g.token(t, "bob"), "--key-file", keyPath(t, "k.json"), "--once"}, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "FLAGGED (device level FLAGGED)") ||
		!strings.Contains(stderr.String(), "MEMORY_OUT_OF_BAND: "+attest.ReasonMemoryOutOfBand.Description()) {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}

// A UUID cloned onto another owner's device: the clone, the later claimant, is flagged; the
// device that enrolled the UUID first is not.
func TestClonedUUIDsFlagTheLaterClaimant(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	original := keyPath(t, "alice.json")
	if err := Run(context.Background(), g.options(t, "dgxh100", original, g.token(t, "alice"))); err != nil {
		t.Fatalf("original: %v", err)
	}
	cloner := keyPath(t, "bob.json")
	o := g.options(t, "dgxh100", cloner, g.token(t, "bob"))
	o.CloneUUIDsFrom = original
	err := Run(context.Background(), o)
	var flagged *FlaggedError
	if !errors.As(err, &flagged) || !sameSet(flagged.Reasons, []string{"UUID_ON_ANOTHER_DEVICE"}) {
		t.Fatalf("clone: %v", err)
	}
	// The earlier enrollment keeps its claim and its verification: a newcomer listing public
	// UUIDs must not be able to flag other owners' devices (the conflict goes to the audit log).
	first := g.attestations(t, deviceOf(t, original))
	if len(first) != 1 || first[0].Verdict != "PASSED" {
		t.Fatalf("the original device's attestations: %+v", first)
	}
	if d := g.listed(t, deviceOf(t, original)); d.Verification != client.VerificationStateVerified {
		t.Fatalf("the original device: %+v", d)
	}
}

// enrolled runs one genuine cycle and returns a signed client for the device, its key file and
// a fresh snapshot of its (simulated) GPUs.
func enrolled(t *testing.T, g *testGateway, user string) (graphql.Client, *KeyFile, attest.Snapshot) {
	t.Helper()
	path := keyPath(t, user+".json")
	if err := Run(context.Background(), g.options(t, "dgxh100", path, g.token(t, user))); err != nil {
		t.Fatalf("enroll %s: %v", user, err)
	}
	k, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lib, _ := Simulate("dgxh100", k.PublicKey(), nil)
	snap, err := Collect(lib)
	if err != nil {
		t.Fatal(err)
	}
	return client.New(g.url+"/graphql", k.Key(), k.DeviceID, nil, 10*time.Second), k, snap
}

func challenge(t *testing.T, c graphql.Client, deviceID string) Challenge {
	t.Helper()
	res, err := client.RequestChallenge(context.Background(), c, deviceID)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	nonce, _ := base64.StdEncoding.DecodeString(res.RequestChallenge.Nonce)
	return Challenge{ID: res.RequestChallenge.Id, Nonce: nonce, Difficulty: res.RequestChallenge.Difficulty}
}

func submit(t *testing.T, c graphql.Client, deviceID string, p attest.Proof) client.SubmitProofSubmitProofProofResult {
	t.Helper()
	in, err := ProofInput(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.SubmitProof(context.Background(), c, deviceID, in)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return res.SubmitProof
}

func prove(t *testing.T, k *KeyFile, ch Challenge, snap attest.Snapshot) attest.Proof {
	t.Helper()
	p, err := attest.Prove(context.Background(), k.Key(), ch.ID, ch.Nonce, ch.Difficulty, snap)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A retried submission of the same proof (the worker's client re-signs it) gets the original
// verdict; only a different proof for the spent challenge is flagged.
func TestReplayedProofIsFlagged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	c, k, snap := enrolled(t, g, "alice")
	p := prove(t, k, challenge(t, c, k.DeviceID), snap)
	if r := submit(t, c, k.DeviceID, p); r.Verdict != client.AttestationVerdictPassed {
		t.Fatalf("first submission: %+v", r)
	}
	// The same proof again, bypassing the agent (which never submits twice): a retry.
	if r := submit(t, c, k.DeviceID, p); r.Verdict != client.AttestationVerdictPassed || r.Verification != client.VerificationStateVerified {
		t.Fatalf("retry: %+v", r)
	}
	p.Counter++ // another proof for the same challenge
	r := submit(t, c, k.DeviceID, p)
	if r.Verdict != client.AttestationVerdictFlagged || !sameSet(r.Reasons, []string{"CHALLENGE_REPLAYED"}) {
		t.Fatalf("replay: %+v", r)
	}
}

func TestExpiredChallengeIsFlagged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{ChallengeTTL: time.Millisecond}, nil)
	path := keyPath(t, "k.json")
	// The agent does not submit a proof for a challenge that expired: it tries new ones, then
	// gives up.
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.GiveUpAfter = 300 * time.Millisecond
	err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "expired before the proof could be submitted") {
		t.Fatalf("run with expiring challenges: %v", err)
	}
	id := deviceOf(t, path)
	if rows := g.attestations(t, id); len(rows) != 0 {
		t.Fatalf("the agent submitted proofs for expired challenges: %+v", rows)
	}
	// Submitted anyway (bypassing the agent), the proof is flagged.
	k, _ := LoadKeyFile(path)
	c := client.New(g.url+"/graphql", k.Key(), id, nil, 10*time.Second)
	lib, _ := Simulate("dgxh100", k.PublicKey(), nil)
	snap, _ := Collect(lib)
	ch := challenge(t, c, id)
	time.Sleep(5 * time.Millisecond)
	r := submit(t, c, id, prove(t, k, ch, snap))
	if r.Verdict != client.AttestationVerdictFlagged || !sameSet(r.Reasons, []string{"CHALLENGE_EXPIRED"}) {
		t.Fatalf("expired: %+v", r)
	}
}

// Device B's key acting for device A is refused, and nothing is stored for A.
func TestAnotherDevicesKeyIsRefused(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	cA, kA, snapA := enrolled(t, g, "alice")
	_, kB, _ := enrolled(t, g, "bob")
	before := len(g.attestations(t, kA.DeviceID))
	chA := challenge(t, cA, kA.DeviceID)
	forged := prove(t, kB, chA, snapA) // B does the work for A's challenge with its own key
	in, _ := ProofInput(forged, nil)

	// B's key claiming to be device A: the signature does not verify under A's keys.
	asA := client.New(g.url+"/graphql", kB.Key(), kA.DeviceID, nil, 10*time.Second)
	_, err := client.SubmitProof(context.Background(), asA, kA.DeviceID, in)
	if _, code, _, _ := gqlErrorOf(err); code != "UNAUTHENTICATED" {
		t.Fatalf("B's key signing as A: %v", err)
	}
	if _, err := client.RequestChallenge(context.Background(), asA, kA.DeviceID); err == nil {
		t.Fatal("B's key got a challenge for A")
	}
	// B signing as itself, acting on A: forbidden.
	asB := client.New(g.url+"/graphql", kB.Key(), kB.DeviceID, nil, 10*time.Second)
	_, err = client.SubmitProof(context.Background(), asB, kA.DeviceID, in)
	if _, code, _, _ := gqlErrorOf(err); code != "FORBIDDEN" {
		t.Fatalf("B acting on A: %v", err)
	}
	// B submitting A's challenge as its own: a foreign challenge, flagged on B.
	r := submit(t, asB, kB.DeviceID, forged)
	if r.Verdict != client.AttestationVerdictFlagged || !sameSet(r.Reasons, []string{"CHALLENGE_FOREIGN"}) {
		t.Fatalf("B submitting A's challenge: %+v", r)
	}
	if after := len(g.attestations(t, kA.DeviceID)); after != before {
		t.Fatalf("something was stored for A: %d attestations, had %d", after, before)
	}
	var consumed bool
	if err := g.x.Get(&consumed, `SELECT consumed_at IS NOT NULL FROM challenges WHERE id = $1`, chA.ID); err != nil || consumed {
		t.Fatalf("A's challenge was consumed (%v)", err)
	}
	// A can still use its challenge.
	if r := submit(t, cA, kA.DeviceID, prove(t, kA, chA, snapA)); r.Verdict != client.AttestationVerdictPassed {
		t.Fatalf("A's own proof: %+v", r)
	}
}

func TestEnrollmentTokenWorksOnce(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	token := g.token(t, "alice")
	if err := Run(context.Background(), g.options(t, "dgxh100", keyPath(t, "one.json"), token)); err != nil {
		t.Fatalf("first enrollment: %v", err)
	}
	second := keyPath(t, "two.json")
	tr := &countingTransport{}
	o := g.options(t, "dgxh200", second, token)
	o.Transport = tr
	err := Run(context.Background(), o)
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.Code != "BAD_USER_INPUT" || !strings.Contains(ge.Message, "unknown, expired or already used") {
		t.Fatalf("second enrollment: %v", err)
	}
	if !strings.Contains(err.Error(), "new enrollment token") {
		t.Fatalf("the error does not say what to do: %v", err)
	}
	if n := tr.count("EnrollDevice"); n != 1 {
		t.Fatalf("a refused enrollment was retried: %d attempts", n)
	}
	if k, _ := LoadKeyFile(second); k.DeviceID != "" {
		t.Fatalf("the refused worker recorded device %s", k.DeviceID)
	}
}

func TestSnapshotEditedAfterHashingIsFlagged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	c, k, snap := enrolled(t, g, "alice")

	p := prove(t, k, challenge(t, c, k.DeviceID), snap)
	p.Snapshot.GPUs[0].MemoryTotalBytes = 141 << 30 // edited after hashing, hash kept
	if r := submit(t, c, k.DeviceID, p); r.Verdict != client.AttestationVerdictFlagged || !sameSet(r.Reasons, []string{"SNAPSHOT_HASH_MISMATCH"}) {
		t.Fatalf("edited snapshot with its old hash: %+v", r)
	}

	p = prove(t, k, challenge(t, c, k.DeviceID), snap)
	p.Snapshot.GPUs[0].Name = "NVIDIA H200"
	p.SnapshotHash = nil // no declared hash: the work or the signature no longer matches
	r := submit(t, c, k.DeviceID, p)
	if r.Verdict != client.AttestationVerdictFlagged || len(r.Reasons) != 1 ||
		(r.Reasons[0] != "INSUFFICIENT_WORK" && r.Reasons[0] != "BAD_SIGNATURE") {
		t.Fatalf("edited snapshot without a hash: %+v", r)
	}
}

// The agent never submits a second proof for a challenge, even when the gateway hands out the
// same challenge again.
func TestAgentNeverSubmitsTwiceForOneChallenge(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	path := keyPath(t, "k.json")
	if err := Run(context.Background(), g.options(t, "dgxh100", path, g.token(t, "alice"))); err != nil {
		t.Fatal(err)
	}
	k, _ := LoadKeyFile(path)
	if k.LastChallengeID == "" {
		t.Fatal("the submitted challenge is not recorded in the key file")
	}
	// A gateway that replays the last challenge id to the worker.
	tr := &replayChallenge{id: k.LastChallengeID}
	o := g.options(t, "dgxh100", path, "")
	o.Transport = tr
	o.GiveUpAfter = 0
	err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "already submitted") {
		t.Fatalf("run: %v", err)
	}
	if tr.submits != 0 {
		t.Fatalf("%d proofs submitted for a used challenge", tr.submits)
	}
}

// replayChallenge rewrites requestChallenge responses to carry a fixed challenge id.
type replayChallenge struct {
	id      string
	submits int
}

func (r *replayChallenge) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := readBody(req)
	if bytes.Contains(body, []byte(`"operationName":"SubmitProof"`)) {
		r.submits++
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !bytes.Contains(body, []byte(`"operationName":"RequestChallenge"`)) {
		return resp, err
	}
	out, _ := readAll(resp)
	out = challengeID.ReplaceAll(out, []byte(`"id":"`+r.id+`"`))
	resp.Body = nopCloser(out)
	resp.ContentLength = int64(len(out))
	resp.Header.Del("Content-Length")
	return resp, nil
}
