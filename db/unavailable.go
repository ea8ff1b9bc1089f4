package db

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"

	"github.com/lib/pq"
)

// ErrDatabaseUnavailable is what DatabaseUnavailable errors are reported as: PostgreSQL could
// not be reached or went away during the request (a restart, a crash, a failover, no free
// connection slot). Nothing is wrong with the request; it may be retried (docs/resilience.md).
var ErrDatabaseUnavailable = errors.New("the database is unavailable, retry later")

// DatabaseUnavailable reports whether err, anywhere in its chain, says the database could not
// be reached or dropped the connection, rather than refusing a statement: a failed dial, read or
// write on the socket, a connection database/sql or lib/pq gave up as bad, a message cut short,
// or one of PostgreSQL's connection-level SQLSTATEs (class 08 connection exception; 53300 too
// many connections; 57P01, 57P02, 57P03 the server shutting down, crashed or starting up).
func DatabaseUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrDatabaseUnavailable) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch code := string(pqErr.Code); {
		case len(code) == 5 && code[:2] == "08", code == "53300", code == "57P01", code == "57P02", code == "57P03":
			return true
		}
	}
	return false
}
