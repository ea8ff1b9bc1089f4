package db

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"
)

// AuditRecord is one row of the audit log (docs/operations.md, "Audit log"): a mutation attempt
// or a denial. Empty strings are stored as NULL. It never holds a secret: tokens, signatures and
// keys appear only as identifiers or fingerprints.
type AuditRecord struct {
	ID            int64     `db:"id"` // assigned by the database; 0 before insert
	At            time.Time `db:"at"`
	Principal     string    `db:"principal"` // user:<id>, device:<id>, key:<fingerprint> or anonymous
	Operation     string    `db:"operation"` // the GraphQL field, e.g. updateDevice
	Target        string    `db:"target"`
	Outcome       string    `db:"outcome"` // SUCCEEDED, DENIED, FLAGGED or FAILED
	Reason        string    `db:"reason"`  // a stable code; "" on success
	RequestID     string    `db:"request_id"`
	ClientAddress string    `db:"client_address"` // an IP address, or ""
	UserAgent     string    `db:"user_agent"`
}

// The column limits of audit_events (migration 00007); longer values are cut, never refused:
// a record must not be lost because a client sent a long user agent.
const (
	auditPrincipalMax = 200
	auditOperationMax = 100
	auditTargetMax    = 200
	auditReasonMax    = 500
	auditRequestIDMax = 64
	auditUserAgentMax = 256
)

// clip makes s storable in a text column of at most max characters: valid UTF-8, no NUL (which
// PostgreSQL's text refuses), cut to max characters.
func clip(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return truncate(s, max)
}

// InsertAudit appends records in one statement (arrays unnested server-side, so a batch of any
// size is one round trip and one parameterized statement). It returns the driver's error
// wrapped; the records are then not stored.
func (d *DB) InsertAudit(ctx context.Context, recs []AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	at := make([]string, n)
	cols := [8][]string{}
	for i := range cols {
		cols[i] = make([]string, n)
	}
	for i, r := range recs {
		if r.At.IsZero() {
			r.At = time.Now()
		}
		at[i] = r.At.UTC().Format(time.RFC3339Nano)
		principal := clip(r.Principal, auditPrincipalMax)
		if principal == "" {
			principal = "anonymous"
		}
		cols[0][i] = principal
		cols[1][i] = clip(r.Operation, auditOperationMax)
		cols[2][i] = clip(r.Target, auditTargetMax)
		cols[3][i] = r.Outcome
		cols[4][i] = clip(r.Reason, auditReasonMax)
		cols[5][i] = clip(r.RequestID, auditRequestIDMax)
		if a, err := netip.ParseAddr(r.ClientAddress); err == nil {
			cols[6][i] = a.Unmap().String()
		}
		cols[7][i] = clip(r.UserAgent, auditUserAgentMax)
	}
	_, err := d.x.ExecContext(ctx, `
		INSERT INTO audit_events (at, principal, operation, target, outcome, reason, request_id, client_address, user_agent)
		SELECT t, p, o, nullif(tg, ''), oc, nullif(rs, ''), nullif(rq, ''), nullif(ca, '')::inet, nullif(ua, '')
		FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
			AS x(t, p, o, tg, oc, rs, rq, ca, ua)`,
		pq.Array(at), pq.Array(cols[0]), pq.Array(cols[1]), pq.Array(cols[2]), pq.Array(cols[3]),
		pq.Array(cols[4]), pq.Array(cols[5]), pq.Array(cols[6]), pq.Array(cols[7]))
	return translate("insert audit events", err)
}

// AuditQuery narrows an audit listing; empty fields do not filter. Since is inclusive, Until
// exclusive.
type AuditQuery struct {
	Principal, Target, Operation, Outcome string
	Since, Until                          *time.Time
}

// AuditPage is one page of the audit log, newest first.
type AuditPage struct {
	Records []AuditRecord
	Cursors []string // Cursors[i] is the position after Records[i]
	HasNext bool
}

// auditCursor is the keyset position after one audit row: its time and id. Opaque to clients.
type auditCursor struct {
	V  int    `json:"v"`
	K  string `json:"k"` // "audit": a device cursor is refused here
	At string `json:"t"`
	ID int64  `json:"i"`
}

func encodeAuditCursor(at time.Time, id int64) string {
	b, _ := json.Marshal(auditCursor{V: cursorVersion, K: "audit", At: at.UTC().Format(time.RFC3339Nano), ID: id})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeAuditCursor(s string) (*auditCursor, time.Time, error) {
	bad := Invalidf("after is not a cursor returned by auditEvents")
	if len(s) > maxCursorBytes {
		return nil, time.Time{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, time.Time{}, bad
	}
	var c auditCursor
	if err := json.Unmarshal(raw, &c); err != nil || c.V != cursorVersion || c.K != "audit" || c.ID <= 0 {
		return nil, time.Time{}, bad
	}
	at, err := time.Parse(time.RFC3339Nano, c.At)
	// Only the spelling encodeAuditCursor issues (see decodeCursor).
	if err != nil || !canonicalTime(at, c.At) || encodeAuditCursor(at, c.ID) != s {
		return nil, time.Time{}, bad
	}
	return &c, at, nil
}

// MaxAuditFilterLen bounds each text filter of an audit listing (the longest stored value).
const MaxAuditFilterLen = auditPrincipalMax

// ListAudit returns up to first (1..100) audit records matching f, newest first (time, then
// id), after the cursor after ("" for the first page). It returns an ErrInvalid error for first
// out of range, a filter longer than MaxAuditFilterLen or not valid UTF-8, or a cursor this
// listing did not issue; otherwise the store's error.
func (d *DB) ListAudit(ctx context.Context, first int, after string, f AuditQuery) (AuditPage, error) {
	if first < 1 || first > 100 {
		return AuditPage{}, Invalidf("first must be between 1 and 100")
	}
	for name, v := range map[string]string{"principal": f.Principal, "target": f.Target, "operation": f.Operation} {
		if len(v) > MaxAuditFilterLen || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return AuditPage{}, Invalidf("filter.%s must be at most %d characters of text", name, MaxAuditFilterLen)
		}
	}
	var afterAt *time.Time
	var afterID int64
	if after != "" {
		c, at, err := decodeAuditCursor(after)
		if err != nil {
			return AuditPage{}, err
		}
		afterAt, afterID = &at, c.ID
	}
	// Each condition is void when its parameter is empty or NULL; lib/pq's unnamed statements
	// are planned with their values, so the void ones fold away and the matching index is used.
	var rows []AuditRecord
	err := d.x.SelectContext(ctx, &rows, `
		SELECT id, at, principal, operation, coalesce(target, '') AS target, outcome,
			coalesce(reason, '') AS reason, coalesce(request_id, '') AS request_id,
			coalesce(host(client_address), '') AS client_address, coalesce(user_agent, '') AS user_agent
		FROM audit_events
		WHERE ($1 = '' OR principal = $1) AND ($2 = '' OR target = $2) AND ($3 = '' OR operation = $3)
			AND ($4 = '' OR outcome = $4)
			AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
			AND ($7::timestamptz IS NULL OR (at, id) < ($7, $8))
		ORDER BY at DESC, id DESC
		LIMIT $9`,
		f.Principal, f.Target, f.Operation, f.Outcome, f.Since, f.Until, afterAt, afterID, first+1)
	if err != nil {
		return AuditPage{}, translate("list audit events", err)
	}
	p := AuditPage{HasNext: len(rows) > first}
	if p.HasNext {
		rows = rows[:first]
	}
	p.Records = rows
	p.Cursors = make([]string, len(rows))
	for i, r := range rows {
		p.Cursors[i] = encodeAuditCursor(r.At, r.ID)
	}
	return p, nil
}

// auditPurgeBatch is how many rows one call of gpugate_purge_audit deletes at most, so a first
// purge of a large backlog never holds locks for long.
const auditPurgeBatch = 10000

// PurgeAudit deletes the audit rows older than before through gpugate_purge_audit (the
// gateway's role needs no DELETE on the table; the function never deletes rows younger than a
// day), batch by batch until none are left. It returns how many rows it deleted and the first
// error (rows deleted before it stay deleted).
func (d *DB) PurgeAudit(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		if err := d.x.GetContext(ctx, &n, `SELECT gpugate_purge_audit($1, $2)`, before, auditPurgeBatch); err != nil {
			return total, translate("purge audit events", err)
		}
		total += n
		if n < auditPurgeBatch {
			return total, nil
		}
	}
}
