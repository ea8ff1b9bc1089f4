package resolvers

import (
	"context"
	"errors"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
)

// The kill switches (docs/operations.md, "Kill switches"). The schema's @hasRole(role: ADMIN)
// admits only admins; the switches themselves belong to no write class, so no switch or limit
// can lock operators out of them.

var errNoSwitches = errors.New("kill switches are not configured")

// writeSwitches returns every class's switch, read from the database; the store's error
// otherwise.
func (r *Resolver) writeSwitches(ctx context.Context) ([]model.WriteSwitch, error) {
	s := r.Guard.Switches()
	if s == nil {
		return nil, errNoSwitches
	}
	rows, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	return convertAll(rows, toWriteSwitch), nil
}

// setWriteSwitch switches class on or off (with reason) as the signed-in admin, through the
// guard (the audit log records who did it). It returns a BAD_USER_INPUT error for a reason that
// is not 1..200 characters, or the store's error.
func (r *Resolver) setWriteSwitch(ctx context.Context, class model.WriteClass, enabled bool, reason string) (*model.WriteSwitch, error) {
	s := r.Guard.Switches()
	if s == nil {
		return nil, errNoSwitches
	}
	u, err := r.currentUser(ctx)
	if err != nil {
		return nil, err
	}
	op := "disableWrites"
	if enabled {
		op = "enableWrites"
	}
	var sw db.SwitchRow
	err = r.Guard.Do(ctx, guard.Write{Op: op, Actor: u.ID, Target: string(class)}, func(ctx context.Context) error {
		sw, err = s.Set(ctx, guard.Class(class), enabled, reason, "user:"+u.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := toWriteSwitch(sw)
	return &out, nil
}

func toWriteSwitch(s db.SwitchRow) model.WriteSwitch {
	out := model.WriteSwitch{Class: model.WriteClass(s.Class), Enabled: s.Enabled}
	if !s.Enabled {
		out.Reason = &s.Reason
	}
	if !s.ChangedAt.IsZero() {
		at := s.ChangedAt
		out.ChangedAt = &at
	}
	if s.ChangedBy != "" {
		by := s.ChangedBy
		out.ChangedBy = &by
	}
	return out
}
