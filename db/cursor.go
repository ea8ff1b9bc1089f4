package db

import (
	"encoding/base64"
	"encoding/json"
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

// decodeCursor parses an after argument issued for order. An empty string means "from the start".
// timeKey says the key must be an RFC 3339 timestamp.
func decodeCursor(s, order string, timeKey bool) (*cursor, error) {
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
	if timeKey {
		if _, err := time.Parse(time.RFC3339Nano, c.Key); err != nil {
			return nil, bad
		}
	}
	return &c, nil
}
