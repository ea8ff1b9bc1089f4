package gateway

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/oidc"
)

// explorerReads is an operation middleware: the operation of a request that carries no verified
// user token, no device signature and no enrollment signature reads public data through the
// explorer pool (db.Anonymous), whose role can read only the public columns (docs/postgresql.md,
// "Database roles"). The middlewares that verify credentials ran before: a credential that did
// not verify never reaches this point.
func explorerReads(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	_, user := oidc.PrincipalFrom(ctx)
	_, device := deviceauth.PrincipalFrom(ctx)
	_, enrolling := deviceauth.EnrollmentFrom(ctx)
	if !user && !device && !enrolling {
		ctx = db.Anonymous(ctx)
	}
	return next(ctx)
}
