package db

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
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

// publicColumns are the device columns the public schema shows: what an anonymous read selects
// and scans (scanDevice). deviceColumns adds the owner-only ones (Device.private, the owner
// check), for signed-in reads and the owner writes of owners.go; scanDevice reads them in this
// order.
const (
	publicColumns = `id, name, status, region, verification, verification_level, gpu_model, gpu_count,
	last_seen_at, created_at`
	deviceColumns = publicColumns + `, owner_id, updated_at, hostname, host(ip_address) AS ip_address, labels,
	enrolled_at, paused, quarantined_at, quarantine_reason`
)

// nilOwner is the OwnerID of a device read anonymously (publicColumns), as the explorer views
// give it: a UUID no user has, so no comparison with a user's ID can ever match it.
const nilOwner = "00000000-0000-0000-0000-000000000000"

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
//
// An anonymous read (IsAnonymous) selects the public columns only; the others read as the
// explorer views give them (OwnerID nilOwner, UpdatedAt CreatedAt, owner-only fields empty).
func (d *DB) Device(ctx context.Context, id string) (Device, error) {
	var dev Device
	public := IsAnonymous(ctx)
	q := deviceQuery
	if public {
		q = devicePublicQuery
	}
	_, stmts := d.readPool(ctx)
	rows, err := stmts.query(ctx, q, id)
	if err != nil {
		return dev, translate("get device", err)
	}
	defer rows.Close()
	var sc deviceScanner
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return dev, translate("get device", err)
		}
		return dev, NotFoundf("device not found")
	}
	if err := sc.scan(rows, &dev, public); err != nil {
		return Device{}, translate("get device", err)
	}
	return dev, translate("get device", rows.Close())
}

// The statements of Device, prepared (a generic plan: a primary key lookup whatever the ID).
const (
	deviceQuery       = `SELECT ` + deviceColumns + ` FROM devices WHERE id = $1 AND removed_at IS NULL`
	devicePublicQuery = `SELECT ` + publicColumns + ` FROM devices WHERE id = $1 AND removed_at IS NULL`
)

// deviceScanner scans rows of publicColumns or deviceColumns into Devices by position: no
// reflection, and one destination list for every row of a query.
type deviceScanner struct {
	dest []any
}

// scan scans the current row of rows into dev; public says the row has publicColumns only. It
// returns the driver's error (a NULL in a NOT NULL field, a type mismatch).
func (sc *deviceScanner) scan(rows *sql.Rows, dev *Device, public bool) error {
	n := 19
	if public {
		n = 10
	}
	if sc.dest == nil {
		sc.dest = make([]any, n)
	}
	d := sc.dest[:n]
	// Storing a pointer, or a struct holding one pointer, in an interface allocates nothing.
	d[0], d[1], d[2], d[3] = &dev.ID, &dev.Name, (*string)(&dev.Status), &dev.Region
	d[4], d[5], d[6] = (*string)(&dev.Verification), (*string)(&dev.DeviceLevel), &dev.GPUModel
	d[7], d[8], d[9] = intDest{&dev.GPUCount}, timePtrDest{&dev.LastSeenAt}, &dev.CreatedAt
	if !public {
		d[10], d[11], d[12], d[13] = &dev.OwnerID, &dev.UpdatedAt, &dev.Hostname, strPtrDest{&dev.IPAddress}
		d[14], d[15], d[16] = &dev.LabelList, timePtrDest{&dev.EnrolledAt}, &dev.Paused
		d[17], d[18] = timePtrDest{&dev.QuarantinedAt}, &dev.QuarantineReason
	}
	if err := rows.Scan(d...); err != nil {
		return err
	}
	if public {
		dev.OwnerID, dev.UpdatedAt = nilOwner, dev.CreatedAt
	}
	return nil
}

// scanDevices scans every row of rows (at most max, to size the slice) and closes rows. It
// returns the driver's error.
func scanDevices(rows *sql.Rows, max int, public bool) ([]Device, error) {
	defer rows.Close()
	out := make([]Device, 0, max)
	var sc deviceScanner
	for rows.Next() {
		out = append(out, Device{})
		if err := sc.scan(rows, &out[len(out)-1], public); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, rows.Close()
}

// intDest scans an integer column (lib/pq gives int64) into an int.
type intDest struct{ p *int }

func (d intDest) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("scan %T into an int", src)
	}
	*d.p = int(v)
	return nil
}

// int64Dest scans an integer column into an int64 without database/sql's reflection.
type int64Dest struct{ p *int64 }

func (d int64Dest) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("scan %T into an int64", src)
	}
	*d.p = v
	return nil
}

// timePtrDest scans a nullable timestamp: NULL is nil.
type timePtrDest struct{ p **time.Time }

func (d timePtrDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.p = nil
	case time.Time:
		*d.p = &v
	default:
		return fmt.Errorf("scan %T into a *time.Time", src)
	}
	return nil
}

// strPtrDest scans a nullable text column: NULL is nil.
type strPtrDest struct{ p **string }

func (d strPtrDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.p = nil
	case string:
		*d.p = &v
	case []byte:
		s := string(v)
		*d.p = &s
	default:
		return fmt.Errorf("scan %T into a *string", src)
	}
	return nil
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

// DeviceEdge is one edge of a device connection (the GraphQL DeviceEdge, bound in gqlgen.yml):
// the device at one position of a page, whose cursor is built only when asked for.
type DeviceEdge struct {
	page *Page
	i    int
}

// Cursor returns the cursor after the edge's device.
func (e DeviceEdge) Cursor() string { return e.page.Cursor(e.i) }

// Node returns the edge's device (in the page).
func (e DeviceEdge) Node() *Device { return &e.page.Devices[e.i] }

// Edges returns one edge per device of p, pointing into p.
func (p *Page) Edges() []DeviceEdge {
	edges := make([]DeviceEdge, len(p.Devices))
	for i := range edges {
		edges[i] = DeviceEdge{p, i}
	}
	return edges
}

// ListParams selects a page of devices.
type ListParams struct {
	First  int
	After  string
	Filter DeviceFilter
	Order  DeviceOrder
	owner  string // set by ListOwnedDevices only
}

// The listing statements. Two kinds, both fixed when the package initializes, so no request
// changes the SQL text (parameters only):
//
//   - preparedLists: one statement per (order, single filter, cursor or not, column set) whose
//     filter and order one composite index serves (devices_status_created, devices_status_name,
//     devices_model_created, devices_region_created, devices_verif_created,
//     devices_level_created, and the unfiltered keyset indexes). Its plan is the same index
//     range scan whatever the values, so these run prepared: whether PostgreSQL keeps custom
//     plans or switches to the generic one after five executions (plan_cache_mode=auto), the
//     plan stays that scan. TestListPlansStayIndexScans checks every one after ten executions.
//   - listQueries: one statement per order for everything else (two or more filters, a filter
//     with an order no index pairs it with, an owner's list), folding absent filters with
//     "($n IS NULL OR ...)". A generic plan cannot fold those, so these run unprepared: lib/pq
//     sends them as unnamed statements, which PostgreSQL plans with the actual parameters (a
//     custom plan each time).
//
// Parameters of listQueries: $1..$4 and $9 are the optional filters ($9 the level's rank), $5/$6
// the optional keyset position (for the level order $5 is a levelKey, "rank/created_at",
// checked by decodeCursor), $7 the limit, $8 the optional owner (an owner's own list). A NULL
// parameter disables its condition.
var (
	listQueries       = map[DeviceOrder]string{} // deviceColumns
	listPublicQueries = map[DeviceOrder]string{} // publicColumns
)

// listFilter is the one filter of a prepared listing statement.
type listFilter int

const (
	noFilter listFilter = iota
	byStatus
	byModel
	byRegion
	byVerification
	byLevel
)

type listKey struct {
	order  DeviceOrder
	filter listFilter
	after  bool // a keyset position: parameters after the filter's, key then ID
	public bool // publicColumns (anonymous) rather than deviceColumns
}

// preparedLists maps a listKey to its statement: $1 the filter's value (when filtered), then the
// cursor's key and ID (when after), then the limit.
var preparedLists = map[listKey]string{}

// listShape is what the listing statements of one order are made of: the keyset condition with
// KEY and ID standing for its parameters, the ORDER BY, and the filters one index pairs with it.
type listShape struct {
	keyset, orderBy string
	keyType         string // the type of the cursor's key parameter
	filters         []listFilter
}

var listShapes = map[DeviceOrderField]listShape{
	OrderCreatedAt: {`(created_at, id) OP (KEY::timestamptz, ID::uuid)`, `created_at DIR, id DIR`, "timestamptz",
		[]listFilter{noFilter, byStatus, byModel, byRegion, byVerification, byLevel}},
	OrderName: {`(name, id) OP (KEY::text, ID::uuid)`, `name DIR, id DIR`, "text", []listFilter{noFilter, byStatus}},
	// Strength, ties by creation time then ID in the same direction: one scan of
	// devices_level_created (forward or backward), also under a level filter.
	OrderVerificationLevel: {`(verification_rank, created_at, id) OP
			(split_part(KEY::text, '/', 1)::smallint, split_part(KEY::text, '/', 2)::timestamptz, ID::uuid)`,
		`verification_rank DIR, created_at DIR, id DIR`, "text", []listFilter{noFilter, byLevel}},
}

// filterSQL is each filter's condition, FILTER standing for its parameter.
var filterSQL = map[listFilter]string{
	byStatus:       `status = FILTER::text`,
	byModel:        `gpu_model = FILTER::text`,
	byRegion:       `region = FILTER::text`,
	byVerification: `verification = FILTER::text`,
	byLevel:        `verification_rank = FILTER::smallint`,
}

// The tables are built from the constants above once, at initialization.
func init() {
	for field, sh := range listShapes {
		for _, dir := range []OrderDirection{Desc, Asc} {
			op, word := "<", "DESC"
			if dir == Asc {
				op, word = ">", "ASC"
			}
			o := DeviceOrder{Field: field, Direction: dir}
			keyset := strings.ReplaceAll(sh.keyset, "OP", op)
			orderBy := strings.ReplaceAll(sh.orderBy, "DIR", word)
			var fallback [2]string
			for i, cols := range []string{deviceColumns, publicColumns} {
				fallback[i] = listSelect(i == 1) + ` AND ($5::` + sh.keyType + ` IS NULL OR ` +
					strings.NewReplacer("KEY", "$5", "ID", "$6").Replace(keyset) + `)
		ORDER BY ` + orderBy + ` LIMIT $7`
				for _, f := range sh.filters {
					for _, after := range []bool{false, true} {
						var where []string
						n := 0
						next := func() string { n++; return "$" + strconv.Itoa(n) }
						if f != noFilter {
							where = append(where, strings.ReplaceAll(filterSQL[f], "FILTER", next()))
						}
						if after {
							k, id := next(), next()
							where = append(where, strings.NewReplacer("KEY", k, "ID", id).Replace(keyset))
						}
						q := `SELECT ` + cols + ` FROM devices WHERE removed_at IS NULL`
						for _, w := range where {
							q += ` AND ` + w
						}
						q += ` ORDER BY ` + orderBy + ` LIMIT ` + next()
						preparedLists[listKey{o, f, after, i == 1}] = q
					}
				}
			}
			listQueries[o], listPublicQueries[o] = fallback[0], fallback[1]
		}
	}
}

// listSelect is the head of a listQueries statement. Removed devices are in no list (see
// RemoveDevice). The public one reads no owner-only column ($8 is ignored: an owner's list is a
// signed-in read).
func listSelect(public bool) string {
	if public {
		return `SELECT ` + publicColumns + listWhere + ` AND ($8::uuid IS NULL OR true)`
	}
	return `SELECT ` + deviceColumns + listWhere + ` AND ($8::uuid IS NULL OR owner_id = $8)`
}

const listWhere = ` FROM devices
	WHERE removed_at IS NULL
	  AND ($1::text IS NULL OR status = $1)
	  AND ($2::text IS NULL OR gpu_model = $2)
	  AND ($3::text IS NULL OR region = $3)
	  AND ($4::text IS NULL OR verification = $4)
	  AND ($9::smallint IS NULL OR verification_rank = $9)`

// ListDevices returns a page of devices in p.Order (DefaultOrder when zero). It returns
// ErrInvalid for a page size outside 1..MaxPageSize, an oversized filter or a foreign cursor.
// An anonymous read selects the public columns only (see Device).
func (d *DB) ListDevices(ctx context.Context, p ListParams) (Page, error) {
	if err := checkFirst(p.First); err != nil {
		return Page{}, err
	}
	if p.Order == (DeviceOrder{}) {
		p.Order = DefaultOrder
	}
	if _, ok := listShapes[p.Order.Field]; !ok || (p.Order.Direction != Asc && p.Order.Direction != Desc) {
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
	public := IsAnonymous(ctx) && p.owner == "" // an owner's list is never public
	x, stmts := d.readPool(ctx)
	var rows *sql.Rows
	if key, value, ok := singleFilter(p); ok {
		// At most 4 parameters: one slice, and small integers box without allocating.
		args := make([]any, 0, 4)
		if key != noFilter {
			args = append(args, value)
		}
		if c != nil {
			args = append(args, c.Key, c.ID)
		}
		args = append(args, p.First+1)
		rows, err = stmts.query(ctx, preparedLists[listKey{p.Order, key, c != nil, public}], args...)
	} else {
		var key, id, ownerArg any
		if c != nil {
			key, id = c.Key, c.ID
		}
		if p.owner != "" {
			ownerArg = p.owner
		}
		q := listQueries[p.Order]
		if public {
			q = listPublicQueries[p.Order]
		}
		rows, err = x.QueryContext(ctx, q,
			nullable(f.Status), nullable(f.GPUModel), nullable(f.Region), nullable(f.Verification),
			key, id, p.First+1, ownerArg, levelRank)
	}
	if err != nil {
		return Page{}, translate("list devices", err)
	}
	devs, err := scanDevices(rows, p.First+1, public)
	if err != nil {
		return Page{}, translate("list devices", err)
	}
	return makePage(devs, p.First, p.Order.String(), func(dev *Device) string {
		switch kind {
		case keyTime:
			return dev.CreatedAt.UTC().Format(time.RFC3339Nano)
		case keyLevel:
			return levelKey(dev.DeviceLevel.Rank(), dev.CreatedAt)
		}
		return dev.Name
	}), nil
}

// singleFilter returns the one filter of p and its value when p has a prepared statement
// (preparedLists): no owner, at most one filter, and one its order's index serves.
func singleFilter(p ListParams) (listFilter, any, bool) {
	if p.owner != "" {
		return 0, nil, false
	}
	f := p.Filter
	key, value, n := noFilter, any(nil), 0
	if f.Status != nil {
		key, value, n = byStatus, string(*f.Status), n+1
	}
	if f.GPUModel != nil {
		key, value, n = byModel, *f.GPUModel, n+1
	}
	if f.Region != nil {
		key, value, n = byRegion, *f.Region, n+1
	}
	if f.Verification != nil {
		key, value, n = byVerification, string(*f.Verification), n+1
	}
	if f.Level != nil {
		key, value, n = byLevel, f.Level.Rank(), n+1
	}
	if n > 1 {
		return 0, nil, false
	}
	for _, k := range listShapes[p.Order.Field].filters {
		if k == key {
			return key, value, true
		}
	}
	return 0, nil, false
}

// The search statements (all columns, public columns) run unprepared: their optional
// conditions fold only in a custom plan (see listQueries).
const (
	searchQuery       = `SELECT ` + deviceColumns + searchFrom
	searchPublicQuery = `SELECT ` + publicColumns + searchFrom
	searchFrom        = ` FROM devices
	WHERE removed_at IS NULL
	  AND (($1::text IS NOT NULL AND lower(name) LIKE $1)
	    OR ($2::uuid IS NOT NULL AND id BETWEEN $2::uuid AND $3::uuid))
	  AND ($4::text IS NULL OR (name, id) > ($4::text, $5::uuid))
	ORDER BY name, id LIMIT $6`
)

// SearchDevices finds devices whose ID starts with query (at least MinSearchIDPrefix hex digits,
// hyphens optional) or whose name contains it (case-insensitive, at least MinSearchNameLen
// characters), ordered by name. It returns ErrInvalid for a query that can be neither. An
// anonymous read selects the public columns only (see Device).
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
	public := IsAnonymous(ctx)
	q := searchQuery
	if public {
		q = searchPublicQuery
	}
	x, _ := d.readPool(ctx)
	rows, err := x.QueryContext(ctx, q, namePattern, idLow, idHigh, key, id, first+1)
	if err != nil {
		return Page{}, translate("search devices", err)
	}
	devs, err := scanDevices(rows, first+1, public)
	if err != nil {
		return Page{}, translate("search devices", err)
	}
	return makePage(devs, first, searchOrder, func(dev *Device) string { return dev.Name }), nil
}

// gpusQuery reads the GPUs of a set of devices through the gpus primary key (device_id, idx),
// prepared (its plan does not depend on the IDs). It has no ORDER BY: PostgreSQL reads the rows
// with a bitmap scan of the key and would sort them (about 40% of the statement's execution for
// a page of 100 devices); they come grouped by device and in index order anyway as the gpus
// rows of a device are written together, and GPUsByDevice sorts them when they do not.
const gpusQuery = `SELECT device_id, idx, uuid, model, pci_device_id, memory_mib, architecture,
	compute_capability, verification_level FROM gpus WHERE device_id = ANY($1::uuid[])`

// GPUsByDevice returns the GPUs of each device in ids, ordered by index; every ID gets an entry.
func (d *DB) GPUsByDevice(ctx context.Context, ids []string) (map[string][]GPU, error) {
	_, stmts := d.readPool(ctx)
	rows, err := stmts.query(ctx, gpusQuery, pq.StringArray(ids))
	if err != nil {
		return nil, translate("list gpus", err)
	}
	defer rows.Close()
	// One backing array for every device's GPUs, each device's slice capped so an append by a
	// caller cannot run into the next device's.
	all := make([]GPU, 0, 8*len(ids))
	var g GPU
	var devID sql.RawBytes
	dest := []any{&devID, intDest{&g.Index}, &g.UUID, &g.Model, intDest{&g.PCIID}, int64Dest{&g.MemoryMiB},
		&g.Architecture, &g.ComputeCapability, (*string)(&g.GPULevel)}
	grouped := true // every device's rows together, in index order
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, translate("list gpus", err)
		}
		if n := len(all); n > 0 && string(devID) == all[n-1].DeviceID {
			g.DeviceID = all[n-1].DeviceID // one string per device, shared by its GPUs
			grouped = grouped && g.Index > all[n-1].Index
		} else {
			g.DeviceID = string(devID)
		}
		all = append(all, g)
	}
	if err := rows.Err(); err != nil {
		return nil, translate("list gpus", err)
	}
	out := make(map[string][]GPU, len(ids))
	if grouped {
		// A device seen in two runs is not grouped either: detected below, then sorted.
		for start := 0; start < len(all); {
			end := start + 1
			for end < len(all) && all[end].DeviceID == all[start].DeviceID {
				end++
			}
			if _, seen := out[all[start].DeviceID]; seen {
				grouped = false
				break
			}
			out[all[start].DeviceID] = all[start:end:end]
			start = end
		}
	}
	if !grouped {
		slices.SortFunc(all, func(a, b GPU) int {
			if c := strings.Compare(a.DeviceID, b.DeviceID); c != 0 {
				return c
			}
			return a.Index - b.Index
		})
		clear(out)
		for start := 0; start < len(all); {
			end := start + 1
			for end < len(all) && all[end].DeviceID == all[start].DeviceID {
				end++
			}
			out[all[start].DeviceID] = all[start:end:end]
			start = end
		}
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			out[id] = []GPU{}
		}
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
