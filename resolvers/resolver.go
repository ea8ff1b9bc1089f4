// Package resolvers holds the hand-written GraphQL resolvers. They stay thin: parse arguments,
// call db, map the result. Authorization lives only in directives.go; errors are presented in
// errors.go.
package resolvers

import (
	"github.com/gpugate/gpugate/db"
)

// Resolver carries the dependencies every resolver needs.
type Resolver struct {
	DB *db.DB
}
