package attest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// benchSnapshot is an 8-GPU HGX H100 with every field filled, the usual proof payload.
func benchSnapshot() Snapshot { return realH100() }

func BenchmarkVerifyProof(b *testing.B) {
	pub, priv := testKey(1)
	nonce := bytes32(3)
	p, err := Prove(context.Background(), priv, "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71", nonce, 16, benchSnapshot())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyProof(pub, nonce, 16, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyProofRefusedWork is the cost of a bogus proof: refused before the signature.
func BenchmarkVerifyProofRefusedWork(b *testing.B) {
	pub, priv := testKey(1)
	nonce := bytes32(3)
	p, err := SignProof(priv, nonce, Proof{ChallengeID: "c", Snapshot: benchSnapshot()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyProof(pub, nonce, 40, p); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkSnapshotHash(b *testing.B) {
	s := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Hash()
	}
}

func BenchmarkVerifyRequest(b *testing.B) {
	pub, priv := testKey(1)
	now := time.Unix(1_750_000_000, 0)
	body := make([]byte, 4096) // a submitProof mutation with an 8-GPU snapshot
	h := SignRequest(priv, "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71", "POST", "/graphql", now, body)
	b.ReportAllocs()
	for b.Loop() {
		s, err := ParseSignature(h)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifyRequest(pub, s, "POST", "/graphql", body, now, time.Minute); err != nil {
			b.Fatal(err)
		}
		_ = s.ReplayKey()
	}
}

func BenchmarkCheckSnapshot(b *testing.B) {
	s := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if fs := CheckSnapshot(s); fs != nil {
			b.Fatal(fs)
		}
	}
}

func BenchmarkCompareEnrollment(b *testing.B) {
	s := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if fs := CompareEnrollment(s, s); fs != nil {
			b.Fatal(fs)
		}
	}
}

// BenchmarkSolve times whole searches, a fresh challenge per op. The expected work is
// 2^difficulty hashes, but the time of one search is geometric (its spread equals its mean),
// so few ops give a noisy mean; hashes/op says how lucky the run was.
func BenchmarkSolve(b *testing.B) {
	pub, _ := testKey(1)
	snapHash := benchSnapshot().Hash()
	nonce := bytes32(3)
	for _, d := range []int{16, 20} {
		b.Run(fmt.Sprintf("difficulty=%d", d), func(b *testing.B) {
			var hashes float64
			i := 0
			for b.Loop() {
				c, err := Solve(context.Background(), fmt.Sprint("challenge-", i), nonce, pub, snapHash, d)
				if err != nil {
					b.Fatal(err)
				}
				hashes += float64(c + 1)
				i++
			}
			b.ReportMetric(hashes/float64(i), "hashes/op")
		})
	}
}
