package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/attest"
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
	res, err := tx.ExecContext(ctx, `INSERT INTO user_identities (issuer, subject, user_id, email, linked_by)
		VALUES ($1, $2, $3, $4, 'login') ON CONFLICT (issuer, subject) DO NOTHING`, id.Issuer, id.Subject, u.ID, email)
	if err != nil {
		return User{}, translate("provision user", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// LinkIdentity, which does not take the lock, linked the identity meanwhile: its link
		// wins and the user created here is rolled back.
		_ = tx.Rollback()
		return d.UserForIdentity(ctx, id)
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

// DeviceOwner returns the owner of a device, or a NotFound error (also for a removed device, so
// every owner operation on it answers NOT_FOUND).
func (d *DB) DeviceOwner(ctx context.Context, id string) (string, error) {
	var owner string
	err := d.x.GetContext(ctx, &owner, `SELECT owner_id FROM devices WHERE id = $1 AND removed_at IS NULL`, id)
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

// ownerWrite runs an UPDATE whose WHERE holds the device id ($1), the owner ($2) and
// removed_at IS NULL, so a write can only ever touch the caller's own live device, whatever the
// layers above checked. When no row matched it says whether the device is missing (or removed)
// or someone else's.
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
		WHERE id = $1 AND owner_id = $2 AND removed_at IS NULL RETURNING `+deviceColumns, id, owner, name, labels)
}

// SetPaused pauses or resumes the owner's device; errors as UpdateDevice.
func (d *DB) SetPaused(ctx context.Context, id, owner string, paused bool) (Device, error) {
	q := `UPDATE devices SET paused = $4, updated_at = now(), status = ` + statusAfterPaused + `
		WHERE id = $1 AND owner_id = $2 AND removed_at IS NULL RETURNING ` + deviceColumns
	return d.ownerWrite(ctx, "pause device", q, id, owner, HeartbeatWindow.Seconds(), paused)
}

// statusAfterPaused is statusAfter with the new paused flag ($4) instead of the stored one.
const statusAfterPaused = `CASE WHEN quarantined_at IS NOT NULL THEN 'QUARANTINED'
	WHEN $4 THEN 'PAUSED'
	WHEN last_seen_at > now() - make_interval(secs => $3) THEN 'UP' ELSE 'DOWN' END`

// RemoveDevice removes the owner's device: softly, because a device's GPU claims and evidence
// must outlive it (docs/attestation.md, "GPU identity lifecycle"). In one statement the device is hidden
// from every public and owner view (removed_at), every key of it is revoked and its open
// challenges expire, so no replica accepts its key afterwards whatever it cached. Its GPU claims,
// credentials, attestations and enrollment snapshot stay. It returns ErrNotFound for a missing or
// already removed device and ErrForbidden for another owner's.
func (d *DB) RemoveDevice(ctx context.Context, id, owner string) error {
	_, err := d.ownerWrite(ctx, "remove device", `WITH d AS (
			UPDATE devices SET removed_at = now(), updated_at = now(),
				status = CASE WHEN quarantined_at IS NOT NULL THEN 'QUARANTINED' ELSE 'DOWN' END
			WHERE id = $1 AND owner_id = $2 AND removed_at IS NULL RETURNING *),
		k AS (UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, now())
			WHERE device_id IN (SELECT id FROM d) RETURNING 1),
		c AS (UPDATE challenges SET expires_at = LEAST(expires_at, now())
			WHERE device_id IN (SELECT id FROM d) AND consumed_at IS NULL RETURNING 1)
		SELECT `+deviceColumns+` FROM d`, id, owner)
	return err
}

// SetQuarantine quarantines (with a reason) or releases a device, removed or not. Only admins
// may call it: the caller proves it with admin, which the role directive sets from the verified
// token. A quarantine also quarantines the GPU identities the device holds, wherever they
// reappear (GPUClaims, Enroll); releasing the device lifts that too, since an identity is
// quarantined exactly while its holder is. It returns ErrNotFound for an unknown device.
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
	// A quarantine also reaches the devices of the same owner that took GPU identities over from
	// this one (SAME_OWNER transfers, followed to their current holder, removed or not): an owner
	// who removes a device before the admin acts and re-enrolls its GPUs must not keep them out
	// of the quarantine. Those devices are quarantined with the inherited reason; each is
	// released on its own.
	var dev Device
	err := sqlx.GetContext(ctx, d.x, &dev, `WITH q AS (UPDATE devices SET
		quarantined_at = CASE WHEN $2 THEN COALESCE(quarantined_at, now()) END,
		quarantine_reason = CASE WHEN $2 THEN $4 ELSE '' END, updated_at = now(),
		status = CASE WHEN $2 THEN 'QUARANTINED' WHEN paused THEN 'PAUSED'
			WHEN last_seen_at > now() - make_interval(secs => $3) THEN 'UP' ELSE 'DOWN' END
		WHERE id = $1 RETURNING *),
	s AS (UPDATE devices h SET quarantined_at = now(), quarantine_reason = $5, status = 'QUARANTINED',
			updated_at = now()
		FROM q WHERE $2 AND h.id <> q.id AND h.owner_id = q.owner_id AND h.quarantined_at IS NULL
		  AND EXISTS (SELECT 1 FROM gpu_claim_transfers t JOIN gpus g ON g.uuid = t.uuid
			WHERE t.from_device_id = q.id AND t.rule = 'SAME_OWNER' AND g.device_id = h.id)
		RETURNING 1)
	SELECT `+deviceColumns+` FROM q`, id, quarantine, HeartbeatWindow.Seconds(), reason, inheritedQuarantineReason)
	if errors.Is(err, sql.ErrNoRows) {
		return dev, NotFoundf("device not found")
	}
	return dev, translate("quarantine device", err)
}

// MaxGPUUUIDLen bounds the GPU UUID an admin names (NVML's are 40 characters).
const MaxGPUUUIDLen = 96

// ReassignGPU awards the GPU identity uuid to device, by an admin's decision on a conflict (rule 6
// of docs/attestation.md, "GPU identity lifecycle"). The device must be live and have reported
// the GPU at enrollment; the claim moves from its holder, whoever that is (removed, quarantined or another
// owner's device), and is logged with actor. Both devices' public GPU counts follow. Awarding a
// GPU the device already holds changes nothing. Only admins may call it (admin, from the role
// directive). It returns the device, ErrForbidden without admin, ErrNotFound for a missing or
// removed device, ErrInvalid for a bad UUID or one the device did not report.
func (d *DB) ReassignGPU(ctx context.Context, admin bool, actor, uuid, deviceID string) (Device, error) {
	if !admin {
		return Device{}, Forbiddenf("this needs the ADMIN role")
	}
	uuid, err := CleanText("uuid", uuid, MaxGPUUUIDLen)
	if err != nil {
		return Device{}, err
	}
	uuid = attest.UUIDKey(uuid)
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return Device{}, translate("reassign gpu", err)
	}
	defer func() { _ = tx.Rollback() }()
	var target struct {
		Owner    string `db:"owner_id"`
		Snapshot []byte `db:"enrollment_snapshot"`
	}
	err = tx.GetContext(ctx, &target, `SELECT owner_id, enrollment_snapshot FROM devices
		WHERE id = $1 AND removed_at IS NULL FOR UPDATE`, deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, NotFoundf("device not found")
	}
	if err != nil {
		return Device{}, translate("reassign gpu", err)
	}
	var holder string
	err = tx.GetContext(ctx, &holder, `SELECT device_id FROM gpus WHERE uuid = $1 FOR UPDATE`, uuid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Device{}, translate("reassign gpu", err)
	}
	if holder != deviceID {
		var snap attest.Snapshot
		if target.Snapshot != nil {
			if snap, err = attest.ParseSnapshot(target.Snapshot); err != nil {
				return Device{}, fmt.Errorf("reassign gpu: enrollment snapshot of %s: %w", deviceID, err)
			}
		}
		idx := slices.IndexFunc(snap.GPUs, func(g attest.GPU) bool { return attest.UUIDKey(g.UUID) == uuid })
		switch {
		case idx < 0:
			return Device{}, Invalidf("the device did not report GPU %s at enrollment", uuid)
		case holder == "": // nobody holds it: the device claims it as at enrollment
			err = insertGPUs(ctx, tx, deviceID, snap, func(u string) bool { return u == uuid })
		default:
			_, err = tx.ExecContext(ctx, `WITH moved AS (
					UPDATE gpus SET device_id = $2, idx = $3 WHERE uuid = $1 RETURNING uuid)
				INSERT INTO gpu_claim_transfers (uuid, from_device_id, to_device_id, rule, actor)
				SELECT uuid, $4, $2, 'ADMIN', $5 FROM moved`, uuid, deviceID, idx, holder, actor)
			if err == nil {
				_, err = tx.ExecContext(ctx, `UPDATE devices SET gpu_count = (SELECT count(*) FROM gpus WHERE device_id = $1),
					updated_at = now() WHERE id = $1`, holder)
			}
		}
		if err != nil {
			return Device{}, translate("reassign gpu", err)
		}
	}
	q := `UPDATE devices SET gpu_count = (SELECT count(*) FROM gpus WHERE device_id = $1),
		updated_at = now() WHERE id = $1 RETURNING ` + deviceColumns
	if holder == deviceID { // already the device's: nothing changes
		q = `SELECT ` + deviceColumns + ` FROM devices WHERE id = $1`
	}
	var dev Device
	if err := tx.GetContext(ctx, &dev, q, deviceID); err != nil {
		return Device{}, translate("reassign gpu", err)
	}
	return dev, translate("reassign gpu", tx.Commit())
}

// GPUConflict is an open conflict over a GPU identity: a live device reported a UUID another
// device holds.
type GPUConflict struct {
	UUID              string    `db:"uuid"`
	ClaimantID        string    `db:"claimant_id"`
	HolderID          string    `db:"holder_id"`
	HolderRemoved     bool      `db:"holder_removed"`
	HolderQuarantined bool      `db:"holder_quarantined"`
	SameOwner         bool      `db:"same_owner"`
	Since             time.Time `db:"since"`
	Claimant          Device    `db:"-"`
	Holder            Device    `db:"-"`
}

// GPUConflicts returns up to first open GPU identity conflicts, newest first (admin only). A
// conflict is open while its claimant is live and another device holds the UUID; reassignGpu
// closes it. It returns ErrForbidden without admin and ErrInvalid for first outside
// 1..MaxPageSize.
func (d *DB) GPUConflicts(ctx context.Context, admin bool, first int) ([]GPUConflict, error) {
	if !admin {
		return nil, Forbiddenf("this needs the ADMIN role")
	}
	if err := checkFirst(first); err != nil {
		return nil, err
	}
	var out []GPUConflict
	err := sqlx.SelectContext(ctx, d.x, &out, `SELECT c.uuid, c.claimant_device_id AS claimant_id,
			g.device_id AS holder_id, h.removed_at IS NOT NULL AS holder_removed,
			h.quarantined_at IS NOT NULL AS holder_quarantined, h.owner_id = cl.owner_id AS same_owner,
			c.created_at AS since
		FROM gpu_claim_conflicts c
		JOIN devices cl ON cl.id = c.claimant_device_id AND cl.removed_at IS NULL
		JOIN gpus g ON g.uuid = c.uuid AND g.device_id <> c.claimant_device_id
		JOIN devices h ON h.id = g.device_id
		ORDER BY c.created_at DESC, c.uuid, c.claimant_device_id LIMIT $1`, first)
	if err != nil {
		return nil, translate("gpu conflicts", err)
	}
	ids := make([]string, 0, 2*len(out))
	for _, c := range out {
		ids = append(ids, c.ClaimantID, c.HolderID)
	}
	var devs []Device
	if err := sqlx.SelectContext(ctx, d.x, &devs, `SELECT `+deviceColumns+` FROM devices WHERE id = ANY($1::uuid[])`,
		pq.Array(ids)); err != nil {
		return nil, translate("gpu conflicts", err)
	}
	byID := make(map[string]Device, len(devs))
	for _, dev := range devs {
		byID[dev.ID] = dev
	}
	for i := range out {
		out[i].Claimant, out[i].Holder = byID[out[i].ClaimantID], byID[out[i].HolderID]
	}
	if out == nil {
		out = []GPUConflict{}
	}
	return out, nil
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
	err := sqlx.SelectContext(ctx, d.x, &rows, `SELECT a.id, a.device_id, a.verdict, a.reasons, a.created_at, a.level, a.gpu_evidence
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
