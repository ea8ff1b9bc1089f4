package attest

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

const window = 2 * time.Minute

var (
	reqNow  = time.Unix(1_750_000_000, 0)
	reqBody = []byte(`{"query":"mutation{submitProof}"}`)
)

func TestSignAndVerifyRequest(t *testing.T) {
	pub, priv := testKey(1)
	for _, device := range []string{"0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71", ""} { // "" is enrollment
		h := SignRequest(priv, device, "POST", "/graphql", reqNow, reqBody)
		s, err := ParseSignature(h)
		if err != nil {
			t.Fatalf("ParseSignature(%q): %v", h, err)
		}
		if s.DeviceID != device || !s.Timestamp.Equal(reqNow) {
			t.Fatalf("parsed %+v", s)
		}
		if err := VerifyRequest(pub, s, "POST", "/graphql", reqBody, reqNow, window); err != nil {
			t.Fatalf("VerifyRequest: %v", err)
		}
		if s.String() != h {
			t.Fatalf("String() = %q, header was %q", s.String(), h)
		}
	}
	// Sub-second timestamps are truncated on both sides.
	h := SignRequest(priv, "d", "GET", "/x?y=1", reqNow.Add(900*time.Millisecond), nil)
	s, _ := ParseSignature(h)
	if err := VerifyRequest(pub, s, "GET", "/x?y=1", nil, reqNow, window); err != nil {
		t.Fatalf("VerifyRequest(nil body): %v", err)
	}
	if err := VerifyRequest(pub, s, "GET", "/x?y=1", []byte{}, reqNow, window); err != nil {
		t.Fatalf("nil and empty bodies differ: %v", err)
	}
}

func TestVerifyRequestRefuses(t *testing.T) {
	pub, priv := testKey(1)
	pubB, _ := testKey(2)
	const dev = "device-a"
	s, err := ParseSignature(SignRequest(priv, dev, "POST", "/graphql", reqNow, reqBody))
	if err != nil {
		t.Fatal(err)
	}
	with := func(edit func(*Signed)) Signed {
		c := s
		c.Sig = append([]byte(nil), s.Sig...)
		c.Nonce = append([]byte(nil), s.Nonce...)
		edit(&c)
		return c
	}
	tests := []struct {
		name   string
		pub    ed25519.PublicKey
		s      Signed
		method string
		path   string
		body   []byte
		now    time.Time
		window time.Duration
		want   error
	}{
		{"control", pub, s, "POST", "/graphql", reqBody, reqNow, window, nil},
		{"edge of the window (past)", pub, s, "POST", "/graphql", reqBody, reqNow.Add(window), window, nil},
		{"edge of the window (future)", pub, s, "POST", "/graphql", reqBody, reqNow.Add(-window), window, nil},
		{"stale", pub, s, "POST", "/graphql", reqBody, reqNow.Add(window + time.Second), window, ErrStale},
		{"from the future", pub, s, "POST", "/graphql", reqBody, reqNow.Add(-window - time.Second), window, ErrStale},
		{"wrong method", pub, s, "GET", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"wrong path", pub, s, "POST", "/graphql?x=1", reqBody, reqNow, window, ErrBadSignature},
		{"wrong body", pub, s, "POST", "/graphql", append([]byte(nil), append(reqBody, ' ')...), reqNow, window, ErrBadSignature},
		{"no body", pub, s, "POST", "/graphql", nil, reqNow, window, ErrBadSignature},
		{"another device id", pub, with(func(c *Signed) { c.DeviceID = "device-b" }), "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"device id removed (enrollment form)", pub, with(func(c *Signed) { c.DeviceID = "" }), "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"another device's key", pubB, s, "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"timestamp moved", pub, with(func(c *Signed) { c.Timestamp = c.Timestamp.Add(time.Second) }), "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"nonce changed", pub, with(func(c *Signed) { c.Nonce[0] ^= 1 }), "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"signature bit flipped", pub, with(func(c *Signed) { c.Sig[63] ^= 0x10 }), "POST", "/graphql", reqBody, reqNow, window, ErrBadSignature},
		{"short key", pub[:16], s, "POST", "/graphql", reqBody, reqNow, window, ErrMalformed},
		{"short signature", pub, with(func(c *Signed) { c.Sig = c.Sig[:10] }), "POST", "/graphql", reqBody, reqNow, window, ErrMalformed},
		{"no nonce", pub, with(func(c *Signed) { c.Nonce = nil }), "POST", "/graphql", reqBody, reqNow, window, ErrMalformed},
		{"device id with a newline", pub, with(func(c *Signed) { c.DeviceID = "a\nb" }), "POST", "/graphql", reqBody, reqNow, window, ErrMalformed},
		{"path with a newline", pub, s, "POST", "/graphql\n", reqBody, reqNow, window, ErrMalformed},
		{"negative window", pub, s, "POST", "/graphql", reqBody, reqNow, -time.Second, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyRequest(tc.pub, tc.s, tc.method, tc.path, tc.body, tc.now, tc.window)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseSignatureRefusesMalformedHeaders(t *testing.T) {
	_, priv := testKey(1)
	good := SignRequest(priv, "dev-1", "POST", "/graphql", reqNow, nil)
	s, _ := ParseSignature(good)
	nonce, sig := b64.EncodeToString(s.Nonce), b64.EncodeToString(s.Sig)
	tail := " nonce=" + nonce + " sig=" + sig
	tests := []struct{ name, header string }{
		{"empty", ""},
		{"version only", "v1"},
		{"other version", "v2 device=dev-1 ts=1" + tail},
		{"missing field", "v1 device=dev-1" + tail},
		{"extra field", "v1 device=dev-1 ts=1" + tail + " x=1"},
		{"repeated field", "v1 device=dev-1 device=dev-1" + tail},
		{"unknown field", "v1 devices=dev-1 ts=1" + tail},
		{"not key=value", "v1 device ts=1" + tail},
		{"double space", "v1  device=dev-1 ts=1" + tail},
		{"trailing space", good + " "},
		{"tab separated", strings.ReplaceAll(good, " ", "\t")},
		{"device with space escape", "v1 device=a%20b ts=1" + tail},
		{"device with unicode", "v1 device=dév ts=1" + tail},
		{"device with newline", "v1 device=a\nb ts=1" + tail},
		{"device too long", "v1 device=" + strings.Repeat("a", MaxDeviceIDBytes+1) + " ts=1" + tail},
		{"negative ts", "v1 device=d ts=-1" + tail},
		{"signed ts", "v1 device=d ts=+1" + tail},
		{"fractional ts", "v1 device=d ts=1.5" + tail},
		{"empty ts", "v1 device=d ts=" + tail},
		{"huge ts", "v1 device=d ts=99999999999999999999" + tail},
		{"hex ts", "v1 device=d ts=0x10" + tail},
		{"padded base64 sig", "v1 device=d ts=1 nonce=" + nonce + " sig=" + sig + "=="},
		{"std base64 sig", "v1 device=d ts=1 nonce=" + nonce + " sig=" + strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "+/"},
		{"short sig", "v1 device=d ts=1 nonce=" + nonce + " sig=" + sig[:40]},
		{"long sig", "v1 device=d ts=1 nonce=" + nonce + " sig=" + sig + "AAAA"},
		{"non-canonical base64 sig", "v1 device=d ts=1 nonce=" + nonce + " sig=" + sig[:len(sig)-1] + "B"},
		{"short nonce", "v1 device=d ts=1 nonce=AAAA sig=" + sig},
		{"empty sig", "v1 device=d ts=1 nonce=" + nonce + " sig="},
		{"oversized", good + strings.Repeat("x", 600)},
		{"binary", "v1 device=\x00 ts=\xff" + tail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSignature(tc.header); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSignature(%q) err = %v, want ErrMalformed", tc.header, err)
			}
		})
	}
	// Field order is free.
	if _, err := ParseSignature("v1 sig=" + sig + " nonce=" + nonce + " ts=1 device=dev-1"); err != nil {
		t.Fatalf("reordered header refused: %v", err)
	}
}

func TestReplayKey(t *testing.T) {
	_, priv := testKey(1)
	h := SignRequest(priv, "d", "POST", "/graphql", reqNow, reqBody)
	a, _ := ParseSignature(h)
	b, _ := ParseSignature(h)
	if a.ReplayKey() != b.ReplayKey() {
		t.Fatal("the same header gave two replay keys")
	}
	// Identical requests in the same second are distinct (fresh nonce), so a retry is not a replay.
	c, _ := ParseSignature(SignRequest(priv, "d", "POST", "/graphql", reqNow, reqBody))
	if c.ReplayKey() == a.ReplayKey() {
		t.Fatal("two signings of the same request share a replay key")
	}
	d := a
	d.DeviceID = "e"
	if d.ReplayKey() == a.ReplayKey() {
		t.Fatal("the replay key ignores the device")
	}
}

func FuzzParseSignature(f *testing.F) {
	_, priv := testKey(1)
	f.Add(SignRequest(priv, "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71", "POST", "/graphql", reqNow, reqBody))
	f.Add(SignRequest(priv, "", "POST", "/graphql", reqNow, nil))
	f.Add("v1 device=d ts=1 nonce=AAAAAAAAAAAAAAAAAAAAAA sig=")
	f.Add("v1 device= ts= nonce= sig=")
	f.Add("v1 ts=0 ts=0 ts=0 ts=0")
	f.Add("")
	f.Add("v1 device=\xff ts=1 nonce=a sig=b")
	f.Fuzz(func(t *testing.T, header string) {
		s, err := ParseSignature(header)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := ParseSignature(s.String())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", s.String(), err)
		}
		if again.String() != s.String() || again.ReplayKey() != s.ReplayKey() {
			t.Fatalf("round trip changed %q into %q", s.String(), again.String())
		}
		pub, _ := testKey(1)
		_ = VerifyRequest(pub, s, "POST", "/graphql", nil, reqNow, window) // never panics
	})
}
