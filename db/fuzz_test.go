package db

// Fuzz targets for the decoders of client input in this package (docs/security.md, "Fuzzing"):
// device cursors, audit cursors, device IDs and worker public keys. Their seed corpora are the
// f.Add calls below (real encodings made by the real encoders) and testdata/fuzz/FuzzXxx/;
// `make test` runs both, scripts/fuzz fuzzes each target for a bounded time.

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// fuzzCreated is a creation time as PostgreSQL gives it (microseconds, UTC).
var fuzzCreated = time.Date(2026, 11, 29, 8, 55, 20, 123456000, time.UTC)

// fuzzOrders are the orders a cursor may be issued for, with the key kind each one checks.
var fuzzOrders = []struct {
	order string
	kind  keyKind
}{
	{"CREATED_AT_DESC", keyTime}, {"CREATED_AT_ASC", keyTime},
	{"NAME_ASC", keyText}, {"NAME_DESC", keyText},
	{"VERIFICATION_LEVEL_DESC", keyLevel}, {"VERIFICATION_LEVEL_ASC", keyLevel},
	{searchOrder, keyText},
}

// FuzzDecodeCursor: decodeCursor never panics, refuses with ErrInvalid only, and accepts exactly
// the cursors encodeCursor issues: an accepted cursor re-encodes to the same string (no second
// spelling of one position: another JSON layout, base64 slack bits, an upper-case or braced
// UUID, a time in another zone), its ID is a canonical UUID and its key is the key the listing
// issues for its order (a canonical UTC time PostgreSQL accepts, or a level key).
func FuzzDecodeCursor(f *testing.F) {
	id := "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71"
	f.Add(encodeCursor("CREATED_AT_DESC", fuzzCreated.Format(time.RFC3339Nano), id), 0)
	f.Add(encodeCursor("NAME_ASC", "gpu-amber-otter-1f2e", id), 2)
	f.Add(encodeCursor("VERIFICATION_LEVEL_DESC", levelKey(3, fuzzCreated), id), 4)
	f.Add(encodeCursor(searchOrder, "<&> \u00e9", id), 6)
	f.Add(encodeCursor("CREATED_AT_DESC", "2026-11-29T10:55:20+02:00", id), 0)
	f.Add(encodeCursor("CREATED_AT_DESC", fuzzCreated.Format(time.RFC3339Nano), "urn:uuid:"+id), 0)
	f.Add(encodeCursor("CREATED_AT_DESC", fuzzCreated.Format(time.RFC3339Nano), strings.ToUpper(id)), 0)
	f.Add(encodeCursor("CREATED_AT_DESC", "0000-01-01T00:00:00Z", id), 0)
	f.Add(encodeCursor("NAME_ASC", "a\x00b", id), 2)
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"i":"`+id+`","k":"x","o":"NAME_ASC","v":1}`)), 2)
	f.Add("eyJ2IjoxfQ", 1)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, s string, which int) {
		o := fuzzOrders[uint(which)%uint(len(fuzzOrders))]
		c, err := decodeCursor(s, o.order, o.kind)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("decodeCursor(%q): %v is not an ErrInvalid", s, err)
			}
			return
		}
		if s == "" {
			if c != nil {
				t.Fatal("an empty after gave a position")
			}
			return
		}
		if again := encodeCursor(c.Order, c.Key, c.ID); again != s {
			t.Fatalf("decodeCursor accepted %q, a second spelling of %q", s, again)
		}
		if u, err := uuid.Parse(c.ID); err != nil || u.String() != c.ID {
			t.Fatalf("decodeCursor(%q) accepted the device ID %q", s, c.ID)
		}
		if strings.IndexByte(c.Key, 0) >= 0 || !utf8.ValidString(c.Key) {
			t.Fatalf("decodeCursor(%q) accepted the key %q, which PostgreSQL refuses", s, c.Key)
		}
		switch o.kind {
		case keyTime:
			ts, err := time.Parse(time.RFC3339Nano, c.Key)
			if err != nil || ts.UTC().Format(time.RFC3339Nano) != c.Key || ts.Year() < 1 {
				t.Fatalf("decodeCursor(%q) accepted the time key %q", s, c.Key)
			}
		case keyLevel:
			rank, created, ok := parseLevelKey(c.Key)
			if !ok || levelKey(rank, created) != c.Key || created.Year() < 1 {
				t.Fatalf("decodeCursor(%q) accepted the level key %q", s, c.Key)
			}
		}
		// what decodes also decodes for its own order, and for no other kind of order
		for _, other := range fuzzOrders {
			if other.order != o.order {
				if _, err := decodeCursor(s, other.order, other.kind); err == nil {
					t.Fatalf("cursor %q of %s accepted for %s", s, o.order, other.order)
				}
			}
		}
	})
}

// FuzzDecodeAuditCursor: decodeAuditCursor never panics, refuses with ErrInvalid only, and
// accepts only what encodeAuditCursor issues (a canonical spelling of a positive row id and a
// UTC time); a device cursor is never an audit cursor.
func FuzzDecodeAuditCursor(f *testing.F) {
	f.Add(encodeAuditCursor(fuzzCreated, 1))
	f.Add(encodeAuditCursor(fuzzCreated.Add(-time.Hour), 1<<40))
	f.Add(encodeAuditCursor(time.Time{}, 7))
	f.Add(encodeCursor("CREATED_AT_DESC", fuzzCreated.Format(time.RFC3339Nano), "0b9e2f4c-7f0a-4a53-9d6e-2f1c3b9a8e71"))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"k":"audit","t":"2026-11-29T10:55:20+02:00","i":5}`)))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, at, err := decodeAuditCursor(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("decodeAuditCursor(%q): %v is not an ErrInvalid", s, err)
			}
			return
		}
		if c.ID <= 0 {
			t.Fatalf("decodeAuditCursor(%q) accepted row id %d", s, c.ID)
		}
		if again := encodeAuditCursor(at, c.ID); again != s {
			t.Fatalf("decodeAuditCursor accepted %q, a second spelling of %q", s, again)
		}
		if at.Year() < 1 {
			t.Fatalf("decodeAuditCursor(%q) accepted the time %v, which PostgreSQL refuses", s, at)
		}
	})
}

// FuzzParseDeviceID: ParseDeviceID never panics, refuses with ErrInvalid only, and returns the
// canonical (lower-case, hyphenated) spelling of the UUID it was given, which it accepts again
// unchanged. Other spellings of one UUID (upper case, braces, urn:uuid:, no hyphens) are
// accepted on purpose and all name the same device: every caller uses the returned form.
func FuzzParseDeviceID(f *testing.F) {
	id := uuid.New().String()
	for _, s := range []string{id, strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id, strings.ReplaceAll(id, "-", ""),
		"", "0", "00000000-0000-0000-0000-00000000000g", id + " ", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDeviceID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseDeviceID(%q): %v is not an ErrInvalid", s, err)
			}
			return
		}
		u, perr := uuid.Parse(s)
		if perr != nil || got != u.String() || len(got) != 36 || strings.ToLower(got) != got {
			t.Fatalf("ParseDeviceID(%q) = %q, not the canonical form of its UUID", s, got)
		}
		if again, err := ParseDeviceID(got); err != nil || again != got {
			t.Fatalf("ParseDeviceID(%q) = %q, %v: not idempotent", got, again, err)
		}
	})
}

// FuzzParsePublicKey: ParsePublicKey never panics, refuses with ErrInvalid only, returns 32
// bytes, and gives the same key for the four base64 spellings of those bytes (the documented
// leniency: standard or URL alphabet, padded or not), so one key never becomes two.
func FuzzParsePublicKey(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(nil)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		f.Add(enc.EncodeToString(pub))
	}
	f.Add(" " + base64.StdEncoding.EncodeToString(pub) + "\n")
	f.Add(base64.StdEncoding.EncodeToString(pub[:31]))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParsePublicKey(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePublicKey(%q): %v is not an ErrInvalid", s, err)
			}
			return
		}
		if len(key) != ed25519.PublicKeySize {
			t.Fatalf("ParsePublicKey(%q) gave %d bytes", s, len(key))
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			again, err := ParsePublicKey(enc.EncodeToString(key))
			if err != nil || !again.Equal(key) {
				t.Fatalf("ParsePublicKey(%q) = %x, but its re-encoding gives %x, %v", s, key, again, err)
			}
		}
	})
}
