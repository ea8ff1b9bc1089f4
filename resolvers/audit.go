package resolvers

import (
	"context"
	"strconv"

	"github.com/99designs/gqlgen/graphql"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
)

// auditEvents lists the audit log, newest first (docs/operations.md, "Audit log"). The role
// directive admits admins only. It returns an ErrInvalid error for first out of 1..100, a bad
// cursor or an over-long filter, else the store's error.
func (r *Resolver) auditEvents(ctx context.Context, first int, after *string, filter *model.AuditFilter) (*model.AuditEventConnection, error) {
	var f db.AuditFilter
	if filter != nil {
		f = db.AuditFilter{Principal: deref(filter.Principal), Target: deref(filter.Target),
			Operation: deref(filter.Operation), Since: filter.Since, Until: filter.Until}
		if filter.Outcome != nil {
			f.Outcome = string(*filter.Outcome)
		}
	}
	p, err := r.DB.ListAudit(ctx, first, deref(after), f)
	if err != nil {
		return nil, err
	}
	c := &model.AuditEventConnection{Edges: make([]model.AuditEventEdge, len(p.Records)),
		Nodes: make([]model.AuditEvent, len(p.Records)), PageInfo: &model.PageInfo{HasNextPage: p.HasNext}}
	for i, rec := range p.Records {
		c.Nodes[i] = model.AuditEvent{ID: strconv.FormatInt(rec.ID, 10), At: rec.At, Principal: rec.Principal, Operation: rec.Operation,
			Target: optional(rec.Target), Outcome: model.AuditOutcome(rec.Outcome), Reason: optional(rec.Reason),
			RequestID: optional(rec.RequestID), ClientAddress: optional(rec.ClientAddress), UserAgent: optional(rec.UserAgent)}
		c.Edges[i] = model.AuditEventEdge{Cursor: p.Cursors[i], Node: &c.Nodes[i]}
	}
	if n := len(p.Cursors); n > 0 {
		c.PageInfo.EndCursor = &p.Cursors[n-1]
	}
	return c, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// AuditMutations is a field middleware (gqlgen AroundFields) that records every root mutation
// field nothing else recorded: one refused by argument checks before it reached the guard, or
// a write that does not pass the guard at all. Writes through the guard and directive denials
// record themselves; this only closes the gaps, so no mutation attempt goes unaudited.
func (r *Resolver) AuditMutations(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || fc.Object != "Mutation" || fc.Field.Field == nil {
		return next(ctx)
	}
	ctx, attempt := guard.NewAttempt(ctx)
	res, err := next(ctx)
	if attempt.Recorded() {
		return res, err
	}
	w := guard.Write{Op: fc.Field.Name, Actor: r.auditActor(ctx)}
	for _, arg := range []string{"id", "deviceId"} {
		if v, ok := fc.Args[arg].(string); ok {
			if id, perr := db.ParseDeviceID(v); perr == nil {
				w.Target = id // only a well-formed id: the argument is the caller's text
			}
			break
		}
	}
	r.Guard.Refused(ctx, w, err) // nil: SUCCEEDED
	return res, err
}

// auditActor is the principal of the request: the device that signed it, the signed-in user,
// or anonymous.
func (r *Resolver) auditActor(ctx context.Context) string {
	if p, ok := deviceauth.PrincipalFrom(ctx); ok {
		return "device:" + p.DeviceID
	}
	if _, ok := oidc.PrincipalFrom(ctx); ok {
		if u, err := r.currentUser(ctx); err == nil {
			return "user:" + u.ID
		}
	}
	return "anonymous"
}
