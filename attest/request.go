package attest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	// SignatureHeader is the HTTP header that carries SignRequest's value.
	SignatureHeader = "X-Gpugate-Signature"

	reqTag    = "gpugate/req/v1"
	replayTag = "gpugate/replay/v1"

	// MaxDeviceIDBytes bounds the device= field. Device ids are server-issued UUIDs; the field
	// is empty on the enrollment request, which is signed by the key being enrolled.
	MaxDeviceIDBytes = 128
	// RequestNonceBytes is the size of the random nonce in every request signature.
	RequestNonceBytes = 16
	maxHeaderBytes    = 512
)

var b64 = base64.RawURLEncoding.Strict()

// Signed is a parsed request signature header.
type Signed struct {
	DeviceID  string    // empty only on enrollment
	Timestamp time.Time // whole seconds
	Nonce     []byte    // RequestNonceBytes random bytes chosen by the signer
	Sig       []byte    // Ed25519 signature of the request message
}

// String returns the header value for s: "v1 device=<id> ts=<unix> nonce=<b64url> sig=<b64url>"
// (base64url without padding). ParseSignature(s.String()) gives s back for any s it accepted.
func (s Signed) String() string {
	return "v1 device=" + s.DeviceID + " ts=" + strconv.FormatInt(s.Timestamp.Unix(), 10) +
		" nonce=" + b64.EncodeToString(s.Nonce) + " sig=" + b64.EncodeToString(s.Sig)
}

// requestMessage is what the device key signs for one request:
//
//	gpugate/req/v1 \n device \n METHOD \n request-URI \n unix-seconds \n nonce-b64url \n hex(SHA-256(body))
//
// where request-URI is the escaped path and, when there is one, "?" and the raw query string,
// as the HTTP request line carries them (url.URL.RequestURI(): "/graphql",
// "/graphql?query=%7B...%7D"). Device ids, methods and request URIs containing a newline are
// refused before this is built, so the fields cannot run into each other.
func requestMessage(deviceID, method, path string, ts int64, nonce, body []byte) []byte {
	sum := sha256.Sum256(body)
	b := make([]byte, 0, len(reqTag)+len(deviceID)+len(method)+len(path)+160)
	b = append(b, reqTag...)
	b = append(b, '\n')
	b = append(b, deviceID...)
	b = append(b, '\n')
	b = append(b, method...)
	b = append(b, '\n')
	b = append(b, path...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '\n')
	b = b64.AppendEncode(b, nonce)
	b = append(b, '\n')
	return hex.AppendEncode(b, sum[:])
}

// SignRequest signs one worker request and returns the SignatureHeader value. path is the
// request URI exactly as sent: the escaped path and the query string, url.URL.RequestURI() of
// the request's URL, never url.URL.Path alone (the server verifies over the request URI it
// received, so a query string left out of the signature is a refused request); body is the
// full request body (nil for none); deviceID is empty only on the enrollment request. A fresh random nonce
// makes two identical requests in the same second distinct, so the server's replay cache never
// refuses a legitimate retry. It panics, like ed25519.Sign, if priv is not 64 bytes; a deviceID
// outside [A-Za-z0-9._:-]{0,128} or a method or path containing a newline yields a header the
// server refuses.
func SignRequest(priv ed25519.PrivateKey, deviceID, method, path string, ts time.Time, body []byte) string {
	nonce := make([]byte, RequestNonceBytes)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (it crashes the program instead)
	unix := ts.Unix()
	return Signed{
		DeviceID:  deviceID,
		Timestamp: time.Unix(unix, 0),
		Nonce:     nonce,
		Sig:       ed25519.Sign(priv, requestMessage(deviceID, method, path, unix, nonce, body)),
	}.String()
}

// ParseSignature parses a SignatureHeader value. It is strict: version "v1", exactly the four
// fields device, ts, nonce and sig once each in any order, single spaces, a device id of
// [A-Za-z0-9._:-] (possibly empty), a non-negative decimal ts without leading zeros, and
// canonical unpadded base64url for a 16-byte nonce and a 64-byte signature. Anything else
// returns an error wrapping ErrMalformed. It never panics.
func ParseSignature(header string) (Signed, error) {
	var s Signed
	if len(header) > maxHeaderBytes {
		return s, fmt.Errorf("%w: signature header is %d bytes, limit %d", ErrMalformed, len(header), maxHeaderBytes)
	}
	parts := strings.Split(header, " ")
	if len(parts) != 5 || parts[0] != "v1" {
		return s, fmt.Errorf("%w: signature header must be \"v1 device=… ts=… nonce=… sig=…\"", ErrMalformed)
	}
	var seen [4]bool
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return Signed{}, fmt.Errorf("%w: signature header field %q is not key=value", ErrMalformed, trunc(p))
		}
		var i int
		switch k {
		case "device":
			i = 0
			if err := checkDeviceID(v); err != nil {
				return Signed{}, err
			}
			s.DeviceID = v
		case "ts":
			i = 1
			// Canonical decimal only: "ts=01" would be a second spelling of one signed header.
			if len(v) == 0 || len(v) > 18 || strings.Trim(v, "0123456789") != "" || len(v) > 1 && v[0] == '0' {
				return Signed{}, fmt.Errorf("%w: signature ts %q is not unix seconds", ErrMalformed, trunc(v))
			}
			n, _ := strconv.ParseInt(v, 10, 64) // cannot fail: at most 18 digits
			s.Timestamp = time.Unix(n, 0)
		case "nonce":
			i = 2
			// Re-encoding must give v back: Go's base64 decoders skip \r and \n, which would
			// make a second spelling of one signed header.
			n, err := b64.DecodeString(v)
			if err != nil || len(n) != RequestNonceBytes || b64.EncodeToString(n) != v {
				return Signed{}, fmt.Errorf("%w: signature nonce is not %d bytes of base64url", ErrMalformed, RequestNonceBytes)
			}
			s.Nonce = n
		case "sig":
			i = 3
			sig, err := b64.DecodeString(v)
			if err != nil || len(sig) != ed25519.SignatureSize || b64.EncodeToString(sig) != v {
				return Signed{}, fmt.Errorf("%w: signature is not %d bytes of base64url", ErrMalformed, ed25519.SignatureSize)
			}
			s.Sig = sig
		default:
			return Signed{}, fmt.Errorf("%w: unknown signature header field %q", ErrMalformed, trunc(k))
		}
		if seen[i] {
			return Signed{}, fmt.Errorf("%w: signature header field %q repeated", ErrMalformed, k)
		}
		seen[i] = true
	}
	return s, nil
}

func checkDeviceID(v string) error {
	if len(v) > MaxDeviceIDBytes {
		return fmt.Errorf("%w: signature device id is %d bytes, limit %d", ErrMalformed, len(v), MaxDeviceIDBytes)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return fmt.Errorf("%w: signature device id has a byte %#x outside [A-Za-z0-9._:-]", ErrMalformed, c)
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// VerifyRequest checks s, parsed from a request's SignatureHeader, against the device's public
// key and the request as the server received it (method, path as the received
// http.Request.URL.RequestURI(), path and query string, body).
// It returns nil, or an error wrapping:
//
//   - ErrMalformed: pub, s.Nonce or s.Sig has the wrong size, s.DeviceID is not a valid id, the
//     window is negative, or method or path contains a newline;
//   - ErrStale: |now - s.Timestamp| > window;
//   - ErrBadSignature: the signature does not cover exactly this device, method, request URI
//     (path and query string), timestamp, nonce and body under pub.
//
// Replays inside the window are the caller's to refuse: remember s.ReplayKey() until
// s.Timestamp+window has passed. That the device id matches the device the request acts on,
// and that the key is not revoked, is also the caller's.
func VerifyRequest(pub ed25519.PublicKey, s Signed, method, path string, body []byte, now time.Time, window time.Duration) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(pub), ed25519.PublicKeySize)
	}
	if len(s.Sig) != ed25519.SignatureSize || len(s.Nonce) != RequestNonceBytes {
		return fmt.Errorf("%w: signature or nonce has the wrong size", ErrMalformed)
	}
	if err := checkDeviceID(s.DeviceID); err != nil {
		return err
	}
	if window < 0 {
		return fmt.Errorf("%w: negative window %v", ErrMalformed, window)
	}
	if strings.ContainsAny(method, "\r\n") || strings.ContainsAny(path, "\r\n") {
		return fmt.Errorf("%w: method or path contains a newline", ErrMalformed)
	}
	if d := now.Sub(s.Timestamp); d > window || d < -window {
		return fmt.Errorf("%w: signed at %s, %v from the server clock (window %v)", ErrStale,
			s.Timestamp.UTC().Format(time.RFC3339), d.Round(time.Second), window)
	}
	if !ed25519.Verify(pub, requestMessage(s.DeviceID, method, path, s.Timestamp.Unix(), s.Nonce, body), s.Sig) {
		return fmt.Errorf("%w: request signature", ErrBadSignature)
	}
	return nil
}

// ReplayKey returns SHA-256("gpugate/replay/v1" ‖ str(deviceID) ‖ sig), the key under which the
// server remembers a verified request until its window closes. Go's Ed25519 verification
// refuses non-canonical encodings, so nobody without the device key can produce a second valid
// signature (and key) for the same request.
func (s Signed) ReplayKey() [32]byte {
	b := make([]byte, 0, len(replayTag)+4+len(s.DeviceID)+4+len(s.Sig))
	b = append(b, replayTag...)
	b = appendLen(b, len(s.DeviceID))
	b = append(b, s.DeviceID...)
	b = appendBytes(b, s.Sig)
	return sha256.Sum256(b)
}
