// Package resolvers holds the hand-written GraphQL resolvers. They stay thin: parse arguments,
// call db, map the result. Authorization lives only in directives.go; errors are presented in
// errors.go.
package resolvers

import (
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/internal/ttlcache"
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

	users      *users
	heartbeats *db.Heartbeats
	enrolled   *ttlcache.LRU[string, attest.Snapshot]
	evidence   *evidenceState // worker rate limits and source addresses (workers.go)
}

// New returns a Resolver over store whose writes go through g.
func New(store *db.DB, g *guard.Guard, roleNames map[model.Role]string, workers WorkerConfig, auth *deviceauth.Authenticator) *Resolver {
	workers = workers.withDefaults()
	return &Resolver{DB: store, Guard: g, RoleNames: roleNames, Workers: workers, DeviceAuth: auth, users: newUsers(),
		heartbeats: store.NewHeartbeats(workers.HeartbeatBatchWait, 500),
		enrolled:   ttlcache.New[string, attest.Snapshot](10_000, time.Hour),
		evidence:   newEvidenceState(workers)}
}
