package db

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Input limits shared by every caller of the listing queries.
const (
	MaxPageSize       = 100
	MaxSearchLen      = 100
	MinSearchNameLen  = 3
	MinSearchIDPrefix = 4
	maxModelLen       = 128
	maxRegionLen      = 64
)

const deviceColumns = `id, owner_id, name, status, region, verification, verification_level, gpu_model, gpu_count,
	last_seen_at, created_at, updated_at, hostname, host(ip_address) AS ip_address, labels, enrolled_at,
	paused, quarantined_at, quarantine_reason`

// ParseDeviceID returns the canonical form of a device ID, or ErrInvalid when s is not a UUID.
func ParseDeviceID(s string) (string, error) {
	if len(s) > 64 {
		return "", Invalidf("id is not a valid device ID (a UUID)")
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", Invalidf("id is not a valid device ID (a UUID)")
	}
	return u.String(), nil
}

// Device returns one device by canonical ID, or ErrNotFound (also for a removed device: removal
// hides a device from every public and owner view).
func (d *DB) Device(ctx context.Context, id string) (Device, error) {
	var dev Device
	err := sqlx.GetContext(ctx, d.reader(ctx), &dev, `SELECT `+deviceColumns+` FROM devices WHERE id = $1 AND removed_at IS NULL`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return dev, NotFoundf("device not found")
	}
	return dev, translate("get device", err)
}

// Page is one page of a keyset listing. Cursor(i) is the cursor after Devices[i]; cursors are
// built when asked for (a client usually asks for the last one at most).
type Page struct {
	Devices []Device
	HasNext bool
	order   string
	key     func(*Device) string
}

// Cursor returns the cursor after Devices[i].
func (p *Page) Cursor(i int) string {
	dev := &p.Devices[i]
	return encodeCursor(p.order, p.key(dev), dev.ID)
}

// EndCursor returns the cursor after the last device, nil on an empty page.
func (p *Page) EndCursor() *string {
	if len(p.Devices) == 0 {
		return nil
	}
	c := p.Cursor(len(p.Devices) - 1)
	return &c
}

// ListParams selects a page of devices.
type ListParams struct {
	First  int
	After  string
	Filter DeviceFilter
	Order  DeviceOrder
	owner  string // set by ListOwnedDevices only
}

// listQueries holds one fixed statement per allow-listed order: $1..$4 and $9 are the optional
// filters ($9 the level's rank), $5/$6 the optional keyset position (for the level order $5 is
// a levelKey, "rank/created_at", checked by decodeCursor), $7 the limit, $8 the optional owner (an owner's own list). A NULL parameter disables its condition;
// PostgreSQL plans unnamed statements with their actual parameters, so the folded query is a
// plain index range scan.
var listQueries = map[DeviceOrder]string{
	{OrderCreatedAt, Desc}: listSelect + ` AND ($5::timestamptz IS NULL OR (created_at, id) < ($5::timestamptz, $6::uuid))
		ORDER BY created_at DESC, id DESC LIMIT $7`,
	{OrderCreatedAt, Asc}: listSelect + ` AND ($5::timestamptz IS NULL OR (created_at, id) > ($5::timestamptz, $6::uuid))
		ORDER BY created_at ASC, id ASC LIMIT $7`,
	{OrderName, Desc}: listSelect + ` AND ($5::text IS NULL OR (name, id) < ($5::text, $6::uuid))
		ORDER BY name DESC, id DESC LIMIT $7`,
	{OrderName, Asc}: listSelect + ` AND ($5::text IS NULL OR (name, id) > ($5::text, $6::uuid))
		ORDER BY name ASC, id ASC LIMIT $7`,
	// Strength, ties by creation time then ID in the same direction: one scan of
	// devices_level_created (forward or backward), also under a level filter.
	{OrderVerificationLevel, Desc}: listSelect + ` AND ($5::text IS NULL OR (verification_rank, created_at, id) <
			(split_part($5::text, '/', 1)::smallint, split_part($5::text, '/', 2)::timestamptz, $6::uuid))
		ORDER BY verification_rank DESC, created_at DESC, id DESC LIMIT $7`,
	{OrderVerificationLevel, Asc}: listSelect + ` AND ($5::text IS NULL OR (verification_rank, created_at, id) >
			(split_part($5::text, '/', 1)::smallint, split_part($5::text, '/', 2)::timestamptz, $6::uuid))
		ORDER BY verification_rank ASC, created_at ASC, id ASC LIMIT $7`,
}

// Removed devices are in no list (see RemoveDevice).
const listSelect = `SELECT ` + deviceColumns + ` FROM devices
	WHERE removed_at IS NULL
	  AND ($1::text IS NULL OR status = $1)
	  AND ($2::text IS NULL OR gpu_model = $2)
	  AND ($3::text IS NULL OR region = $3)
	  AND ($4::text IS NULL OR verification = $4)
	  AND ($8::uuid IS NULL OR owner_id = $8)
	  AND ($9::smallint IS NULL OR verification_rank = $9)`

// ListDevices returns a page of devices in p.Order (DefaultOrder when zero). It returns
// ErrInvalid for a page size outside 1..MaxPageSize, an oversized filter or a foreign cursor.
func (d *DB) ListDevices(ctx context.Context, p ListParams) (Page, error) {
	if err := checkFirst(p.First); err != nil {
		return Page{}, err
	}
	if p.Order == (DeviceOrder{}) {
		p.Order = DefaultOrder
	}
	q, ok := listQueries[p.Order]
	if !ok {
		return Page{}, Invalidf("orderBy %s is not supported", p.Order)
	}
	f := p.Filter
	if err := checkLen("filter.gpuModel", f.GPUModel, maxModelLen); err != nil {
		return Page{}, err
	}
	if err := checkLen("filter.region", f.Region, maxRegionLen); err != nil {
		return Page{}, err
	}
	kind := keyText
	switch p.Order.Field {
	case OrderCreatedAt:
		kind = keyTime
	case OrderVerificationLevel:
		kind = keyLevel
	}
	var levelRank any
	if f.Level != nil {
		r := f.Level.Rank()
		if r < 0 {
			return Page{}, Invalidf("filter.verificationLevel %q is not a level", *f.Level)
		}
		levelRank = r
	}
	c, err := decodeCursor(p.After, p.Order.String(), kind)
	if err != nil {
		return Page{}, err
	}
	var key, id any
	if c != nil {
		key, id = c.Key, c.ID
	}
	var ownerArg any
	if p.owner != "" {
		ownerArg = p.owner
	}
	var rows []Device
	err = sqlx.SelectContext(ctx, d.reader(ctx), &rows, q,
		nullable(f.Status), nullable(f.GPUModel), nullable(f.Region), nullable(f.Verification),
		key, id, p.First+1, ownerArg, levelRank)
	if err != nil {
		return Page{}, translate("list devices", err)
	}
	return makePage(rows, p.First, p.Order.String(), func(dev *Device) string {
		switch kind {
		case keyTime:
			return dev.CreatedAt.UTC().Format(time.RFC3339Nano)
		case keyLevel:
			return levelKey(dev.DeviceLevel.Rank(), dev.CreatedAt)
		}
		return dev.Name
	}), nil
}

const searchQuery = `SELECT ` + deviceColumns + ` FROM devices
	WHERE removed_at IS NULL
	  AND (($1::text IS NOT NULL AND lower(name) LIKE $1)
	    OR ($2::uuid IS NOT NULL AND id BETWEEN $2::uuid AND $3::uuid))
	  AND ($4::text IS NULL OR (name, id) > ($4::text, $5::uuid))
	ORDER BY name, id LIMIT $6`

// SearchDevices finds devices whose ID starts with query (at least MinSearchIDPrefix hex digits,
// hyphens optional) or whose name contains it (case-insensitive, at least MinSearchNameLen
// characters), ordered by name. It returns ErrInvalid for a query that can be neither.
func (d *DB) SearchDevices(ctx context.Context, query string, first int, after string) (Page, error) {
	if err := checkFirst(first); err != nil {
		return Page{}, err
	}
	query = strings.TrimSpace(query)
	if !utf8.ValidString(query) || utf8.RuneCountInString(query) > MaxSearchLen {
		return Page{}, Invalidf("query must be valid text of at most %d characters", MaxSearchLen)
	}
	var namePattern, idLow, idHigh any
	if lo, hi, ok := idPrefixRange(query); ok {
		idLow, idHigh = lo, hi
	}
	if utf8.RuneCountInString(query) >= MinSearchNameLen {
		namePattern = "%" + escapeLike(strings.ToLower(query)) + "%"
	}
	if namePattern == nil && idLow == nil {
		return Page{}, Invalidf("query must have at least %d characters, or %d hexadecimal digits of a device ID",
			MinSearchNameLen, MinSearchIDPrefix)
	}
	c, err := decodeCursor(after, searchOrder, keyText)
	if err != nil {
		return Page{}, err
	}
	var key, id any
	if c != nil {
		key, id = c.Key, c.ID
	}
	var rows []Device
	if err := sqlx.SelectContext(ctx, d.reader(ctx), &rows, searchQuery, namePattern, idLow, idHigh, key, id, first+1); err != nil {
		return Page{}, translate("search devices", err)
	}
	return makePage(rows, first, searchOrder, func(dev *Device) string { return dev.Name }), nil
}

// GPUsByDevice returns the GPUs of each device in ids, ordered by index; every ID gets an entry.
func (d *DB) GPUsByDevice(ctx context.Context, ids []string) (map[string][]GPU, error) {
	var rows []GPU
	err := sqlx.SelectContext(ctx, d.reader(ctx), &rows, `SELECT device_id, idx, uuid, model, pci_device_id,
		memory_mib, architecture, compute_capability, verification_level FROM gpus WHERE device_id = ANY($1::uuid[])
		ORDER BY device_id, idx`, pq.Array(ids))
	if err != nil {
		return nil, translate("list gpus", err)
	}
	out := make(map[string][]GPU, len(ids))
	for _, id := range ids {
		out[id] = []GPU{}
	}
	for _, g := range rows {
		out[g.DeviceID] = append(out[g.DeviceID], g)
	}
	return out, nil
}

func makePage(rows []Device, first int, order string, key func(*Device) string) Page {
	p := Page{HasNext: len(rows) > first, order: order, key: key}
	if p.HasNext {
		rows = rows[:first]
	}
	p.Devices = rows
	return p
}

func checkFirst(first int) error {
	if first < 1 || first > MaxPageSize {
		return Invalidf("first must be between 1 and %d, got %d", MaxPageSize, first)
	}
	return nil
}

func checkLen(name string, s *string, max int) error {
	if s != nil && (utf8.RuneCountInString(*s) > max || !utf8.ValidString(*s)) {
		return Invalidf("%s must be valid text of at most %d characters", name, max)
	}
	return nil
}

// nullable turns an optional filter into a driver value: nil stays SQL NULL.
func nullable[T ~string](v *T) any {
	if v == nil {
		return nil
	}
	return string(*v)
}

// idPrefixRange turns a device ID prefix (hex digits, hyphens anywhere) into the inclusive UUID
// range it covers.
func idPrefixRange(q string) (lo, hi string, ok bool) {
	hex := strings.ToLower(strings.ReplaceAll(q, "-", ""))
	if len(hex) < MinSearchIDPrefix || len(hex) > 32 {
		return "", "", false
	}
	for _, r := range hex {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return "", "", false
		}
	}
	pad := 32 - len(hex)
	return hex + strings.Repeat("0", pad), hex + strings.Repeat("f", pad), true
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

func escapeLike(s string) string { return likeEscaper.Replace(s) }
