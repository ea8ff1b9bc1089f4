package db

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"golang.org/x/text/unicode/norm"
)

// HeartbeatWindow is how recent a worker's last heartbeat must be for its device to show UP.
const HeartbeatWindow = 2 * time.Minute

// Limits of owner-editable text.
const (
	MaxNameLen   = 64
	MaxLabels    = 16
	MaxLabelLen  = 32
	MaxReasonLen = 200
)

// Identity is a verified (issuer, subject) pair with the claims gpugate keeps.
type Identity struct {
	Issuer, Subject, Email, Name string
}

// UserForIdentity returns the user linked to the identity, creating the user and the link on the
// identity's first verified request. A new identity is never attached to an existing user here:
// linking accounts is the import's job, so nothing is merged silently.
func (d *DB) UserForIdentity(ctx context.Context, id Identity) (User, error) {
	if id.Issuer == "" || id.Subject == "" || len(id.Issuer) > 512 || len(id.Subject) > 255 {
		return User{}, Invalidf("identity has no usable issuer or subject")
	}
	var u User
	err := sqlx.GetContext(ctx, d.x, &u, `SELECT u.id, u.email, u.display_name FROM user_identities i
		JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2`, id.Issuer, id.Subject)
	if err == nil {
		return u, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return User{}, translate("get user", err)
	}
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return User{}, translate("provision user", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Concurrent first requests of one identity serialize here, so exactly one user is created.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))`,
		id.Issuer, id.Subject); err != nil {
		return User{}, translate("provision user", err)
	}
	err = tx.GetContext(ctx, &u, `SELECT u.id, u.email, u.display_name FROM user_identities i
		JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2`, id.Issuer, id.Subject)
	if err == nil {
		return u, tx.Commit()
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return User{}, translate("provision user", err)
	}
	var email *string
	if id.Email != "" {
		email = &id.Email
	}
	if err := tx.GetContext(ctx, &u, `INSERT INTO users (email, display_name) VALUES ($1, $2)
		RETURNING id, email, display_name`, email, truncate(id.Name, 128)); err != nil {
		return User{}, translate("provision user", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_identities (issuer, subject, user_id, email, linked_by)
		VALUES ($1, $2, $3, $4, 'login')`, id.Issuer, id.Subject, u.ID, email); err != nil {
		return User{}, translate("provision user", err)
	}
	return u, translate("provision user", tx.Commit())
}

// LinkIdentity links an identity to the user with the given email (dev mode: the demo users).
// It returns ErrNotFound when no such user exists and leaves an existing link untouched.
func (d *DB) LinkIdentity(ctx context.Context, id Identity, email, linkedBy string) error {
	res, err := d.x.ExecContext(ctx, `INSERT INTO user_identities (issuer, subject, user_id, email, linked_by)
		SELECT $1, $2, u.id, u.email, $4 FROM users u WHERE lower(u.email) = lower($3)
		ORDER BY u.created_at LIMIT 1
		ON CONFLICT (issuer, subject) DO NOTHING`, id.Issuer, id.Subject, email, linkedBy)
	if err != nil {
		return translate("link identity", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var exists bool
		if err := d.x.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))`, email); err != nil {
			return translate("link identity", err)
		}
		if !exists {
			return NotFoundf("no user with email %s", email)
		}
	}
	return nil
}

// DeviceOwner returns the owner of a device, or a NotFound error.
func (d *DB) DeviceOwner(ctx context.Context, id string) (string, error) {
	var owner string
	err := d.x.GetContext(ctx, &owner, `SELECT owner_id FROM devices WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", NotFoundf("device not found")
	}
	return owner, translate("device owner", err)
}

// ListOwnedDevices is ListDevices restricted to one owner's devices.
func (d *DB) ListOwnedDevices(ctx context.Context, owner string, p ListParams) (Page, error) {
	p.owner = owner
	return d.ListDevices(ctx, p)
}

// ownerWrite runs an UPDATE/DELETE whose WHERE holds both the device id ($1) and the owner ($2),
// so a write can only ever touch the caller's own device, whatever the layers above checked. When
// no row matched it says whether the device is missing or someone else's.
func (d *DB) ownerWrite(ctx context.Context, op, q string, id, owner string, args ...any) (Device, error) {
	var dev Device
	err := sqlx.GetContext(ctx, d.x, &dev, q, append([]any{id, owner}, args...)...)
	if errors.Is(err, sql.ErrNoRows) {
		if _, oerr := d.DeviceOwner(ctx, id); oerr != nil {
			return dev, oerr
		}
		return dev, Forbiddenf("you do not own this device")
	}
	return dev, translate(op, err)
}

// UpdateDevice renames and/or relabels the owner's device. It returns ErrInvalid for bad text,
// ErrNotFound / ErrForbidden when the device is missing or not the owner's.
func (d *DB) UpdateDevice(ctx context.Context, id, owner string, in UpdateDeviceInput) (Device, error) {
	var name any
	if in.Name != nil {
		n, err := CleanText("name", *in.Name, MaxNameLen)
		if err != nil {
			return Device{}, err
		}
		name = n
	}
	var labels any
	if in.Labels != nil {
		if len(in.Labels) > MaxLabels {
			return Device{}, Invalidf("labels: at most %d", MaxLabels)
		}
		clean := make([]string, 0, len(in.Labels))
		for _, l := range in.Labels {
			c, err := CleanText("labels", l, MaxLabelLen)
			if err != nil {
				return Device{}, err
			}
			if !slices.Contains(clean, c) {
				clean = append(clean, c)
			}
		}
		labels = pq.Array(clean)
	}
	return d.ownerWrite(ctx, "update device", `UPDATE devices SET name = COALESCE($3, name),
		labels = COALESCE($4::text[], labels), updated_at = now()
		WHERE id = $1 AND owner_id = $2 RETURNING `+deviceColumns, id, owner, name, labels)
}

// SetPaused pauses or resumes the owner's device; errors as UpdateDevice.
func (d *DB) SetPaused(ctx context.Context, id, owner string, paused bool) (Device, error) {
	q := `UPDATE devices SET paused = $4, updated_at = now(), status = ` + statusAfterPaused + `
		WHERE id = $1 AND owner_id = $2 RETURNING ` + deviceColumns
	return d.ownerWrite(ctx, "pause device", q, id, owner, HeartbeatWindow.Seconds(), paused)
}

// statusAfterPaused is statusAfter with the new paused flag ($4) instead of the stored one.
const statusAfterPaused = `CASE WHEN quarantined_at IS NOT NULL THEN 'QUARANTINED'
	WHEN $4 THEN 'PAUSED'
	WHEN last_seen_at > now() - make_interval(secs => $3) THEN 'UP' ELSE 'DOWN' END`

// RemoveDevice deletes the owner's device with its GPUs, credentials and attestations.
func (d *DB) RemoveDevice(ctx context.Context, id, owner string) error {
	_, err := d.ownerWrite(ctx, "remove device", `DELETE FROM devices WHERE id = $1 AND owner_id = $2
		RETURNING `+deviceColumns, id, owner)
	return err
}

// SetQuarantine quarantines (with a reason) or releases a device. Only admins may call it: the
// caller proves it with admin, which the role directive sets from the verified token.
func (d *DB) SetQuarantine(ctx context.Context, admin bool, id string, quarantine bool, reason string) (Device, error) {
	if !admin {
		return Device{}, Forbiddenf("this needs the ADMIN role")
	}
	if quarantine {
		r, err := CleanText("reason", reason, MaxReasonLen)
		if err != nil {
			return Device{}, err
		}
		reason = r
	}
	var dev Device
	err := sqlx.GetContext(ctx, d.x, &dev, `UPDATE devices SET
		quarantined_at = CASE WHEN $2 THEN COALESCE(quarantined_at, now()) END,
		quarantine_reason = CASE WHEN $2 THEN $4 ELSE '' END, updated_at = now(),
		status = CASE WHEN $2 THEN 'QUARANTINED' WHEN paused THEN 'PAUSED'
			WHEN last_seen_at > now() - make_interval(secs => $3) THEN 'UP' ELSE 'DOWN' END
		WHERE id = $1 RETURNING `+deviceColumns, id, quarantine, HeartbeatWindow.Seconds(), reason)
	if errors.Is(err, sql.ErrNoRows) {
		return dev, NotFoundf("device not found")
	}
	return dev, translate("quarantine device", err)
}

// CredentialsByDevice returns the credentials of each device, newest first; every ID gets an entry.
func (d *DB) CredentialsByDevice(ctx context.Context, ids []string) (map[string][]DeviceCredential, error) {
	var rows []DeviceCredential
	err := sqlx.SelectContext(ctx, d.x, &rows, `SELECT id, device_id, fingerprint, created_at, last_used_at,
		revoked_at FROM device_credentials WHERE device_id = ANY($1::uuid[]) ORDER BY device_id, created_at DESC`,
		pq.Array(ids))
	if err != nil {
		return nil, translate("list credentials", err)
	}
	return group(ids, rows, func(c DeviceCredential) string { return c.DeviceID }), nil
}

// AttestationsByDevice returns the latest 50 attestations of each device, newest first.
func (d *DB) AttestationsByDevice(ctx context.Context, ids []string) (map[string][]Attestation, error) {
	var rows []Attestation
	err := sqlx.SelectContext(ctx, d.x, &rows, `SELECT a.id, a.device_id, a.verdict, a.reasons, a.created_at
		FROM unnest($1::uuid[]) AS d(id)
		CROSS JOIN LATERAL (SELECT * FROM attestations WHERE device_id = d.id ORDER BY created_at DESC LIMIT 50) a
		ORDER BY a.device_id, a.created_at DESC`, pq.Array(ids))
	if err != nil {
		return nil, translate("list attestations", err)
	}
	return group(ids, rows, func(a Attestation) string { return a.DeviceID }), nil
}

func group[T any](ids []string, rows []T, key func(T) string) map[string][]T {
	out := make(map[string][]T, len(ids))
	for _, id := range ids {
		out[id] = []T{}
	}
	for _, r := range rows {
		out[key(r)] = append(out[key(r)], r)
	}
	return out
}

// CleanText normalises owner-supplied text (NFC, trimmed) and checks it: 1..max characters, no
// control or format characters (which would let a name hide or reorder text). It returns the
// clean text or an ErrInvalid naming the field.
func CleanText(field, s string, max int) (string, error) {
	if !utf8.ValidString(s) {
		return "", Invalidf("%s is not valid UTF-8", field)
	}
	s = strings.TrimSpace(norm.NFC.String(s))
	n := utf8.RuneCountInString(s)
	if n == 0 || n > max {
		return "", Invalidf("%s must be 1 to %d characters", field, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return "", Invalidf("%s must not contain control or format characters", field)
		}
	}
	return s, nil
}

func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max])
}
