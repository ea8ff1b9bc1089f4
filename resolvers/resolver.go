// Package resolvers holds the hand-written GraphQL resolvers. They stay thin: parse arguments,
// call db (reads and owner/admin writes) or the verify service (the worker protocol), map the
// result. Authorization lives only in directives.go; errors are presented in gateway/errors.go.
package resolvers

import (
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/verify"
)

// WorkerConfig holds the proof-of-work, heartbeat and per-device limit settings (verify.Config).
type WorkerConfig = verify.Config

// Rate is a token bucket (verify.Rate).
type Rate = verify.Rate

// Resolver carries the dependencies every resolver needs.
type Resolver struct {
	DB    *db.DB
	Guard *guard.Guard
	// RoleNames maps schema roles to the role names the identity provider puts in tokens
	// (default: the same name).
	RoleNames map[model.Role]string
	// Workers runs the worker protocol: enrollment, challenges, proofs and heartbeats.
	Workers *verify.Service
	// DeviceAuth is told when a device key is revoked, so it stops accepting it at once.
	DeviceAuth *deviceauth.Authenticator

	users *users
}

// New returns a Resolver over store whose writes go through g.
func New(store *db.DB, g *guard.Guard, roleNames map[model.Role]string, workers WorkerConfig, auth *deviceauth.Authenticator) *Resolver {
	return &Resolver{DB: store, Guard: g, RoleNames: roleNames, Workers: verify.New(store, g, workers),
		DeviceAuth: auth, users: newUsers()}
}
