package resolvers

import (
	"context"
	"fmt"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/internal/ttlcache"
	"github.com/gpugate/gpugate/oidc"
)

// users caches the user of each verified identity for a few minutes, so a signed-in request
// costs no extra query; a new identity is provisioned on its first request.
type users struct {
	cache *ttlcache.LRU[string, db.User]
}

func newUsers() *users {
	return &users{cache: ttlcache.New[string, db.User](50_000, 5*time.Minute)}
}

// currentUser returns the signed-in user, provisioning it on the identity's first request. It
// returns an UNAUTHENTICATED error when the request carries no verified token.
func (r *Resolver) currentUser(ctx context.Context) (db.User, error) {
	p, ok := oidc.PrincipalFrom(ctx)
	if !ok {
		return db.User{}, fmt.Errorf("sign in with a valid access token: %w", oidc.ErrUnauthenticated)
	}
	key := p.Issuer + "\x00" + p.Subject
	if u, ok := r.users.cache.Get(key); ok {
		return u, nil
	}
	u, err := r.DB.UserForIdentity(ctx, db.Identity{Issuer: p.Issuer, Subject: p.Subject, Email: p.Email})
	if err != nil {
		return db.User{}, err
	}
	r.users.cache.Add(key, u)
	return u, nil
}
