package db

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// Sentinel errors. Callers check them with errors.Is; the GraphQL error presenter maps them to
// extension codes. Messages wrapped around them are written for API clients: they never carry
// SQL, driver text or a user identifier.
var (
	// ErrNotFound: the requested row does not exist (or is not visible to the caller).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a uniqueness rule was violated.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the caller's input is malformed or out of range.
	ErrInvalid = errors.New("invalid input")
	// ErrForbidden: the caller may not do this (not the owner, missing role).
	ErrForbidden = errors.New("forbidden")
	// ErrRateLimited: the caller sent more of an operation than its limit allows; it may retry
	// after the RateLimitError's RetryAfter. Nothing of the refused request was written.
	ErrRateLimited = errors.New("rate limited")
	// ErrMigrationsPending: the database lacks migrations this binary embeds.
	ErrMigrationsPending = errors.New("database migrations pending: run `gpugate migrate`")
)

// Error is an error whose message is written for API clients. Kind is one of the sentinels.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is match the Kind sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// RateLimitError refuses a request over a rate or count limit. Msg is shown to the client and
// RetryAfter is the earliest time a retry can succeed; errors.Is matches ErrRateLimited.
type RateLimitError struct {
	Msg        string
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string { return e.Msg }

// Unwrap lets errors.Is match ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1.
func (e *RateLimitError) RetryAfterSeconds() int {
	return max(1, int((e.RetryAfter+time.Second-1)/time.Second))
}

// Invalidf returns an ErrInvalid whose message is the formatted text (shown to the client).
func Invalidf(format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

// Forbiddenf returns an ErrForbidden whose message is the formatted text (shown to the client).
func Forbiddenf(format string, args ...any) error {
	return &Error{Kind: ErrForbidden, Msg: fmt.Sprintf(format, args...)}
}

// NotFoundf returns an ErrNotFound whose message is the formatted text (shown to the client).
func NotFoundf(format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf(format, args...)}
}

// translate maps driver errors onto the package sentinels and wraps everything else with the
// operation name, so the operator's log says where it failed.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%s: %w", op, ErrConflict)
		case "22P02", "22001", "23514", "22021", "22P05": // invalid text, too long, check violation, bad encoding / NUL
			return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
