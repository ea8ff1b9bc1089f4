package db

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/attest"
)

// EnrollmentTokenTTL is how long an enrollment token may wait for its worker.
const EnrollmentTokenTTL = 15 * time.Minute

// CreateEnrollmentToken makes a one-time token that enrolls one device under owner. Only the
// token's SHA-256 is stored; the token itself is returned once.
func (d *DB) CreateEnrollmentToken(ctx context.Context, owner string) (string, time.Time, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("enrollment token: %w", err)
	}
	token := "gpe_" + base64.RawURLEncoding.EncodeToString(raw[:])
	hash := sha256.Sum256([]byte(token))
	var expires time.Time
	err := d.x.GetContext(ctx, &expires, `INSERT INTO enrollment_tokens (token_hash, owner_id, expires_at)
		VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING expires_at`,
		hash[:], owner, EnrollmentTokenTTL.Seconds())
	return token, expires, translate("create enrollment token", err)
}

// Enrollment is what a worker sends to enroll its device.
type Enrollment struct {
	Token     string
	PublicKey ed25519.PublicKey
	Name      string
	Region    string
	Hostname  string
	IP        string
	Snapshot  attest.Snapshot
}

// Enroll consumes the token (atomically: a token enrolls one device, once) and creates the device
// under the token's owner, PENDING until its first proof passes, with the worker's key as its
// first credential. The device's GPU claims follow the rules of claimGPUs; a device that reports
// a GPU identity held by a quarantined device is quarantined too (rule 5 of docs/attestation.md,
// "GPU identity lifecycle"). Without a name the device gets a random public name
// (RandomDeviceName): the hostname is owner-only and never becomes public. It returns ErrInvalid for a bad key, text or
// snapshot or an unusable token, ErrConflict for a key already registered. A retry with a used,
// unexpired token and the key it enrolled (unrevoked, device not removed) returns that device
// and credential again, so a worker that lost the answer is not stranded.
func (d *DB) Enroll(ctx context.Context, e Enrollment) (deviceID, credentialID string, err error) {
	if len(e.PublicKey) != ed25519.PublicKeySize {
		return "", "", Invalidf("publicKey must be an Ed25519 public key")
	}
	region, err := CleanText("region", e.Region, 64)
	if err != nil {
		return "", "", err
	}
	hostname := ""
	if e.Hostname != "" {
		if hostname, err = CleanText("hostname", e.Hostname, MaxHostnameLen); err != nil {
			return "", "", err
		}
	}
	name := e.Name
	if name == "" {
		if name, err = RandomDeviceName(); err != nil {
			return "", "", err
		}
	}
	if name, err = CleanText("name", name, MaxNameLen); err != nil {
		return "", "", err
	}
	if len(e.Snapshot.GPUs) == 0 {
		return "", "", Invalidf("snapshot has no GPUs")
	}
	var ip any
	if parsed := net.ParseIP(e.IP); parsed != nil {
		ip = parsed.String()
	}
	snap, err := json.Marshal(e.Snapshot)
	if err != nil {
		return "", "", fmt.Errorf("enroll: %w", err)
	}
	model, count := primaryModel(e.Snapshot)
	hash := sha256.Sum256([]byte(e.Token))

	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return "", "", translate("enroll", err)
	}
	defer func() { _ = tx.Rollback() }()
	var owner string
	err = tx.GetContext(ctx, &owner, `UPDATE enrollment_tokens SET used_at = now()
		WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING owner_id`, hash[:])
	if errors.Is(err, sql.ErrNoRows) {
		// A worker retrying an enrollment whose answer it lost (docs/resilience.md): the token
		// enrolled a live device with this very key, whose holder signed this request. It gets
		// that device again; any other caller gets the refusal.
		var prior struct {
			Device     string `db:"device_id"`
			Credential string `db:"id"`
		}
		perr := tx.GetContext(ctx, &prior, `SELECT t.device_id, c.id FROM enrollment_tokens t
			JOIN devices d ON d.id = t.device_id
			JOIN device_credentials c ON c.device_id = t.device_id
			WHERE t.token_hash = $1 AND t.used_at IS NOT NULL AND t.expires_at > now()
			  AND c.fingerprint = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL`, hash[:], Fingerprint(e.PublicKey))
		if perr == nil {
			return prior.Device, prior.Credential, nil
		}
		if !errors.Is(perr, sql.ErrNoRows) {
			return "", "", translate("enroll", perr)
		}
		return "", "", Invalidf("the enrollment token is unknown, expired or already used")
	}
	if err != nil {
		return "", "", translate("enroll", err)
	}
	err = tx.GetContext(ctx, &deviceID, `INSERT INTO devices (owner_id, name, region, hostname, ip_address,
		enrolled_at, status, verification, gpu_model, gpu_count, enrollment_snapshot)
		VALUES ($1, $2, $3, $4, $5, now(), 'DOWN', 'PENDING', $6, $7, $8) RETURNING id`,
		owner, name, region, hostname, ip, model, count, snap)
	if err != nil {
		return "", "", translate("enroll", err)
	}
	if err := claimGPUs(ctx, tx, deviceID, owner, e.Snapshot, nil); err != nil {
		return "", "", err
	}
	uuids, serials := e.Snapshot.IdentityKeys()
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET quarantined_at = now(), quarantine_reason = $2,
			status = 'QUARANTINED'
		WHERE id = $1 AND EXISTS (SELECT 1 FROM gpus g JOIN devices h ON h.id = g.device_id
			WHERE g.device_id <> $1 AND h.quarantined_at IS NOT NULL
			  AND (g.uuid = ANY($3::text[]) OR (g.serial <> '' AND g.serial = ANY($4::text[]))))`,
		deviceID, inheritedQuarantineReason, pq.Array(uuids), pq.Array(serials)); err != nil {
		return "", "", translate("enroll", err)
	}
	if credentialID, err = addCredential(ctx, tx, deviceID, e.PublicKey); err != nil {
		return "", "", err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE enrollment_tokens SET device_id = $2 WHERE token_hash = $1`,
		hash[:], deviceID); err != nil {
		return "", "", translate("enroll", err)
	}
	return deviceID, credentialID, translate("enroll", tx.Commit())
}

// MaxHostnameLen is the longest hostname a worker may report (a DNS name's limit).
const MaxHostnameLen = 253

// inheritedQuarantineReason is what the owner of a device quarantined for reporting a GPU
// identity under quarantine reads; it names neither the other device nor its owner.
const inheritedQuarantineReason = "GPU_QUARANTINED: this host reports a GPU identity that is under quarantine on another device; an admin must release it"

// nameWords are the words of random public names: common, short, unrelated to any host.
var nameWords = [...]string{"amber", "arctic", "aspen", "basalt", "birch", "canyon", "cedar", "cinder",
	"coral", "delta", "dune", "ember", "fern", "fjord", "flint", "frost", "glade", "granite", "harbor",
	"hazel", "heron", "indigo", "iris", "jade", "juniper", "kelp", "lagoon", "larch", "lichen", "lotus",
	"maple", "marble", "meadow", "mesa", "moss", "nimbus", "oak", "onyx", "opal", "orchid", "pebble",
	"pine", "prairie", "quartz", "raven", "reef", "ridge", "river", "saffron", "sage", "sequoia",
	"shale", "sierra", "slate", "spruce", "summit", "tundra", "umber", "valley", "willow", "wren",
	"yarrow", "zenith", "zephyr"}

// RandomDeviceName returns a random public name, "gpu-<word>-<word>-<4 hex digits>" (about 2^28
// possibilities): drawn from crypto/rand, never derived from the hostname, key, address, owner
// or device id, so the public name says nothing private. Names need not be unique. It returns
// an error only if the system's random source fails.
func RandomDeviceName() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("device name: %w", err)
	}
	n := len(nameWords)
	return fmt.Sprintf("gpu-%s-%s-%02x%02x", nameWords[int(b[0])%n], nameWords[int(b[1])%n], b[2], b[3]), nil
}

// claimGPUs stores the GPU claims of a device from snap (only the GPUs whose UUID keep admits,
// all when keep is nil), by the rules of docs/attestation.md, "GPU identity lifecycle":
//   - a UUID nobody holds becomes the device's (rule 1);
//   - a UUID a removed device of the same owner holds moves to the device, unless that removed
//     device is quarantined (rule 3); the move is logged in gpu_claim_transfers;
//   - a UUID any other device holds (live or removed, another owner's or a live device of the
//     same owner) stays where it is and the attempt is recorded in gpu_claim_conflicts for an
//     admin (rules 2 and 4);
//   - so does a GPU whose board serial another device holds, whatever UUID it reports (the
//     conflict is recorded under the holder's UUID).
//
// A GPU keeps its position in snap as its index. The device's public gpu_count becomes the
// number of GPUs it holds. It returns a translated database error.
func claimGPUs(ctx context.Context, x sqlx.ExtContext, deviceID, owner string, snap attest.Snapshot, keep func(uuid string) bool) error {
	if keep == nil {
		keep = func(string) bool { return true }
	}
	var idx []int
	var uuids, serials []string
	serialOf := map[string]string{}
	for i, g := range snap.GPUs {
		if u := attest.UUIDKey(g.UUID); u != "" && keep(u) && !slices.Contains(uuids, u) {
			idx = append(idx, i)
			uuids = append(uuids, u)
			if k, ok := attest.SerialKey(g.Serial); ok {
				serialOf[u] = k
				serials = append(serials, k)
			}
		}
	}
	// Concurrent claims of one identity serialize here (the unique index guards UUIDs, nothing
	// guards serials), in one order so two claimants never wait on each other.
	locks := make([]string, 0, len(uuids)+len(serials))
	for _, u := range uuids {
		locks = append(locks, "gpugate:gpu-uuid:"+u)
	}
	for _, k := range serials {
		locks = append(locks, "gpugate:gpu-serial:"+k)
	}
	slices.Sort(locks)
	if _, err := x.ExecContext(ctx, `SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k`,
		pq.Array(slices.Compact(locks))); err != nil {
		return translate("claim gpus", err)
	}
	// Rule 3: only from a removed, unquarantined device of the same owner. The row moves (its
	// index becomes the new device's), so the claim never exists twice.
	if _, err := x.ExecContext(ctx, `WITH moved AS (
			UPDATE gpus g SET device_id = $1, idx = w.i
			FROM unnest($2::int[], $3::text[]) AS w(i, u), devices h
			WHERE g.uuid = w.u AND h.id = g.device_id AND h.id <> $1 AND h.owner_id = $4
			  AND h.removed_at IS NOT NULL AND h.quarantined_at IS NULL
			RETURNING g.uuid, h.id AS from_id)
		INSERT INTO gpu_claim_transfers (uuid, from_device_id, to_device_id, rule)
		SELECT uuid, from_id, $1, 'SAME_OWNER' FROM moved`,
		deviceID, pq.Array(idx), pq.Array(uuids), owner); err != nil {
		return translate("claim gpus", err)
	}
	// A serial is a GPU identity too (rule 2 by serial): a GPU whose board serial another device
	// holds is not claimed, or a later device with made-up UUIDs and copied serials would get a
	// public GPU count and make the earlier holder's next proof SERIAL_ON_ANOTHER_DEVICE. The
	// conflict is recorded under the holder's UUID, so gpuConflicts shows both devices.
	var held []string
	if len(serials) > 0 {
		if err := sqlx.SelectContext(ctx, x, &held, `SELECT DISTINCT serial FROM gpus
			WHERE serial = ANY($2::text[]) AND device_id <> $1`, deviceID, pq.Array(serials)); err != nil {
			return translate("claim gpus", err)
		}
	}
	claim := keep
	if len(held) > 0 {
		claim = func(u string) bool { return keep(u) && !slices.Contains(held, serialOf[u]) }
	}
	if err := insertGPUs(ctx, x, deviceID, snap, claim); err != nil {
		return err
	}
	if _, err := x.ExecContext(ctx, `INSERT INTO gpu_claim_conflicts (uuid, claimant_device_id)
		SELECT g.uuid, $1 FROM gpus g WHERE (g.uuid = ANY($2::text[]) OR g.serial = ANY($3::text[])) AND g.device_id <> $1
		ON CONFLICT DO NOTHING`, deviceID, pq.Array(uuids), pq.Array(held)); err != nil {
		return translate("claim gpus", err)
	}
	// The public count is what the device was allowed to claim (written only when it changed: a
	// flagged device re-proving must not rewrite its row each time).
	if _, err := x.ExecContext(ctx, `UPDATE devices d SET gpu_count = c.n
		FROM (SELECT count(*) AS n FROM gpus WHERE device_id = $1) c
		WHERE d.id = $1 AND d.gpu_count <> c.n`, deviceID); err != nil {
		return translate("claim gpus", err)
	}
	return nil
}

// insertGPUs stores the snapshot's GPUs that keep admits (by attest.UUIDKey, the spelling
// stored), each at its snapshot position; a UUID
// another device already holds is skipped (the holder keeps its claim; the proof flags the
// claimant), as is a position the device already fills. Rows are inserted in UUID order: two
// enrollments reporting the same UUIDs in different orders would otherwise deadlock on the
// unique index, and one would fail with a driver error.
func insertGPUs(ctx context.Context, x sqlx.ExtContext, deviceID string, s attest.Snapshot, keep func(uuid string) bool) error {
	var uuids, models, archs, ccs, serials []string
	var idx, pcis []int
	var mems []int64
	for i, g := range s.GPUs {
		u := attest.UUIDKey(g.UUID)
		if u == "" || !keep(u) {
			continue
		}
		idx = append(idx, i)
		uuids = append(uuids, u)
		models = append(models, ModelName(g))
		dev, _ := attest.SplitPCIID(g.PCIDeviceID)
		if g.PCIDeviceID <= 0xFFFF {
			dev = uint16(g.PCIDeviceID)
		}
		pcis = append(pcis, int(dev))
		mems = append(mems, int64(g.MemoryTotalBytes>>20))
		archs = append(archs, g.Architecture)
		ccs = append(ccs, fmt.Sprintf("%d.%d", g.ComputeMajor, g.ComputeMinor))
		key, _ := attest.SerialKey(g.Serial) // placeholders ("N/A", zeros) store as ""
		serials = append(serials, key)
	}
	_, err := x.ExecContext(ctx, `INSERT INTO gpus (device_id, idx, uuid, model, pci_device_id, memory_mib,
		architecture, compute_capability, serial)
		SELECT $1, i, u, m, p, mem, a, c, s FROM unnest($2::int[], $3::text[], $4::text[], $5::int[],
			$6::bigint[], $7::text[], $8::text[], $9::text[]) AS t(i, u, m, p, mem, a, c, s)
		ORDER BY u
		ON CONFLICT DO NOTHING`, deviceID, pq.Array(idx), pq.Array(uuids), pq.Array(models), pq.Array(pcis),
		pq.Array(mems), pq.Array(archs), pq.Array(ccs), pq.Array(serials))
	return translate("store gpus", err)
}

// ReclaimGPUs applies claimGPUs again, at a proof, to the GPUs the device enrolled with that it
// still reports (present), for a live device: a claim that became movable since enrollment (its
// removed holder was released from quarantine, say) passes to it now. A GPU reported only
// later is never claimed (it is IMMUTABLE_FIELD_CHANGED, and claiming it would let a device
// pick up identities after enrollment). It returns ErrNotFound for a missing or removed device.
func (d *DB) ReclaimGPUs(ctx context.Context, deviceID string, enrolled attest.Snapshot, present []string) error {
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return translate("reclaim gpus", err)
	}
	defer func() { _ = tx.Rollback() }()
	var owner string
	err = tx.GetContext(ctx, &owner, `SELECT owner_id FROM devices WHERE id = $1 AND removed_at IS NULL FOR UPDATE`, deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return NotFoundf("device not found")
	}
	if err != nil {
		return translate("reclaim gpus", err)
	}
	if err := claimGPUs(ctx, tx, deviceID, owner, enrolled, func(u string) bool { return slices.Contains(present, u) }); err != nil {
		return err
	}
	return translate("reclaim gpus", tx.Commit())
}

// primaryModel is the public model of a host: its most numerous GPU model, named from the
// reference table by PCI id (a worker can report any NVML name; an unidentified GPU shows its
// NVML name marked as unverified).
func primaryModel(s attest.Snapshot) (string, int) {
	counts := map[string]int{}
	best := ""
	for _, g := range s.GPUs {
		name := ModelName(g)
		counts[name]++
		if counts[name] > counts[best] || counts[name] == counts[best] && name < best {
			best = name
		}
	}
	return best, len(s.GPUs)
}

// ModelName is the public name of a GPU: "NVIDIA " + the reference row's name for a known PCI id,
// else the reported name marked "(unverified)".
func ModelName(g attest.GPU) string {
	if m, ok := attest.Identify(g); ok {
		return "NVIDIA " + m.Name
	}
	return truncate(g.Name, 100) + " (unverified)"
}

// Fingerprint is the hex SHA-256 of a public key.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

func addCredential(ctx context.Context, x sqlx.ExtContext, deviceID string, pub ed25519.PublicKey) (string, error) {
	var id string
	err := sqlx.GetContext(ctx, x, &id, `INSERT INTO device_credentials (device_id, public_key, fingerprint)
		VALUES ($1, $2, $3) RETURNING id`, deviceID, []byte(pub), Fingerprint(pub))
	if err != nil {
		err = translate("add credential", err)
		if errors.Is(err, ErrConflict) {
			// Also a removed device's key: removal retires its keys for good.
			return "", &Error{Kind: ErrConflict, Msg: "this public key is already registered (a removed device's key cannot enroll again: generate a new key)"}
		}
	}
	return id, err
}

// AddDeviceKey registers another worker key for the owner's device (key rotation). Adding a key
// the device already holds, unrevoked, returns that credential (a retry is idempotent); it
// returns ErrConflict for a key registered anywhere else or revoked, ErrForbidden or ErrNotFound
// for a device that is not the owner's or does not exist.
func (d *DB) AddDeviceKey(ctx context.Context, deviceID, owner string, pub ed25519.PublicKey) (DeviceCredential, error) {
	if len(pub) != ed25519.PublicKeySize {
		return DeviceCredential{}, Invalidf("publicKey must be an Ed25519 public key")
	}
	var c DeviceCredential
	err := sqlx.GetContext(ctx, d.x, &c, `INSERT INTO device_credentials (device_id, public_key, fingerprint)
		SELECT id, $3, $4 FROM devices WHERE id = $1 AND owner_id = $2 AND removed_at IS NULL
		RETURNING id, device_id, fingerprint, created_at, last_used_at, revoked_at`,
		deviceID, owner, []byte(pub), Fingerprint(pub))
	if errors.Is(err, sql.ErrNoRows) {
		if _, oerr := d.DeviceOwner(ctx, deviceID); oerr != nil {
			return c, oerr
		}
		return c, Forbiddenf("you do not own this device")
	}
	if err = translate("add device key", err); errors.Is(err, ErrConflict) {
		// A retry whose first answer was lost (docs/resilience.md): the key is already a live key
		// of this very device of the caller's, so the answer is that credential. A key of another
		// device, of a removed device or a revoked key stays a conflict.
		var prior DeviceCredential
		perr := sqlx.GetContext(ctx, d.x, &prior, `SELECT c.id, c.device_id, c.fingerprint, c.created_at, c.last_used_at, c.revoked_at
			FROM device_credentials c JOIN devices d ON d.id = c.device_id
			WHERE c.fingerprint = $3 AND c.device_id = $1 AND d.owner_id = $2 AND c.revoked_at IS NULL AND d.removed_at IS NULL`,
			deviceID, owner, Fingerprint(pub))
		if perr == nil {
			return prior, nil
		}
		if !errors.Is(perr, sql.ErrNoRows) {
			return c, translate("add device key", perr)
		}
		return c, &Error{Kind: ErrConflict, Msg: "this public key is already registered"}
	}
	return c, err
}

// RevokeDeviceKey revokes one of the owner's device's keys; revoking twice keeps the first time.
func (d *DB) RevokeDeviceKey(ctx context.Context, deviceID, owner, credentialID string) (DeviceCredential, error) {
	var c DeviceCredential
	err := sqlx.GetContext(ctx, d.x, &c, `UPDATE device_credentials c SET revoked_at = COALESCE(c.revoked_at, now())
		FROM devices d WHERE c.id = $3 AND c.device_id = $1 AND d.id = c.device_id AND d.owner_id = $2
		RETURNING c.id, c.device_id, c.fingerprint, c.created_at, c.last_used_at, c.revoked_at`,
		deviceID, owner, credentialID)
	if errors.Is(err, sql.ErrNoRows) {
		if _, oerr := d.DeviceOwner(ctx, deviceID); oerr != nil {
			return c, oerr
		}
		return c, NotFoundf("no such key on this device")
	}
	return c, translate("revoke device key", err)
}

// DeviceKey is an unrevoked public key of a device.
type DeviceKey struct {
	CredentialID string `db:"id"`
	PublicKey    []byte `db:"public_key"`
}

// DeviceKeys returns the unrevoked keys of a device (none for an unknown or removed device).
func (d *DB) DeviceKeys(ctx context.Context, deviceID string) ([]DeviceKey, error) {
	var keys []DeviceKey
	err := sqlx.SelectContext(ctx, d.x, &keys, `SELECT c.id, c.public_key FROM device_credentials c
		JOIN devices d ON d.id = c.device_id
		WHERE c.device_id = $1 AND c.revoked_at IS NULL AND d.removed_at IS NULL`, deviceID)
	return keys, translate("device keys", err)
}

// TouchCredentials records that the credentials were used now.
func (d *DB) TouchCredentials(ctx context.Context, ids []string) error {
	_, err := d.x.ExecContext(ctx, `UPDATE device_credentials SET last_used_at = now() WHERE id = ANY($1::uuid[])`,
		pq.Array(ids))
	return translate("touch credentials", err)
}

// IssuedChallenge is a single-use proof-of-work challenge bound to one device.
type IssuedChallenge struct {
	ID         string    `db:"id"`
	DeviceID   string    `db:"device_id"`
	Nonce      []byte    `db:"nonce"`
	Difficulty int       `db:"difficulty"`
	CreatedAt  time.Time `db:"created_at"`
	ExpiresAt  time.Time `db:"expires_at"`
}

// CreateChallenge issues a challenge with 32 random bytes for the device. It returns ErrNotFound
// for a missing or removed device (the check is in the statement, so a gateway replica that
// still caches a removed device's key cannot issue it a challenge), and a RateLimitError when
// the device already holds Options.MaxOpenChallenges open challenges.
func (d *DB) CreateChallenge(ctx context.Context, deviceID string, difficulty int, ttl time.Duration) (IssuedChallenge, error) {
	// Open-challenge cap (evidence flooding): checked apart from the insert; concurrent requests
	// of one key are also bounded by the per-key rate limit, so a race overshoots by little.
	if err := checkOpenChallenges(ctx, d.x, deviceID, d.maxOpen); err != nil {
		return IssuedChallenge{}, err
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return IssuedChallenge{}, fmt.Errorf("challenge: %w", err)
	}
	var c IssuedChallenge
	err := sqlx.GetContext(ctx, d.x, &c, `INSERT INTO challenges (device_id, nonce, difficulty, expires_at)
		SELECT id, $2, $3, now() + make_interval(secs => $4) FROM devices WHERE id = $1 AND removed_at IS NULL
		RETURNING id, device_id, nonce, difficulty, created_at, expires_at`, deviceID, nonce, difficulty, ttl.Seconds())
	if errors.Is(err, sql.ErrNoRows) {
		return c, NotFoundf("device not found")
	}
	return c, translate("create challenge", err)
}

// OpenChallenge returns the device's challenge if it is still open (unused, unexpired). When it
// is not, the returned reason says why: unknown or another device's challenge, already used, or
// expired. It does not consume it: ConsumeAndRecord does, atomically with the verdict.
func (d *DB) OpenChallenge(ctx context.Context, deviceID, challengeID string) (IssuedChallenge, attest.Reason, error) {
	var c struct {
		IssuedChallenge
		Consumed bool `db:"consumed"`
		Expired  bool `db:"expired"`
	}
	err := sqlx.GetContext(ctx, d.x, &c, `SELECT id, device_id, nonce, difficulty, created_at, expires_at,
		consumed_at IS NOT NULL AS consumed, expires_at <= now() AS expired FROM challenges WHERE id = $1`, challengeID)
	switch {
	case errors.Is(err, sql.ErrNoRows) || err == nil && c.DeviceID != deviceID:
		return IssuedChallenge{}, attest.ReasonChallengeForeign, nil
	case err != nil:
		return IssuedChallenge{}, "", translate("challenge", err)
	case c.Consumed:
		return IssuedChallenge{}, attest.ReasonChallengeReplayed, nil
	case c.Expired:
		return IssuedChallenge{}, attest.ReasonChallengeExpired, nil
	}
	return c.IssuedChallenge, "", nil
}

// EnrollmentSnapshot returns the snapshot the device enrolled with, and false for a device that
// has none (created before workers enrolled themselves: its first passing proof sets it).
func (d *DB) EnrollmentSnapshot(ctx context.Context, deviceID string) (attest.Snapshot, bool, error) {
	var raw []byte
	if err := d.x.GetContext(ctx, &raw, `SELECT enrollment_snapshot FROM devices WHERE id = $1`, deviceID); err != nil {
		return attest.Snapshot{}, false, translate("enrollment snapshot", err)
	}
	if raw == nil {
		return attest.Snapshot{}, false, nil
	}
	s, err := attest.ParseSnapshot(raw)
	if err != nil {
		return attest.Snapshot{}, false, fmt.Errorf("enrollment snapshot of %s: %w", deviceID, err)
	}
	return s, true, nil
}

// GPUClaims returns, for the GPU UUIDs and serials of a snapshot, the other devices that hold
// them, removed devices included (a claim outlives its device): the cross-device counterfeit
// rules. A UUID held elsewhere gives UUID_ON_ANOTHER_DEVICE, a serial SERIAL_ON_ANOTHER_DEVICE,
// and an identity whose holder is quarantined also GPU_QUARANTINED (quarantine follows the GPU
// identity, not the device record). It returns a translated database error.
func (d *DB) GPUClaims(ctx context.Context, deviceID string, s attest.Snapshot) ([]attest.Finding, []Accomplice, error) {
	uuids, serials := s.IdentityKeys()
	var rows []claimRow
	err := sqlx.SelectContext(ctx, d.x, &rows, `SELECT g.device_id, g.uuid, g.serial, g.uuid = ANY($2::text[]) AS by_uuid,
			h.quarantined_at IS NOT NULL AS quarantined `+gpuClaimsFrom+` ORDER BY g.uuid, g.device_id`,
		deviceID, pq.Array(uuids), pq.Array(serials))
	if err != nil {
		return nil, nil, translate("gpu claims", err)
	}
	f, a := claimFindings(rows)
	return f, a, nil
}

// gpuClaimsFrom selects the GPU claims of other devices ($1) on the UUIDs ($2) and serials ($3)
// of a snapshot (GPUClaims).
const gpuClaimsFrom = `FROM gpus g JOIN devices h ON h.id = g.device_id
		WHERE g.device_id <> $1 AND (g.uuid = ANY($2::text[]) OR (g.serial <> '' AND g.serial = ANY($3::text[])))`

// claimRow is one GPU claim of another device (GPUClaims).
type claimRow struct {
	DeviceID    string `db:"device_id" json:"device_id"`
	UUID        string `db:"uuid" json:"uuid"`
	Serial      string `db:"serial" json:"serial"`
	ByUUID      bool   `db:"by_uuid" json:"by_uuid"`
	Quarantined bool   `db:"quarantined" json:"quarantined"`
}

// claimFindings turns claim rows (ordered by UUID, then device) into findings and accomplices.
func claimFindings(rows []claimRow) ([]attest.Finding, []Accomplice) {
	var findings []attest.Finding
	others := map[string]attest.Reason{}
	for _, r := range rows {
		if r.ByUUID {
			others[r.DeviceID] = attest.ReasonUUIDOnAnotherDevice
		} else if others[r.DeviceID] == "" {
			others[r.DeviceID] = attest.ReasonSerialOnAnotherDevice
		}
		if r.ByUUID {
			findings = append(findings, attest.Finding{Reason: attest.ReasonUUIDOnAnotherDevice, GPU: r.UUID,
				Detail: "this GPU UUID is enrolled on another device"})
		} else {
			findings = append(findings, attest.Finding{Reason: attest.ReasonSerialOnAnotherDevice, GPU: r.UUID,
				Detail: "this GPU serial is enrolled on another device"})
		}
		if r.Quarantined {
			findings = append(findings, attest.Finding{Reason: attest.ReasonGPUQuarantined, GPU: r.UUID,
				Detail: attest.ReasonGPUQuarantined.Description()})
		}
	}
	var acc []Accomplice
	for id, reason := range others {
		acc = append(acc, Accomplice{DeviceID: id, Reason: reason})
	}
	slices.SortFunc(acc, func(a, b Accomplice) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return findings, acc
}

// Claims is what GPUClaims returns, read ahead by OpenChallengeClaims.
type Claims struct {
	Findings    []attest.Finding
	Accomplices []Accomplice
}

// OpenChallengeClaims is OpenChallenge and, when the challenge is open, GPUClaims for the
// snapshot, in one round trip (a proof's two reads before it is judged). claims is nil when
// the challenge is not open. It returns what the two return.
func (d *DB) OpenChallengeClaims(ctx context.Context, deviceID, challengeID string, s attest.Snapshot) (IssuedChallenge, attest.Reason, *Claims, error) {
	return openChallengeClaims(func(dest any, args ...any) error {
		return sqlx.GetContext(ctx, d.x, dest, openChallengeClaimsSQL, args...)
	}, deviceID, challengeID, s)
}

// openChallengeClaims is OpenChallengeClaims running openChallengeClaimsSQL through get.
func openChallengeClaims(get func(dest any, args ...any) error, deviceID, challengeID string, s attest.Snapshot) (IssuedChallenge, attest.Reason, *Claims, error) {
	uuids, serials := s.IdentityKeys()
	var c struct {
		IssuedChallenge
		Consumed bool   `db:"consumed"`
		Expired  bool   `db:"expired"`
		Claims   []byte `db:"claims"`
	}
	err := get(&c, deviceID, pq.Array(uuids), pq.Array(serials), challengeID)
	switch {
	case errors.Is(err, sql.ErrNoRows) || err == nil && c.DeviceID != deviceID:
		return IssuedChallenge{}, attest.ReasonChallengeForeign, nil, nil
	case err != nil:
		return IssuedChallenge{}, "", nil, translate("challenge", err)
	case c.Consumed:
		return IssuedChallenge{}, attest.ReasonChallengeReplayed, nil, nil
	case c.Expired || c.Claims == nil: // (now() is one value per statement: Claims is set when open)
		return IssuedChallenge{}, attest.ReasonChallengeExpired, nil, nil
	}
	var rows []claimRow
	if err := json.Unmarshal(c.Claims, &rows); err != nil {
		return IssuedChallenge{}, "", nil, fmt.Errorf("gpu claims: %w", err)
	}
	f, a := claimFindings(rows)
	return c.IssuedChallenge, "", &Claims{Findings: f, Accomplices: a}, nil
}

// openChallengeClaimsSQL reads a challenge and, when it is open for device $1, the GPU claims
// of other devices on the UUIDs ($2) and serials ($3) as JSON (OpenChallengeClaims).
const openChallengeClaimsSQL = `SELECT ch.id, ch.device_id, ch.nonce, ch.difficulty, ch.created_at, ch.expires_at,
			ch.consumed_at IS NOT NULL AS consumed, ch.expires_at <= now() AS expired,
			CASE WHEN ch.device_id = $1 AND ch.consumed_at IS NULL AND ch.expires_at > now() THEN
				(SELECT coalesce(json_agg(json_build_object('device_id', g.device_id, 'uuid', g.uuid, 'serial', g.serial,
					'by_uuid', g.uuid = ANY($2::text[]), 'quarantined', h.quarantined_at IS NOT NULL)
					ORDER BY g.uuid, g.device_id), '[]') ` + gpuClaimsFrom + `) END AS claims
		FROM challenges ch WHERE ch.id = $4`

// Accomplice is another device implicated by a proof's findings, and why.
type Accomplice struct {
	DeviceID string
	Reason   attest.Reason
}

// ProofRecord is the verdict of one proof.
type ProofRecord struct {
	DeviceID    string
	ChallengeID string
	Findings    []attest.Finding
	// Snapshot is stored as evidence; nil for a submission refused before its challenge
	// checked out (its ProofHash is kept instead).
	Snapshot *attest.Snapshot
	// ProofHash (ProofHash of the submission) identifies a retry of the same proof.
	ProofHash []byte
	// Accomplices are other devices that already hold a GPU identity this proof claims. They
	// keep their claim and their public verification (a newcomer listing public UUIDs must not
	// be able to flag other owners' devices); the conflict is for an admin to review.
	Accomplices []Accomplice
	// Level is the device level the judge computed for a passing proof (SELF_REPORTED when
	// empty; a flagged verdict is always FLAGGED), GPUs how each GPU was judged, Bindings the
	// hardware identities of its attested GPUs. See db/ccevidence.go.
	Level    Level
	GPUs     []GPUJudgement
	Bindings []HardwareBinding
}

// ConsumeAndRecord consumes the proof's challenge (compare-and-swap: open, unexpired, this
// device's) and stores the verdict in the same statement, so a proof is judged once and a
// verdict never exists without its challenge being spent. It returns consumed=false, storing
// nothing, when the challenge was no longer open (a concurrent submission or expiry won).
func (d *DB) ConsumeAndRecord(ctx context.Context, p ProofRecord) (consumed bool, verdict AttestationVerdict, reasons []string, state VerificationState, err error) {
	verdict, state, reasons = verdictOf(p.Findings)
	level := p.levelOf(verdict)
	snap, cc, err := proofJSON(p)
	if err != nil {
		return false, "", nil, "", err
	}
	facts, err := p.gpuFacts()
	if err != nil {
		return false, "", nil, "", err
	}
	var n int
	err = d.lossTolerant(ctx, func(tx *sqlx.Tx) error {
		// The device row first, then its challenge: the order RemoveDevice locks them in. The
		// statement below alone locks the challenge first, and a concurrent removal deadlocked.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM devices WHERE id = $1 FOR NO KEY UPDATE`, p.DeviceID); err != nil {
			return err
		}
		if err := tx.GetContext(ctx, &n, `WITH c AS (
			UPDATE challenges SET consumed_at = now()
			WHERE id = $1 AND device_id = $2 AND consumed_at IS NULL AND expires_at > now()
			  AND EXISTS (SELECT 1 FROM devices WHERE id = $2 AND removed_at IS NULL) RETURNING id),
		a AS (INSERT INTO attestations (device_id, verdict, reasons, challenge_id, snapshot, cc_report, proof_hash, level, gpu_evidence)
			SELECT $2, $3, $4, id, $5, $6, $8, $9, $11 FROM c RETURNING 1),
		u AS (UPDATE devices SET verification = $7, verification_level = $9, attested_gpus = $10, updated_at = now(),
			enrollment_snapshot = COALESCE(enrollment_snapshot, CASE WHEN $7 = 'VERIFIED' THEN $5::jsonb END)
			WHERE id = $2 AND removed_at IS NULL AND EXISTS (SELECT 1 FROM c) RETURNING 1)
		SELECT (SELECT count(*) FROM c) + 0 * (SELECT count(*) FROM a) + 0 * (SELECT count(*) FROM u)`,
			p.ChallengeID, p.DeviceID, verdict, pq.Array(reasons), snap, cc, state, p.ProofHash,
			level, len(p.attestedUUIDs(level)), facts); err != nil || n == 0 {
			return err
		}
		return recordGPULevels(ctx, tx, p, level)
	})
	if err != nil || n == 0 {
		return false, "", nil, "", translate("record proof", err)
	}
	return true, verdict, reasons, state, nil
}

func verdictOf(fs []attest.Finding) (AttestationVerdict, VerificationState, []string) {
	if attest.Flagged(fs) {
		return VerdictFlagged, VerificationFlagged, reasonCodes(fs)
	}
	return VerdictPassed, VerificationVerified, reasonCodes(fs)
}

func proofJSON(p ProofRecord) (snap, cc []byte, err error) {
	if p.Snapshot == nil {
		return nil, nil, nil
	}
	if snap, err = json.Marshal(p.Snapshot); err != nil {
		return nil, nil, fmt.Errorf("record proof: %w", err)
	}
	// cc (the cc_report column) stays NULL: CC evidence left the snapshot for the proof's
	// evidence, whose verified facts are stored instead.
	return snap, nil, nil
}

// RecordProof stores the verdict of a submission refused before its challenge checked out
// (FLAGGED when a finding flags, else PASSED; every finding's reason code is kept, with the
// snapshot only if p.Snapshot is set and the submission's hash) and updates the device's public
// verification state. It returns the verdict, its reason codes and the device's new
// verification state; ErrNotFound for a removed device; or a translated database error.
func (d *DB) RecordProof(ctx context.Context, p ProofRecord) (AttestationVerdict, []string, VerificationState, error) {
	verdict, state, reasons := verdictOf(p.Findings)
	level := p.levelOf(verdict)
	snap, cc, err := proofJSON(p)
	if err != nil {
		return "", nil, "", err
	}
	facts, err := p.gpuFacts()
	if err != nil {
		return "", nil, "", err
	}
	var challenge any
	if p.ChallengeID != "" {
		challenge = p.ChallengeID
	}
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return "", nil, "", translate("record proof", err)
	}
	defer func() { _ = tx.Rollback() }()
	// A removed device records nothing (checked here, whatever a replica's key cache says).
	res, err := tx.ExecContext(ctx, `UPDATE devices SET verification = $2, verification_level = $3, attested_gpus = $4,
		updated_at = now() WHERE id = $1 AND removed_at IS NULL`, p.DeviceID, state, level, len(p.attestedUUIDs(level)))
	if err != nil {
		return "", nil, "", translate("record proof", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", nil, "", NotFoundf("device not found")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO attestations (device_id, verdict, reasons, challenge_id, snapshot, cc_report, proof_hash, level, gpu_evidence)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, p.DeviceID, verdict, pq.Array(reasons), challenge, snap, cc, p.ProofHash,
		level, facts); err != nil {
		return "", nil, "", translate("record proof", err)
	}
	if err := recordGPULevels(ctx, tx, p, level); err != nil {
		return "", nil, "", translate("record proof", err)
	}
	return verdict, reasons, state, translate("record proof", tx.Commit())
}

func reasonCodes(fs []attest.Finding) []string {
	seen := map[attest.Reason]bool{}
	out := []string{}
	for _, f := range fs {
		if !seen[f.Reason] {
			seen[f.Reason] = true
			out = append(out, string(f.Reason))
		}
	}
	return out
}

// Heartbeat records a worker's heartbeat: the device shows UP unless paused or quarantined. It
// returns the device's status, or ErrNotFound for a missing or removed device (checked in the
// statement, whatever a replica's key cache says).
func (d *DB) Heartbeat(ctx context.Context, deviceID string, readings []byte) (DeviceStatus, error) {
	var st DeviceStatus
	err := d.x.GetContext(ctx, &st, `UPDATE devices SET last_seen_at = now(), heartbeat = $2,
		status = CASE WHEN quarantined_at IS NOT NULL THEN 'QUARANTINED' WHEN paused THEN 'PAUSED' ELSE 'UP' END
		WHERE id = $1 AND removed_at IS NULL RETURNING status`, deviceID, readings)
	if errors.Is(err, sql.ErrNoRows) {
		return "", NotFoundf("device not found")
	}
	return st, translate("heartbeat", err)
}

// MarkSilentDevicesDown shows DOWN every UP device with a worker key whose last heartbeat is
// older than window. It
// returns how many changed. Several gateways may run it: an advisory lock lets one at a time work.
func (d *DB) MarkSilentDevicesDown(ctx context.Context, window time.Duration) (int64, error) {
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return 0, translate("mark down", err)
	}
	defer func() { _ = tx.Rollback() }()
	var locked bool
	if err := tx.GetContext(ctx, &locked, `SELECT pg_try_advisory_xact_lock(hashtext('gpugate:mark-down'))`); err != nil {
		return 0, translate("mark down", err)
	}
	if !locked {
		return 0, nil
	}
	// Only devices with a worker key have heartbeats to miss; devices created without one
	// (imported, or the demo data) keep the status they were given.
	res, err := tx.ExecContext(ctx, `UPDATE devices SET status = 'DOWN', updated_at = now()
		WHERE status = 'UP' AND (last_seen_at IS NULL OR last_seen_at < now() - make_interval(secs => $1))
		  AND EXISTS (SELECT 1 FROM device_credentials c WHERE c.device_id = devices.id)`,
		window.Seconds())
	if err != nil {
		return 0, translate("mark down", err)
	}
	n, _ := res.RowsAffected()
	return n, translate("mark down", tx.Commit())
}

// ParsePublicKey decodes a base64 (standard or URL, padded or not) Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, Invalidf("publicKey must be a base64 Ed25519 public key (32 bytes)")
}

// lossTolerant runs fn in a transaction that commits without waiting for the WAL flush. Only for
// writes a crash may lose without leaving anything inconsistent: a proof's verdict together with
// its challenge (lost, the worker simply proves again), heartbeats (the next one comes in
// seconds). Ownership, enrollment and key changes always commit synchronously.
func (d *DB) lossTolerant(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit TO OFF`); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
