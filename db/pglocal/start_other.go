//go:build !unix

package pglocal

import (
	"context"
	"errors"
)

// errUnsupported is what Start returns on systems without unix sockets and setuid.
var errUnsupported = errors.New("pglocal: running a private PostgreSQL is supported on Linux and other Unix systems only: pass a database URL instead")

// Start returns an error: this system is not supported.
func Start(ctx context.Context, o Options) (*Server, error) { return nil, errUnsupported }

// Stop returns nil: no Server can exist on this system.
func (s *Server) Stop(ctx context.Context) error { return nil }
