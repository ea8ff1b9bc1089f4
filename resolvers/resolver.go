// Package resolvers holds the hand-written GraphQL resolvers. They stay thin: parse arguments,
// call db, map the result. Authorization lives only in directives.go; errors are presented in
// errors.go.
package resolvers

import (
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
)

// Resolver carries the dependencies every resolver needs.
type Resolver struct {
	DB    *db.DB
	Guard *guard.Guard
	// RoleNames maps schema roles to the role names the identity provider puts in tokens
	// (default: the same name).
	RoleNames map[model.Role]string
	// Workers holds the proof-of-work and heartbeat settings.
	Workers WorkerConfig
	// DeviceAuth is told when a device key is revoked, so it stops accepting it at once.
	DeviceAuth *deviceauth.Authenticator

	users *users
}

// New returns a Resolver over store whose writes go through g.
func New(store *db.DB, g *guard.Guard, roleNames map[model.Role]string, workers WorkerConfig, auth *deviceauth.Authenticator) *Resolver {
	return &Resolver{DB: store, Guard: g, RoleNames: roleNames, Workers: workers.withDefaults(), DeviceAuth: auth, users: newUsers()}
}
