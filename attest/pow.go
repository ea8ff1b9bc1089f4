package attest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	powTag   = "gpugate/pow/v1"
	proofTag = "gpugate/proof/v1"

	// MaxDifficulty is the largest difficulty Solve and VerifyProof accept. Anything near it is
	// unsolvable; the bound only keeps a misconfigured server from asking for > 256 bits.
	MaxDifficulty = 256
	// MaxChallengeIDBytes bounds Proof.ChallengeID in VerifyProof.
	MaxChallengeIDBytes = 128
	// MaxNonceBytes bounds the challenge nonce in VerifyProof (the server issues 32 bytes).
	MaxNonceBytes = 64
)

// Proof is what the worker submits for a challenge.
//
// SnapshotHash is optional: SignProof fills it, and when it is present VerifyProof compares it
// with the hash of Snapshot so an edited snapshot is reported as ErrSnapshotMismatch rather than
// as a failed work or signature check. The server never trusts it otherwise.
type Proof struct {
	ChallengeID  string   `json:"challengeId"`
	Counter      uint64   `json:"counter"`
	Snapshot     Snapshot `json:"snapshot"`
	SnapshotHash []byte   `json:"snapshotHash,omitempty"`
	Signature    []byte   `json:"signature"`
}

// appendPoWFields appends the fields shared by the proof hash and the transcript, after the tag.
func appendPoWFields(b []byte, challengeID string, nonce []byte, pub ed25519.PublicKey, snapHash [32]byte) []byte {
	b = appendLen(b, len(challengeID))
	b = append(b, challengeID...)
	b = appendBytes(b, nonce)
	b = appendBytes(b, pub)
	return append(b, snapHash[:]...)
}

// ProofHash returns SHA-256("gpugate/pow/v1" ‖ str(challengeID) ‖ bytes(nonce) ‖
// bytes(publicKey) ‖ snapHash ‖ u64 big-endian counter), where str and bytes carry a u32
// big-endian length prefix. It cannot fail.
func ProofHash(challengeID string, nonce []byte, publicKey ed25519.PublicKey, snapHash [32]byte, counter uint64) [32]byte {
	var buf [256]byte
	b := append(buf[:0], powTag...)
	b = appendPoWFields(b, challengeID, nonce, publicKey, snapHash)
	b = binary.BigEndian.AppendUint64(b, counter)
	return sha256.Sum256(b)
}

// LeadingZeroBits returns the number of leading zero bits of h (0..256).
func LeadingZeroBits(h [32]byte) int {
	n := 0
	for i := 0; i < 32; i += 8 {
		w := binary.BigEndian.Uint64(h[i:])
		if w != 0 {
			return n + bits.LeadingZeros64(w)
		}
		n += 64
	}
	return n
}

// Transcript returns the bytes the device key signs for a proof: "gpugate/proof/v1" followed by
// the ProofHash fields. The tag keeps a proof signature from being valid as anything else.
func Transcript(challengeID string, nonce []byte, publicKey ed25519.PublicKey, snapHash [32]byte, counter uint64) []byte {
	b := make([]byte, 0, len(proofTag)+len(challengeID)+len(nonce)+len(publicKey)+60)
	b = append(b, proofTag...)
	b = appendPoWFields(b, challengeID, nonce, publicKey, snapHash)
	return binary.BigEndian.AppendUint64(b, counter)
}

func checkDifficulty(d int) error {
	if d < 0 || d > MaxDifficulty {
		return fmt.Errorf("%w: difficulty %d outside 0..%d", ErrMalformed, d, MaxDifficulty)
	}
	return nil
}

// Solve searches a counter whose ProofHash has at least difficulty leading zero bits, on
// GOMAXPROCS goroutines. The expected work is 2^difficulty hashes. It returns the counter, or
// ctx.Err() if ctx ends first, or an error wrapping ErrMalformed for a difficulty outside
// 0..MaxDifficulty. Which valid counter is returned is not specified.
func Solve(ctx context.Context, challengeID string, nonce []byte, pub ed25519.PublicKey, snapHash [32]byte, difficulty int) (uint64, error) {
	if err := checkDifficulty(difficulty); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	msg := append([]byte(powTag), appendPoWFields(nil, challengeID, nonce, pub, snapHash)...)
	// The counter is the only part that changes: absorb the whole 64-byte blocks before it once
	// and restart every attempt from that saved state, so one attempt hashes about one block.
	split := len(msg) / 64 * 64
	pre := sha256.New()
	pre.Write(msg[:split])
	state, err := pre.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("attest: saving SHA-256 state: %w", err)
	}
	tail := binary.BigEndian.AppendUint64(bytes.Clone(msg[split:]), 0)

	// #nosec G115 -- GOMAXPROCS is at least 1
	workers := uint64(runtime.GOMAXPROCS(0))
	if difficulty < 12 { // a few thousand hashes: goroutines would cost more than they save
		workers = 1
	}
	var (
		stop   atomic.Bool
		once   sync.Once
		result uint64
		wg     sync.WaitGroup
		done   = ctx.Done()
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			restore := h.(encoding.BinaryUnmarshaler)
			t := bytes.Clone(tail)
			ctr := t[len(t)-8:]
			var sum [32]byte
			for c, i := w, 1; ; c, i = c+workers, i+1 {
				if i&0x3ff == 0 {
					if stop.Load() {
						return
					}
					select {
					case <-done:
						return
					default:
					}
				}
				binary.BigEndian.PutUint64(ctr, c)
				_ = restore.UnmarshalBinary(state) // the state came from MarshalBinary of the same type
				h.Write(t)
				if h.Sum(sum[:0]); enoughZeros(&sum, difficulty) {
					once.Do(func() { result = c })
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	if stop.Load() {
		return result, nil
	}
	return 0, ctx.Err()
}

func enoughZeros(h *[32]byte, d int) bool {
	if d <= 64 {
		return bits.LeadingZeros64(binary.BigEndian.Uint64(h[:8])) >= d
	}
	return LeadingZeroBits(*h) >= d
}

// SignProof returns p with Signature (the Ed25519 signature of p's Transcript under nonce and
// the public half of priv) and SnapshotHash set. It returns an error wrapping ErrMalformed if
// priv is not an Ed25519 private key; it does not check the work.
func SignProof(priv ed25519.PrivateKey, nonce []byte, p Proof) (Proof, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return p, fmt.Errorf("%w: private key is %d bytes, want %d", ErrMalformed, len(priv), ed25519.PrivateKeySize)
	}
	pub := priv.Public().(ed25519.PublicKey)
	h := p.Snapshot.Hash()
	p.SnapshotHash = h[:]
	p.Signature = ed25519.Sign(priv, Transcript(p.ChallengeID, nonce, pub, h, p.Counter))
	return p, nil
}

// Prove is the worker's whole step: it hashes snap, solves the work for the challenge and signs
// the proof. It returns Solve's errors (ctx.Err() when cancelled) or SignProof's.
func Prove(ctx context.Context, priv ed25519.PrivateKey, challengeID string, nonce []byte, difficulty int, snap Snapshot) (Proof, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Proof{}, fmt.Errorf("%w: private key is %d bytes, want %d", ErrMalformed, len(priv), ed25519.PrivateKeySize)
	}
	pub := priv.Public().(ed25519.PublicKey)
	ctr, err := Solve(ctx, challengeID, nonce, pub, snap.Hash(), difficulty)
	if err != nil {
		return Proof{}, err
	}
	return SignProof(priv, nonce, Proof{ChallengeID: challengeID, Counter: ctr, Snapshot: snap})
}

// VerifyProof checks a proof for the challenge (p.ChallengeID, nonce) at difficulty under the
// device key pub. It recomputes the snapshot hash from p.Snapshot, so a snapshot edited after
// hashing cannot pass. It returns nil, or an error wrapping:
//
//   - ErrMalformed: bad key or nonce size, challenge id too long, difficulty out of range,
//     or a snapshot that fails Validate;
//   - ErrSnapshotMismatch: p.SnapshotHash is present and is not the hash of p.Snapshot;
//   - ErrInsufficientWork: the proof hash has fewer than difficulty leading zero bits;
//   - ErrBadSignature: p.Signature is not the key's signature of the transcript.
//
// The cheap checks run first, so a flood of bogus proofs costs a hash each, not a signature
// verification. Challenge ownership, single use and expiry are the caller's.
func VerifyProof(pub ed25519.PublicKey, nonce []byte, difficulty int, p Proof) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(pub), ed25519.PublicKeySize)
	}
	if len(nonce) == 0 || len(nonce) > MaxNonceBytes {
		return fmt.Errorf("%w: nonce is %d bytes, want 1..%d", ErrMalformed, len(nonce), MaxNonceBytes)
	}
	if p.ChallengeID == "" || len(p.ChallengeID) > MaxChallengeIDBytes {
		return fmt.Errorf("%w: challenge id is %d bytes, want 1..%d", ErrMalformed, len(p.ChallengeID), MaxChallengeIDBytes)
	}
	if err := checkDifficulty(difficulty); err != nil {
		return err
	}
	if err := p.Snapshot.Validate(); err != nil {
		return err
	}
	snapHash := p.Snapshot.Hash()
	if len(p.SnapshotHash) != 0 && subtle.ConstantTimeCompare(p.SnapshotHash, snapHash[:]) != 1 {
		return fmt.Errorf("%w: declared %x, snapshot hashes to %x", ErrSnapshotMismatch, p.SnapshotHash, snapHash)
	}
	h := ProofHash(p.ChallengeID, nonce, pub, snapHash, p.Counter)
	if z := LeadingZeroBits(h); z < difficulty {
		return fmt.Errorf("%w: %d leading zero bits, need %d", ErrInsufficientWork, z, difficulty)
	}
	if len(p.Signature) != ed25519.SignatureSize ||
		!ed25519.Verify(pub, Transcript(p.ChallengeID, nonce, pub, snapHash, p.Counter), p.Signature) {
		return fmt.Errorf("%w: proof transcript", ErrBadSignature)
	}
	return nil
}
