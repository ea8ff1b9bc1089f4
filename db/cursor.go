package db

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// A cursor is the keyset position after one device: the order it belongs to, that order's key
// (creation time or name) and the device ID. It holds public device fields only.
type cursor struct {
	V     int    `json:"v"`
	Order string `json:"o"`
	Key   string `json:"k"`
	ID    string `json:"i"`
}

const (
	cursorVersion  = 1
	maxCursorBytes = 512
	searchOrder    = "SEARCH"
)

func encodeCursor(order, key, id string) string {
	b, _ := json.Marshal(cursor{V: cursorVersion, Order: order, Key: key, ID: id})
	return base64.RawURLEncoding.EncodeToString(b)
}

// keyKind is what a cursor's key must be.
type keyKind int

const (
	keyText  keyKind = iota // a name
	keyTime                 // an RFC 3339 timestamp
	keyLevel                // a level rank and an RFC 3339 timestamp (levelKey)
)

// levelKey is the key of the VERIFICATION_LEVEL order: the rank, a slash, the creation time.
func levelKey(rank int, created time.Time) string {
	return strconv.Itoa(rank) + "/" + created.UTC().Format(time.RFC3339Nano)
}

// parseLevelKey splits a levelKey; ok is false for anything else.
func parseLevelKey(k string) (rank int, created time.Time, ok bool) {
	r, ts, found := strings.Cut(k, "/")
	if !found || len(r) != 1 || r[0] < '0' || int(r[0]-'0') >= len(AllLevels) {
		return 0, time.Time{}, false
	}
	created, err := time.Parse(time.RFC3339Nano, ts)
	return int(r[0] - '0'), created, err == nil
}

// decodeCursor parses an after argument issued for order. An empty string means "from the start".
// kind says what the key must be; a cursor of another order or kind is ErrInvalid.
func decodeCursor(s, order string, kind keyKind) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := Invalidf("after is not a cursor returned by this listing")
	if len(s) > maxCursorBytes {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var c cursor
	if err := json.Unmarshal(raw, &c); err != nil || c.V != cursorVersion {
		return nil, bad
	}
	if c.Order != order {
		return nil, Invalidf("after is a cursor for another order (%s); pass the orderBy it was issued with", c.Order)
	}
	// Only the exact spelling encodeCursor issues is accepted: a canonical UUID and key, and the
	// JSON and base64 it writes. Another spelling of the same position (another JSON layout, an
	// upper-case or urn: UUID, a time in another zone) would reach the SQL as a value PostgreSQL
	// may refuse (urn:uuid:, year 0, a NUL), failing as an internal error instead of this one.
	if u, err := uuid.Parse(c.ID); err != nil || u.String() != c.ID {
		return nil, bad
	}
	if strings.IndexByte(c.Key, 0) >= 0 {
		return nil, bad
	}
	switch kind {
	case keyTime:
		if t, err := time.Parse(time.RFC3339Nano, c.Key); err != nil || !canonicalTime(t, c.Key) {
			return nil, bad
		}
	case keyLevel:
		if rank, created, ok := parseLevelKey(c.Key); !ok || levelKey(rank, created) != c.Key || created.Year() < 1 {
			return nil, bad
		}
	}
	if encodeCursor(c.Order, c.Key, c.ID) != s {
		return nil, bad
	}
	return &c, nil
}

// canonicalTime says whether s is t as a cursor spells it: UTC, RFC 3339 with the nanoseconds
// needed, in a year PostgreSQL accepts (it has no year 0).
func canonicalTime(t time.Time, s string) bool {
	return t.Year() >= 1 && t.UTC().Format(time.RFC3339Nano) == s
}
