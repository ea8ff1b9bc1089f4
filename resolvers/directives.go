package resolvers

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
)

// This file is the only place authorization is decided. Identity comes from the verified token
// the oidc middleware put in the context; no header is ever read. Every write below is also
// scoped to its owner in SQL (db.ownerWrite), so a field that forgot its directive still cannot
// write another owner's device.

// Directives returns the implementations of the schema's auth directives.
func (r *Resolver) Directives() graph.DirectiveRoot {
	return graph.DirectiveRoot{
		Authenticated: r.authenticated,
		Owner:         r.owner,
		HasRole:       r.hasRole,
		Device:        r.device,
	}
}

// device admits only the worker of the device named by arg: the request must be signed by one of
// that device's unrevoked keys (checked by the deviceauth middleware). A user token is not enough.
func (r *Resolver) device(ctx context.Context, _ any, next graphql.Resolver, arg string) (any, error) {
	raw, _ := graphql.GetFieldContext(ctx).Args[arg].(string)
	id, err := db.ParseDeviceID(raw)
	if err != nil {
		return nil, err
	}
	p, ok := deviceauth.PrincipalFrom(ctx)
	if !ok {
		return nil, r.deny(ctx, "", id, fmt.Errorf("sign the request with the device key: %w", deviceauth.ErrUnauthenticated))
	}
	if p.DeviceID != id {
		return nil, r.deny(ctx, "device:"+p.DeviceID, id, db.Forbiddenf("the request is signed by another device"))
	}
	return next(ctx)
}

func (r *Resolver) authenticated(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
	if _, err := r.currentUser(ctx); err != nil {
		return nil, r.deny(ctx, "", "", err)
	}
	return next(ctx)
}

// owner admits the device's owner. With arg, the device is that argument (mutations: everyone
// else gets an error); without, it is the parent Device (private fields: everyone else gets null,
// anonymous or not, so the answer says nothing about who the owner is).
func (r *Resolver) owner(ctx context.Context, obj any, next graphql.Resolver, arg *string) (any, error) {
	if arg == nil {
		dev, ok := obj.(*db.Device)
		if !ok {
			return nil, fmt.Errorf("@owner without arg on %T: the schema must name the device argument", obj)
		}
		if _, signedIn := oidc.PrincipalFrom(ctx); !signedIn {
			return nil, nil
		}
		u, err := r.currentUser(ctx)
		if err != nil {
			return nil, err
		}
		if dev.OwnerID != u.ID {
			return nil, nil
		}
		return next(ctx)
	}
	raw, _ := graphql.GetFieldContext(ctx).Args[*arg].(string)
	id, err := db.ParseDeviceID(raw)
	if err != nil {
		return nil, err
	}
	u, err := r.currentUser(ctx)
	if err != nil {
		return nil, r.deny(ctx, "", id, err)
	}
	owner, err := r.DB.DeviceOwner(ctx, id)
	if err != nil {
		return nil, r.deny(ctx, u.ID, id, err)
	}
	if owner != u.ID {
		return nil, r.deny(ctx, u.ID, id, db.Forbiddenf("you do not own this device"))
	}
	return next(ctx)
}

func (r *Resolver) hasRole(ctx context.Context, _ any, next graphql.Resolver, role model.Role) (any, error) {
	u, err := r.currentUser(ctx)
	if err != nil {
		return nil, r.deny(ctx, "", "", err)
	}
	p, _ := oidc.PrincipalFrom(ctx)
	if !p.HasRole(r.roleName(role)) {
		return nil, r.deny(ctx, u.ID, "", db.Forbiddenf("this needs the %s role", role))
	}
	return next(ctx)
}

// isAdmin reports whether the verified token carries the admin role; the admin writes pass it to
// db, which refuses without it.
func (r *Resolver) isAdmin(ctx context.Context) bool {
	p, ok := oidc.PrincipalFrom(ctx)
	return ok && p.HasRole(r.roleName(model.RoleAdmin))
}

func (r *Resolver) roleName(role model.Role) string {
	if name, ok := r.RoleNames[role]; ok {
		return name
	}
	return string(role)
}

// deny records the field's refusal with err (guard.Classify gives its outcome and code: a
// refusal before a resolver runs is audited like any other) and returns err.
func (r *Resolver) deny(ctx context.Context, actor, target string, err error) error {
	op := ""
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		op = fc.Field.Name
	}
	if actor == "" {
		actor = "anonymous"
	}
	r.Guard.Refused(ctx, guard.Write{Op: op, Actor: actor, Target: target}, err)
	return err
}
