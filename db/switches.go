package db

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"
)

// SwitchChannel is the NOTIFY channel a kill-switch change is announced on, in the transaction
// that makes it (docs/operations.md, "Kill switches").
const SwitchChannel = "gpugate_write_switches"

// SwitchRow is the stored state of one write class's kill switch. A class never switched
// has no row: it is enabled, with a zero ChangedAt.
type SwitchRow struct {
	Class     string    `db:"class"`
	Enabled   bool      `db:"enabled"`
	Reason    string    `db:"reason"`
	ChangedAt time.Time `db:"changed_at"`
	ChangedBy string    `db:"changed_by"`
}

// WriteSwitches returns the stored switches (only the classes ever switched), or the store's
// error.
func (d *DB) WriteSwitches(ctx context.Context) ([]SwitchRow, error) {
	var out []SwitchRow
	err := d.x.SelectContext(ctx, &out, `SELECT class, enabled, reason, changed_at, changed_by FROM write_switches ORDER BY class`)
	return out, translate("write switches", err)
}

// SetWriteSwitch stores the switch of class (enabled, or disabled for reason) as changed by by,
// and announces it on SwitchChannel in the same transaction, so a replica that hears the
// notification reads the new state. reason must be 1..MaxReasonLen characters when disabling
// (ErrInvalid otherwise) and is cleared when enabling. It returns the stored switch, or the
// store's error.
func (d *DB) SetWriteSwitch(ctx context.Context, class string, enabled bool, reason, by string) (SwitchRow, error) {
	if !enabled {
		r, err := CleanText("reason", reason, MaxReasonLen)
		if err != nil {
			return SwitchRow{}, err
		}
		reason = r
	} else {
		reason = ""
	}
	by = truncate(by, 200)
	var out SwitchRow
	err := d.switchTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &out, `INSERT INTO write_switches (class, enabled, reason, changed_at, changed_by)
			VALUES ($1, $2, $3, now(), $4)
			ON CONFLICT (class) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason,
				changed_at = excluded.changed_at, changed_by = excluded.changed_by
			RETURNING class, enabled, reason, changed_at, changed_by`, class, enabled, reason, by); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, SwitchChannel, class)
		return err
	})
	return out, translate("set write switch", err)
}

// switchTx runs fn in a transaction, committing when it returns nil.
func (d *DB) switchTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}
