package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/gpugate/gpugate/resolvers"
)

// Worker limits hold per device: keys an owner adds to a device share the device's allowance, so
// adding keys does not multiply it.
func TestWorkerLimitsAreNotMultipliedByAddedKeys(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{ChallengeRate: resolvers.Rate{Every: time.Hour, Burst: 2}})
	w := o.enrolledWorker(t, "alice", h100Host(70))
	const challenge = `mutation($d: ID!) { requestChallenge(deviceId: $d) { id } }`
	vars := map[string]any{"d": w.deviceID}
	for range 2 {
		w.call(challenge, vars).Decode(t, &struct{}{})
	}
	w.call(challenge, vars).WantError(t, "RATE_LIMITED", "")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	o.as(o.user("alice"), `mutation($id: ID!, $k: String!) { addDeviceKey(id: $id, publicKey: $k) { id } }`,
		map[string]any{"id": w.deviceID, "k": pub}).Decode(t, &struct{}{})
	second := &worker{o: o, priv: priv, deviceID: w.deviceID}
	second.call(challenge, vars).WantError(t, "RATE_LIMITED", "")
}

// createEnrollmentToken is limited per user: each token enrolls a device whose snapshot and row
// outlive it, so unlimited tokens were an unlimited evidence flood for any account.
func TestEnrollmentTokensAreRateLimited(t *testing.T) {
	t.Parallel()
	o := newEvidenceOwners(t, resolvers.WorkerConfig{EnrollmentTokenRate: resolvers.Rate{Every: time.Hour, Burst: 3}})
	for range 3 {
		o.enrollmentToken(t, "alice")
	}
	o.as(o.user("alice"), `mutation { createEnrollmentToken { token } }`, nil).WantError(t, "RATE_LIMITED", "")
	var n int
	if err := o.x.Get(&n, `SELECT count(*) FROM enrollment_tokens`); err != nil || n != 3 {
		t.Fatalf("tokens stored: %d (%v), want 3", n, err)
	}
	o.enrollmentToken(t, "bob") // another user has its own allowance
}
