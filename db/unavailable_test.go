package db_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
)

// DatabaseUnavailable tells a database that is down or went away from one that refused the
// statement: only the former may become UNAVAILABLE (retry later) for a client.
func TestDatabaseUnavailable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "unix", Err: syscall.ENOENT}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"dial failed", fmt.Errorf("list devices: %w", dial), true},
		{"connection reset", &net.OpError{Op: "read", Net: "unix", Err: syscall.ECONNRESET}, true},
		{"bad connection", fmt.Errorf("heartbeat: %w", driver.ErrBadConn), true},
		{"shutting down", fmt.Errorf("quarantine device: %w", &pq.Error{Code: "57P03", Message: "the database system is shutting down"}), true},
		{"terminated by an administrator", &pq.Error{Code: "57P01"}, true},
		{"connection failure", &pq.Error{Code: "08006"}, true},
		{"too many connections", &pq.Error{Code: "53300"}, true},
		{"unique violation", &pq.Error{Code: "23505"}, false},
		{"statement cancelled", &pq.Error{Code: "57014"}, false},
		{"deadline", context.DeadlineExceeded, false},
		{"not found", db.ErrNotFound, false},
		{"other", errors.New("boom"), false},
		{"nil", nil, false},
	} {
		if got := db.DatabaseUnavailable(c.err); got != c.want {
			t.Errorf("%s: DatabaseUnavailable = %v, want %v", c.name, got, c.want)
		}
	}
}
