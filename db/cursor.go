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
	if _, err := uuid.Parse(c.ID); err != nil {
		return nil, bad
	}
	switch kind {
	case keyTime:
		if _, err := time.Parse(time.RFC3339Nano, c.Key); err != nil {
			return nil, bad
		}
	case keyLevel:
		if _, _, ok := parseLevelKey(c.Key); !ok {
			return nil, bad
		}
	}
	return &c, nil
}
