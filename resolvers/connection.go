package resolvers

import (
	"context"

	"github.com/vikstrous/dataloadgen"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
)

// toConnection returns the connection of a page. Its edges (db.DeviceEdge) build their cursors
// only when a client selects them; the end cursor is the one built here.
func toConnection(p db.Page) *model.DeviceConnection {
	page := &p
	return &model.DeviceConnection{
		Edges:    page.Edges(),
		PageInfo: &model.PageInfo{HasNextPage: p.HasNext, EndCursor: page.EndCursor()},
	}
}

// convertAll maps each element of s with f; nil stays nil.
func convertAll[S, T any](s []S, f func(S) T) []T {
	if s == nil {
		return nil
	}
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// load uses the operation's loader (made on first use), or a one-off batch outside an
// operation.
func load[T any](ctx context.Context, pick func(*loaders) *dataloadgen.Loader[string, []T],
	fetch func(context.Context, []string) (map[string][]T, error), id string) ([]T, error) {
	if l := loadersFrom(ctx); l != nil && l.ensure(fetch) {
		return pick(l).Load(ctx, id)
	}
	m, err := fetch(ctx, []string{id})
	return m[id], err
}

// userWrite runs one mutation of the signed-in user on a device through the guard: it parses
// the device id, then calls write with it and the user. It returns ErrInvalid for a malformed
// id, the currentUser error, or write's.
func userWrite[T any](ctx context.Context, r *Resolver, op, rawID string,
	write func(ctx context.Context, id string, u db.User) (T, error)) (*T, error) {
	id, err := db.ParseDeviceID(rawID)
	if err != nil {
		return nil, err
	}
	u, err := r.currentUser(ctx)
	if err != nil {
		return nil, err
	}
	var out T
	err = r.Guard.Do(ctx, guard.Write{Op: op, Actor: u.ID, Target: id}, func(ctx context.Context) error {
		out, err = write(ctx, id, u)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ownerWrite runs one owner mutation through the guard: the caller's user id and the device id
// go to db, whose SQL matches both.
func ownerWrite[T any](ctx context.Context, r *Resolver, op, rawID string,
	write func(ctx context.Context, id, owner string) (T, error)) (*T, error) {
	return userWrite(ctx, r, op, rawID, func(ctx context.Context, id string, u db.User) (T, error) {
		return write(ctx, id, u.ID)
	})
}

// adminWrite runs one admin mutation through the guard; db checks admin, which the role
// directive's verified token decides.
func (r *Resolver) adminWrite(ctx context.Context, op, rawID string,
	write func(ctx context.Context, admin bool, id string) (db.Device, error)) (*db.Device, error) {
	return userWrite(ctx, r, op, rawID, func(ctx context.Context, id string, _ db.User) (db.Device, error) {
		return write(ctx, r.isAdmin(ctx), id)
	})
}
