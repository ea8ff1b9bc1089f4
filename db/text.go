package db

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Text normalisation lives with the store, not in a package of its own: its failures are
// ErrInvalid errors, the store's error kinds that gateway/errors.go presents, and every text
// it checks is about to be stored (the verify service uses it for heartbeat GPU UUIDs too).

// CleanText normalises owner-supplied text (NFC, trimmed) and checks it: 1..max characters, no
// control or format characters (which would let a name hide or reorder text). It returns the
// clean text or an ErrInvalid naming the field.
func CleanText(field, s string, max int) (string, error) {
	if !utf8.ValidString(s) {
		return "", Invalidf("%s is not valid UTF-8", field)
	}
	s = strings.TrimSpace(norm.NFC.String(s))
	n := utf8.RuneCountInString(s)
	if n == 0 || n > max {
		return "", Invalidf("%s must be 1 to %d characters", field, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return "", Invalidf("%s must not contain control or format characters", field)
		}
	}
	return s, nil
}

func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max])
}
