package nvidia

import (
	"context"
	"testing"
)

// BenchmarkVerifyFixture measures Verify of the real H100 evidence per GPU: "cold" verifies
// the chain every time (a fresh Verifier, so an empty chain cache), "cached" reuses the chain's
// facts as a gateway does for a host's repeated proofs; both verify the report signature.
func BenchmarkVerifyFixture(b *testing.B) {
	ev, nonce := loadFixture(b)
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			v := New(Options{Now: fixedClock(fixtureTime)})
			if r := v.Verify(context.Background(), ev, nonce); !r.OK() {
				b.Fatal(r.Reasons)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		v := New(Options{Now: fixedClock(fixtureTime)})
		for b.Loop() {
			if r := v.Verify(context.Background(), ev, nonce); !r.OK() {
				b.Fatal(r.Reasons)
			}
		}
	})
}

// BenchmarkSimulatedEvidence measures making one simulated GPU's evidence (signing).
func BenchmarkSimulatedEvidence(b *testing.B) {
	g, err := NewSimulatedGPU(SimulationOptions{Seed: []byte("bench")})
	if err != nil {
		b.Fatal(err)
	}
	nonce := testNonce(1)
	for b.Loop() {
		if _, err := g.Evidence(nonce); err != nil {
			b.Fatal(err)
		}
	}
}
