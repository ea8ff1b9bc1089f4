package attest

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestLeadingZeroBits(t *testing.T) {
	tests := []struct {
		set  func(*[32]byte)
		want int
	}{
		{func(h *[32]byte) { h[0] = 0x80 }, 0},
		{func(h *[32]byte) { h[0] = 0x01 }, 7},
		{func(h *[32]byte) { h[1] = 0x40 }, 9},
		{func(h *[32]byte) { h[7] = 0x01 }, 63},
		{func(h *[32]byte) { h[8] = 0x80 }, 64},
		{func(h *[32]byte) { h[31] = 0x01 }, 255},
		{func(h *[32]byte) {}, 256},
	}
	for _, tc := range tests {
		var h [32]byte
		tc.set(&h)
		if got := LeadingZeroBits(h); got != tc.want {
			t.Errorf("LeadingZeroBits(%x) = %d, want %d", h, got, tc.want)
		}
		if tc.want <= 64 && !enoughZeros(&h, tc.want) || tc.want < 256 && enoughZeros(&h, tc.want+1) {
			t.Errorf("enoughZeros disagrees with LeadingZeroBits for %x", h)
		}
	}
}

// Pinned so the worker and the server cannot drift apart silently.
func TestProofHashVector(t *testing.T) {
	pub, _ := testKey(1)
	h := ProofHash("chal-1", bytes32(9), pub, [32]byte{1, 2, 3}, 42)
	const want = "b428a9cb76f3763122533438a63ab34cabca329834a81570c241d7a50d803e01"
	if got := hex.EncodeToString(h[:]); got != want {
		t.Errorf("ProofHash = %s, want %s", got, want)
	}
}

func TestProofHashBindsEveryInput(t *testing.T) {
	pub, _ := testKey(1)
	pub2, _ := testKey(2)
	base := ProofHash("c", []byte("nonce"), pub, [32]byte{1}, 7)
	for name, h := range map[string][32]byte{
		"challenge": ProofHash("d", []byte("nonce"), pub, [32]byte{1}, 7),
		"nonce":     ProofHash("c", []byte("nonce2"), pub, [32]byte{1}, 7),
		"key":       ProofHash("c", []byte("nonce"), pub2, [32]byte{1}, 7),
		"snapshot":  ProofHash("c", []byte("nonce"), pub, [32]byte{2}, 7),
		"counter":   ProofHash("c", []byte("nonce"), pub, [32]byte{1}, 8),
		"boundary":  ProofHash("cn", []byte("once"), pub, [32]byte{1}, 7),
	} {
		if h == base {
			t.Errorf("changing the %s kept the proof hash", name)
		}
	}
}

func TestSolveAndVerify(t *testing.T) {
	pub, priv := testKey(1)
	snap := dgxH100(t, busAbsent)
	nonce := bytes32(3)
	for _, d := range []int{0, 1, 8, 16} {
		t.Run(fmt.Sprintf("difficulty %d", d), func(t *testing.T) {
			p, err := Prove(context.Background(), priv, "challenge-"+fmt.Sprint(d), nonce, d, snap)
			if err != nil {
				t.Fatal(err)
			}
			if z := LeadingZeroBits(ProofHash(p.ChallengeID, nonce, pub, snap.Hash(), p.Counter)); z < d {
				t.Fatalf("Solve returned a counter with %d zero bits, want %d", z, d)
			}
			if err := VerifyProof(pub, nonce, d, p); err != nil {
				t.Fatalf("VerifyProof: %v", err)
			}
			// The proof survives the JSON trip to the server.
			js, _ := json.Marshal(p)
			var back Proof
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatal(err)
			}
			if err := VerifyProof(pub, nonce, d, back); err != nil {
				t.Fatalf("VerifyProof after JSON: %v", err)
			}
			// So does one without the optional snapshot hash.
			back.SnapshotHash = nil
			if err := VerifyProof(pub, nonce, d, back); err != nil {
				t.Fatalf("VerifyProof without snapshotHash: %v", err)
			}
		})
	}
}

func TestVerifyProofRefuses(t *testing.T) {
	pubA, privA := testKey(1)
	pubB, privB := testKey(2)
	nonce := bytes32(3)
	const d = 12
	snap := realH100()
	good, err := Prove(context.Background(), privA, "chal", nonce, d, snap)
	if err != nil {
		t.Fatal(err)
	}
	mustVerify := func(p Proof) {
		if err := VerifyProof(pubA, nonce, d, p); err != nil {
			t.Fatalf("control proof refused: %v", err)
		}
	}
	mustVerify(good)

	edited := func(edit func(*Snapshot)) Proof {
		p := good
		p.Snapshot = cloneSnapshot(good.Snapshot)
		edit(&p.Snapshot)
		return p
	}
	// Device B does honest work for A's challenge under its own key.
	byB, _ := Prove(context.Background(), privB, "chal", nonce, d, snap)
	// B's signature on a transcript naming A's key (work done for A's key).
	stolen := good
	stolen.Signature = ed25519.Sign(privB, Transcript("chal", nonce, pubA, snap.Hash(), good.Counter))

	tests := []struct {
		name       string
		pub        ed25519.PublicKey
		nonce      []byte
		difficulty int
		p          Proof
		want       []error // any of
	}{
		{"snapshot edited after hashing", pubA, nonce, d,
			edited(func(s *Snapshot) { s.GPUs[0].MemoryTotalBytes = 24 << 30 }), []error{ErrSnapshotMismatch}},
		{"snapshot edited, hash dropped", pubA, nonce, d,
			func() Proof { p := edited(func(s *Snapshot) { s.GPUs[0].Name = "x" }); p.SnapshotHash = nil; return p }(),
			[]error{ErrInsufficientWork, ErrBadSignature}},
		{"snapshot and declared hash both edited", pubA, nonce, d,
			func() Proof {
				p := edited(func(s *Snapshot) { s.GPUs = s.GPUs[:4] })
				h := p.Snapshot.Hash()
				p.SnapshotHash = h[:]
				return p
			}(), []error{ErrInsufficientWork, ErrBadSignature}},
		{"GPUs reordered is the same snapshot", pubA, nonce, d,
			edited(func(s *Snapshot) { s.GPUs[0], s.GPUs[7] = s.GPUs[7], s.GPUs[0] }), nil},
		{"device B's proof against device A's key", pubA, nonce, d, byB, []error{ErrInsufficientWork, ErrBadSignature}},
		{"device B's signature over A's work", pubA, nonce, 0, stolen, []error{ErrBadSignature}},
		{"wrong key", pubB, nonce, d, good, []error{ErrInsufficientWork, ErrBadSignature}},
		{"another challenge's nonce", pubA, bytes32(4), d, good, []error{ErrInsufficientWork, ErrBadSignature}},
		{"another challenge id", pubA, nonce, d, func() Proof { p := good; p.ChallengeID = "chal2"; return p }(),
			[]error{ErrInsufficientWork, ErrBadSignature}},
		{"counter changed", pubA, nonce, 0, func() Proof { p := good; p.Counter++; return p }(), []error{ErrBadSignature}},
		{"insufficient difficulty", pubA, nonce, 40, good, []error{ErrInsufficientWork}},
		{"signature bit flipped", pubA, nonce, d, func() Proof {
			p := good
			p.Signature = append([]byte(nil), good.Signature...)
			p.Signature[10] ^= 1
			return p
		}(), []error{ErrBadSignature}},
		{"signature truncated", pubA, nonce, d, func() Proof { p := good; p.Signature = good.Signature[:63]; return p }(), []error{ErrBadSignature}},
		{"no signature", pubA, nonce, d, func() Proof { p := good; p.Signature = nil; return p }(), []error{ErrBadSignature}},
		{"short public key", pubA[:31], nonce, d, good, []error{ErrMalformed}},
		{"empty nonce", pubA, nil, d, good, []error{ErrMalformed}},
		{"huge nonce", pubA, make([]byte, MaxNonceBytes+1), d, good, []error{ErrMalformed}},
		{"empty challenge id", pubA, nonce, d, func() Proof { p := good; p.ChallengeID = ""; return p }(), []error{ErrMalformed}},
		{"negative difficulty", pubA, nonce, -1, good, []error{ErrMalformed}},
		{"difficulty above 256", pubA, nonce, 257, good, []error{ErrMalformed}},
		{"invalid snapshot", pubA, nonce, d, edited(func(s *Snapshot) { s.GPUs[0].PCIDeviceID = 0x233010DE }), []error{ErrMalformed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyProof(tc.pub, tc.nonce, tc.difficulty, tc.p)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			for _, w := range tc.want {
				if errors.Is(err, w) {
					if ReasonForError(err) == "" {
						t.Errorf("no reason for %v", err)
					}
					return
				}
			}
			t.Fatalf("err = %v, want one of %v", err, tc.want)
		})
	}
}

func TestSolveStopsWhenCancelled(t *testing.T) {
	pub, _ := testKey(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Solve(ctx, "c", []byte("n"), pub, [32]byte{}, 200)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Solve took %v to notice the deadline", el)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Solve(ctx, "c", []byte("n"), pub, [32]byte{}, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}

func TestSolveAndSignRefuseBadInput(t *testing.T) {
	pub, _ := testKey(1)
	for _, d := range []int{-1, MaxDifficulty + 1} {
		if _, err := Solve(context.Background(), "c", nil, pub, [32]byte{}, d); !errors.Is(err, ErrMalformed) {
			t.Errorf("Solve(difficulty %d) err = %v, want ErrMalformed", d, err)
		}
	}
	if _, err := SignProof(ed25519.PrivateKey{1, 2}, nil, Proof{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("SignProof(short key) err = %v, want ErrMalformed", err)
	}
	if _, err := Prove(context.Background(), nil, "c", nil, 1, Snapshot{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Prove(nil key) err = %v, want ErrMalformed", err)
	}
}

func TestSignaturesAreDomainSeparated(t *testing.T) {
	// A proof transcript and a request message never coincide: their tags differ from byte 8.
	tr := Transcript("c", []byte("n"), nil, [32]byte{}, 0)
	req := requestMessage("d", "POST", "/graphql", 0, make([]byte, RequestNonceBytes), nil)
	if string(tr[:len(proofTag)]) == string(req[:len(proofTag)]) {
		t.Fatal("transcript and request message share a prefix")
	}
}
