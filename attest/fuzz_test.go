package attest

// Fuzz targets for what workers send (docs/security.md, "Fuzzing"): snapshot JSON, proofs and the
// request signature header's canonical form. FuzzParseSignature (request_test.go) and
// FuzzCanonical (snapshot_test.go) cover the header round trip and the snapshot hash.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzSentinel reports whether err wraps one of the package's sentinels.
func fuzzSentinel(err error) bool {
	for _, s := range []error{ErrMalformed, ErrBadSignature, ErrInsufficientWork, ErrSnapshotMismatch, ErrStale} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzParseSnapshot: ParseSnapshot never panics, refuses with ErrMalformed only, and what it
// accepts passes Validate, survives a JSON round trip unchanged (same value, same hash), hashes
// the same in canonical GPU order, and stays within the size limits.
func FuzzParseSnapshot(f *testing.F) {
	for _, s := range []Snapshot{realH100(), dgxA100(f, 0), dgxB200(f, 0), {}} {
		js, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
	}
	f.Add([]byte(`{"driverVersion":"1","attestation":null}`))
	f.Add([]byte(`{"attestation":{"nonce":"","gpus":[]}}`))
	f.Add([]byte(`{"gpus":[{"uuid":"GPU-\u0000"}]}`))
	f.Add([]byte(`{"GPUS":[{"UUID":"a","uuid":"b"}]} `))
	f.Add([]byte(`{"gpus":[{"pciDeviceId":4294967295,"computeMajor":-1}]}{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSnapshot(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSnapshot: %v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseSnapshot accepted a snapshot Validate refuses: %v", err)
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseSnapshot(js)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", js, err)
		}
		if !reflect.DeepEqual(normalGPUs(back), normalGPUs(s)) || back.Hash() != s.Hash() {
			t.Fatalf("JSON round trip changed %+v into %+v", s, back)
		}
		if s.Sorted().Hash() != s.Hash() {
			t.Fatal("Sorted changed the hash")
		}
		if len(s.GPUs) > MaxSnapshotGPUs {
			t.Fatalf("%d GPUs accepted", len(s.GPUs))
		}
		_ = CheckSnapshot(s) // findings are verdicts: never a panic
	})
}

// normalGPUs treats a nil and an empty GPU list alike (JSON writes both as what it read).
func normalGPUs(s Snapshot) Snapshot {
	if len(s.GPUs) == 0 {
		s.GPUs = nil
	}
	return s
}

// FuzzVerifyProof: VerifyProof never panics, every refusal wraps a sentinel, and it accepts
// nothing but the proof the device key signed: whatever verifies has that proof's challenge,
// counter and snapshot hash (Ed25519 is not forgeable, so a fuzzer finding another is a bug).
func FuzzVerifyProof(f *testing.F) {
	pub, priv := testKey(7)
	nonce := bytes32(9)
	const difficulty = 4
	genuine, err := Prove(context.Background(), priv, "c-1", nonce, difficulty, realH100())
	if err != nil {
		f.Fatal(err)
	}
	snap, _ := json.Marshal(genuine.Snapshot)
	f.Add(genuine.ChallengeID, genuine.Counter, snap, genuine.SnapshotHash, genuine.Signature)
	f.Add(genuine.ChallengeID, genuine.Counter+1, snap, []byte(nil), genuine.Signature)
	f.Add("", uint64(0), []byte(`{}`), []byte{1}, []byte{})
	f.Add(strings.Repeat("c", MaxChallengeIDBytes+1), uint64(1<<63), []byte(`{"gpus":null}`), genuine.SnapshotHash[:31], genuine.Signature[:63])
	want := Transcript(genuine.ChallengeID, nonce, pub, genuine.Snapshot.Hash(), genuine.Counter)
	f.Fuzz(func(t *testing.T, challengeID string, counter uint64, snapJSON, snapHash, sig []byte) {
		s, err := ParseSnapshot(snapJSON)
		if err != nil {
			return // FuzzParseSnapshot's
		}
		p := Proof{ChallengeID: challengeID, Counter: counter, Snapshot: s, SnapshotHash: snapHash, Signature: sig}
		err = VerifyProof(pub, nonce, difficulty, p)
		if err != nil {
			if !fuzzSentinel(err) {
				t.Fatalf("VerifyProof: %v wraps no sentinel", err)
			}
			return
		}
		if got := Transcript(challengeID, nonce, pub, s.Hash(), counter); !bytes.Equal(got, want) {
			t.Fatalf("VerifyProof accepted a proof the key never signed: %+v", p)
		}
	})
}

// FuzzSignatureHeaderCanonical: the only freedom ParseSignature allows is the order of its four
// fields. An accepted header holds exactly the fields of its canonical String() (no leading
// zeros in ts, no second base64 spelling), so one signed request has one header spelling.
func FuzzSignatureHeaderCanonical(f *testing.F) {
	_, priv := testKey(1)
	h := SignRequest(priv, "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71", "POST", "/graphql", reqNow, reqBody)
	f.Add(h)
	fields := strings.Split(h, " ")
	f.Add(strings.Join([]string{fields[0], fields[4], fields[3], fields[2], fields[1]}, " "))
	f.Add(strings.Replace(h, "ts=", "ts=0", 1))
	f.Add(strings.Replace(h, "ts=", "ts=+", 1))
	f.Add("v1 device= ts=0 nonce=AAAAAAAAAAAAAAAAAAAAAA sig=" + strings.Repeat("A", 86))
	f.Add("v1 device= ts=00 nonce=AAAAAAAAAAAAAAAAAAAAAA sig=" + strings.Repeat("A", 86))
	f.Fuzz(func(t *testing.T, header string) {
		s, err := ParseSignature(header)
		if err != nil {
			return // FuzzParseSignature checks the errors
		}
		got, want := strings.Split(header, " "), strings.Split(s.String(), " ")
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("ParseSignature accepted %q, a second spelling of %q", header, s.String())
		}
	})
}
