// Package userimport links legacy accounts to OIDC identities after the move to an identity
// provider: it is `gpugate users import` (see docs/user-import.md).
//
// Legacy accounts come from a CSV file or a table of the same database; identities come from the
// IdP's export (linked by verified email) and/or an explicit mapping (legacy_id -> subject), for
// one issuer. Each legacy account becomes a users row carrying its legacy_id (created once, never
// duplicated) and, when exactly one identity can be its own, a user_identities row. The import
// never merges two accounts and never re-points an existing link: such cases are conflicts,
// listed for review. Running it again changes nothing; interrupted, it resumes where it stopped.
package userimport

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// DefaultChunkSize is how many legacy accounts one transaction links (see Options.ChunkSize).
const DefaultChunkSize = 50_000

// MaxConflictDetails is how many conflicts Summary.ConflictDetails describes.
const MaxConflictDetails = 20

// advisoryLockKey serializes imports: a second concurrent run fails fast instead of racing.
const advisoryLockKey int64 = 0x67707567_75696d70 // "gpugUimp"

// Options are the inputs of one import. Exactly one of LegacyCSV and LegacyTable may be set
// (either may be omitted when MappingCSV names legacy accounts imported earlier); at least one
// of IdentitiesCSV and MappingCSV is required.
type Options struct {
	// Issuer is the identity provider's issuer URL, exactly as it appears in the tokens' iss
	// claim (Auth0's ends with a slash). Every link made is for this issuer.
	Issuer string

	// LegacyCSV holds legacy accounts: a header row naming legacy_id, email and optionally
	// display_name (any order, case-insensitive; other columns are ignored), then one row per
	// account.
	LegacyCSV io.Reader
	// LegacyTable names a table (or view) of this database, "table" or "schema.table" in lower
	// case, with columns legacy_id, email and optionally display_name (any types: read as text).
	LegacyTable string

	// IdentitiesCSV is the IdP's user export: header subject,email,email_verified. Legacy
	// accounts are linked to the identity with the same email (trimmed, case-insensitive), if
	// verified.
	IdentitiesCSV io.Reader
	// MappingCSV links explicitly: header legacy_id,subject. A mapped legacy account is never
	// linked by email; a mapped subject is linked to its legacy account whatever its email.
	MappingCSV io.Reader

	// Progress, when set, is called with the number of legacy accounts processed (committed)
	// and their total: once with done == 0 when the inputs are loaded, then after each chunk.
	// See NewProgressBar.
	Progress func(done, total int)

	// ChunkSize is how many legacy accounts (in legacy_id order) each transaction creates and
	// links: an interruption loses at most one chunk's work. Default DefaultChunkSize.
	ChunkSize int
}

// Summary counts what an import did. Linked + AlreadyLinked + Unmatched + Conflicts equals
// Legacy plus the mapping rows naming an unknown legacy_id (counted as conflicts).
type Summary struct {
	Legacy     int // legacy accounts considered (input rows, plus existing users the mapping names)
	Identities int // rows of the identities CSV
	Mappings   int // rows of the mapping CSV

	UsersCreated int // users rows created for legacy accounts seen for the first time

	Linked        int // legacy accounts linked by this run
	AlreadyLinked int // legacy accounts whose link (or a link to this issuer) already existed
	Unmatched     int // legacy accounts with no identity to link: none with their verified email
	Conflicts     int // legacy accounts (or mapping rows) left unlinked rather than merged or re-pointed

	// ConflictDetails describes the first MaxConflictDetails conflicts, one line each.
	ConflictDetails []string

	UnverifiedIdentities int // identities not linked by email because email_verified is false
	UnmatchedIdentities  int // verified identities whose email no legacy account has

	Elapsed time.Duration
}

// String renders the summary for a terminal or a log, one fact per line.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "legacy accounts: %d (users created: %d)\n", s.Legacy, s.UsersCreated)
	fmt.Fprintf(&b, "  linked:         %d\n", s.Linked)
	fmt.Fprintf(&b, "  already linked: %d\n", s.AlreadyLinked)
	fmt.Fprintf(&b, "  unmatched:      %d\n", s.Unmatched)
	fmt.Fprintf(&b, "  conflicts:      %d\n", s.Conflicts)
	if s.Identities > 0 {
		fmt.Fprintf(&b, "identities: %d (unverified email: %d, email of no legacy account: %d)\n",
			s.Identities, s.UnverifiedIdentities, s.UnmatchedIdentities)
	}
	if s.Mappings > 0 {
		fmt.Fprintf(&b, "mapping rows: %d\n", s.Mappings)
	}
	if len(s.ConflictDetails) > 0 {
		if s.Conflicts > len(s.ConflictDetails) {
			fmt.Fprintf(&b, "conflicts (first %d of %d):\n", len(s.ConflictDetails), s.Conflicts)
		} else {
			b.WriteString("conflicts:\n")
		}
		for _, d := range s.ConflictDetails {
			b.WriteString("  ")
			b.WriteString(d)
			b.WriteByte('\n')
		}
	}
	fmt.Fprintf(&b, "elapsed: %s\n", s.Elapsed.Round(time.Millisecond))
	return b.String()
}

func (s *Summary) addConflicts(n int, details []string) {
	s.Conflicts += n
	for _, d := range details {
		if len(s.ConflictDetails) >= MaxConflictDetails {
			return
		}
		s.ConflictDetails = append(s.ConflictDetails, d)
	}
}

// tableNameRE is what LegacyTable may be: a lower-case identifier, optionally schema-qualified.
var tableNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$`)

func (o *Options) validate() error {
	if o.Issuer == "" {
		return errors.New("userimport: the issuer is required")
	}
	if n := len([]rune(o.Issuer)); n > maxIssuer {
		return fmt.Errorf("userimport: the issuer is %d characters long (at most %d)", n, maxIssuer)
	}
	if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("userimport: the issuer %q is not an http(s) URL", o.Issuer)
	}
	if o.LegacyCSV != nil && o.LegacyTable != "" {
		return errors.New("userimport: give the legacy accounts as a CSV or as a table, not both")
	}
	if o.LegacyCSV == nil && o.LegacyTable == "" && o.MappingCSV == nil {
		return errors.New("userimport: the legacy accounts (a CSV or a table) are required, unless a mapping names accounts imported earlier")
	}
	if o.IdentitiesCSV == nil && o.MappingCSV == nil {
		return errors.New("userimport: an identities CSV (to link by verified email) or a mapping CSV is required")
	}
	if o.LegacyTable != "" {
		if len(o.LegacyTable) > 127 || !tableNameRE.MatchString(o.LegacyTable) {
			return fmt.Errorf("userimport: legacy table %q: expected table or schema.table, lower case letters, digits and _", o.LegacyTable)
		}
		if strings.Contains(o.LegacyTable, "gpugate_import_") {
			return fmt.Errorf("userimport: legacy table %q: the gpugate_import_ prefix is reserved for the import's staging tables", o.LegacyTable)
		}
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	return nil
}

// Run imports legacy accounts and links them to identities of o.Issuer. It validates every
// input before writing anything: malformed input returns an *InputError and changes nothing.
// It then commits chunk by chunk (o.ChunkSize legacy accounts, in legacy_id order), each chunk
// creating its users and their links atomically; when ctx is cancelled or the database fails,
// Run returns the error with the Summary of the chunks committed so far, and a rerun with the
// same inputs finishes the job (what was done is then AlreadyLinked).
//
// Run uses one connection of x for its whole duration, and closes it at the end (its
// temporary tables go with it). Only one import runs at a time per database.
func Run(ctx context.Context, x *sqlx.DB, o Options) (sum Summary, err error) {
	start := time.Now()
	defer func() { sum.Elapsed = time.Since(start) }()
	if err := o.validate(); err != nil {
		return sum, err
	}
	conn, err := x.Conn(ctx)
	if err != nil {
		return sum, fmt.Errorf("userimport: %w", err)
	}
	defer func() {
		// Release the lock now (the server ends a closed session asynchronously), then discard
		// the session rather than return it to the pool: its temporary tables (up to hundreds
		// of MB) and its settings end with it.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, _ = conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, advisoryLockKey)
		cancel()
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}()
	r := &run{conn: conn, o: o}
	if err := r.prepare(ctx); err != nil {
		return sum, err
	}
	if err := r.stage(ctx); err != nil {
		return r.sum, err
	}
	if err := r.apply(ctx); err != nil {
		return r.sum, err
	}
	return r.sum, nil
}

type run struct {
	conn *sql.Conn
	o    Options
	sum  Summary
	last time.Time // for traceHook
}

// traceHook, when set (by the benchmark), receives the duration of each phase.
var traceHook func(phase string, d time.Duration)

func (r *run) mark(phase string) {
	if traceHook == nil {
		return
	}
	now := time.Now()
	if !r.last.IsZero() {
		traceHook(phase, now.Sub(r.last))
	}
	r.last = now
}

func (r *run) exec(ctx context.Context, what, q string, args ...any) error {
	if _, err := r.conn.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("userimport: %s: %w", what, err)
	}
	return nil
}

// prepare takes the import lock and tunes the session (which Run discards at the end).
func (r *run) prepare(ctx context.Context) error {
	var locked bool
	if err := r.conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryLockKey).Scan(&locked); err != nil {
		return fmt.Errorf("userimport: lock: %w", err)
	}
	if !locked {
		return errors.New("userimport: another import is running on this database")
	}
	// temp_buffers can only change before the session's first use of a temporary table; a
	// pooled session that already used one keeps its value (slower, not wrong).
	_, _ = r.conn.ExecContext(ctx, `SET temp_buffers = '256MB'`)
	// JIT compilation costs more than it saves on these one-shot statements.
	return r.exec(ctx, "settings", `SET work_mem = '128MB'; SET jit = off`)
}

// stage loads and validates every input into the session's temporary tables, then plans.
func (r *run) stage(ctx context.Context) error {
	r.mark("")
	if err := r.exec(ctx, "create staging tables", createStagingSQL); err != nil {
		return err
	}
	switch {
	case r.o.LegacyCSV != nil:
		if err := stageLegacyCSV(ctx, r.conn, r.o.LegacyCSV); err != nil {
			return wrapStage(err)
		}
	case r.o.LegacyTable != "":
		if err := r.stageLegacyTable(ctx); err != nil {
			return err
		}
	}
	r.mark("stage legacy accounts")
	if r.o.IdentitiesCSV != nil {
		if err := stageIdentitiesCSV(ctx, r.conn, r.o.IdentitiesCSV); err != nil {
			return wrapStage(err)
		}
	}
	r.mark("stage identities")
	if r.o.MappingCSV != nil {
		if err := stageMappingCSV(ctx, r.conn, r.o.MappingCSV); err != nil {
			return wrapStage(err)
		}
	}
	r.mark("stage mapping")
	if err := r.uniqueIndex(ctx, indexLegacySQL, dupLegacySQL, r.legacySource(), "legacy_id"); err != nil {
		return err
	}
	if err := r.uniqueIndex(ctx, indexIdentSQL, dupIdentSQL, "identities CSV", "subject"); err != nil {
		return err
	}
	if err := r.exec(ctx, "index mapping", indexMapSQL); err != nil {
		return err
	}
	if r.o.MappingCSV != nil {
		if err := r.exec(ctx, "find mapped users", pullMappedUsersSQL); err != nil {
			return err
		}
	}
	if err := r.exec(ctx, "analyze", analyzeSQL); err != nil {
		return err
	}
	r.mark("index and analyze")
	q := `SELECT (SELECT count(*) FROM gpugate_import_legacy), (SELECT count(*) FROM gpugate_import_ident), (SELECT count(*) FROM gpugate_import_map)`
	if err := r.conn.QueryRowContext(ctx, q).Scan(&r.sum.Legacy, &r.sum.Identities, &r.sum.Mappings); err != nil {
		return fmt.Errorf("userimport: count inputs: %w", err)
	}
	if err := r.unknownMappings(ctx); err != nil {
		return err
	}
	r.mark("counts")
	if err := r.exec(ctx, "match emails", emailSQL); err != nil {
		return err
	}
	r.mark("match emails")
	if err := r.exec(ctx, "plan", planSQL); err != nil {
		return err
	}
	r.mark("plan")
	if err := r.exec(ctx, "index plan", indexPlanSQL); err != nil {
		return err
	}
	r.mark("index plan")
	if err := r.conn.QueryRowContext(ctx, identityCountsSQL).Scan(&r.sum.UnverifiedIdentities, &r.sum.UnmatchedIdentities); err != nil {
		return fmt.Errorf("userimport: count identities: %w", err)
	}
	r.mark("count identities")
	return nil
}

func wrapStage(err error) error {
	var ie *InputError
	if errors.As(err, &ie) {
		return err
	}
	return fmt.Errorf("userimport: load input: %w", err)
}

func (r *run) legacySource() string {
	if r.o.LegacyTable != "" {
		return "legacy table"
	}
	return "legacy CSV"
}

// uniqueIndex builds a unique staging index; when the input has duplicates it reports them.
func (r *run) uniqueIndex(ctx context.Context, indexSQL, dupSQL, source, key string) error {
	_, err := r.conn.ExecContext(ctx, indexSQL)
	if err == nil {
		return nil
	}
	var pe *pq.Error
	if !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return fmt.Errorf("userimport: index %s: %w", source, err)
	}
	rows, err := r.conn.QueryContext(ctx, dupSQL)
	if err != nil {
		return fmt.Errorf("userimport: find duplicates: %w", err)
	}
	defer rows.Close()
	p := &problems{source: source}
	for rows.Next() {
		var id, lines string
		var n int
		if err := rows.Scan(&id, &n, &lines); err != nil {
			return fmt.Errorf("userimport: find duplicates: %w", err)
		}
		if r.o.LegacyTable != "" && key == "legacy_id" {
			p.add(0, "%s %q appears %d times", key, id, n)
		} else {
			p.add(0, "%s %q appears %d times (lines %s)", key, id, n, lines)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("userimport: find duplicates: %w", err)
	}
	if err := p.err(); err != nil {
		return err
	}
	return fmt.Errorf("userimport: index %s: duplicate %s", source, key)
}

// stageLegacyTable copies the legacy table into the staging table and validates its rows.
func (r *run) stageLegacyTable(ctx context.Context) error {
	name := r.o.LegacyTable
	quoted := ""
	for i, part := range strings.Split(name, ".") {
		if i > 0 {
			quoted += "."
		}
		quoted += pq.QuoteIdentifier(part)
	}
	rows, err := r.conn.QueryContext(ctx, legacyTableColumnsSQL, quoted)
	if err != nil {
		return fmt.Errorf("userimport: legacy table %s: %w", name, err)
	}
	cols := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return fmt.Errorf("userimport: legacy table %s: %w", name, err)
		}
		cols[c] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("userimport: legacy table %s: %w", name, err)
	}
	if len(cols) == 0 {
		return fmt.Errorf("userimport: legacy table %s not found (or it has no columns)", name)
	}
	if !cols["legacy_id"] || !cols["email"] {
		return fmt.Errorf("userimport: legacy table %s must have columns legacy_id and email (and optionally display_name)", name)
	}
	display := `''`
	if cols["display_name"] {
		display = `coalesce(btrim(t.display_name::text, ` + wsSQL + `), '')`
	}
	// The table name is the only identifier spliced into SQL: it matched tableNameRE and each
	// part is quoted.
	q := fmt.Sprintf(stageLegacyTableSQL, display) + quoted + ` AS t`
	if err := r.exec(ctx, "copy legacy table "+name, q); err != nil {
		return err
	}
	prows, err := r.conn.QueryContext(ctx, legacyTableProblemsSQL, maxLegacyID, maxEmail, maxDisplayName)
	if err != nil {
		return fmt.Errorf("userimport: validate legacy table: %w", err)
	}
	defer prows.Close()
	p := &problems{source: "legacy table " + name}
	for prows.Next() {
		var msg string
		if err := prows.Scan(&msg); err != nil {
			return fmt.Errorf("userimport: validate legacy table: %w", err)
		}
		p.add(0, "%s", msg)
	}
	if err := prows.Err(); err != nil {
		return fmt.Errorf("userimport: validate legacy table: %w", err)
	}
	return p.err()
}

// unknownMappings counts the mapping rows naming no legacy account as conflicts.
func (r *run) unknownMappings(ctx context.Context) error {
	rows, err := r.conn.QueryContext(ctx, unknownMappingSQL, MaxConflictDetails)
	if err != nil {
		return fmt.Errorf("userimport: check mapping: %w", err)
	}
	defer rows.Close()
	total := 0
	var details []string
	for rows.Next() {
		var line int
		var id string
		if err := rows.Scan(&total, &line, &id); err != nil {
			return fmt.Errorf("userimport: check mapping: %w", err)
		}
		details = append(details, fmt.Sprintf("mapping line %d: legacy_id %s is neither a legacy account of this import nor an existing user; nothing linked", line, id))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("userimport: check mapping: %w", err)
	}
	r.sum.addConflicts(total, details)
	return nil
}

// apply creates users and links chunk by chunk, one transaction each, in the order of the
// input's lines.
func (r *run) apply(ctx context.Context) error {
	total := r.sum.Legacy
	if r.o.Progress != nil {
		r.o.Progress(0, total)
	}
	done, after := 0, int64(0)
	for done < total {
		n := min(r.o.ChunkSize, total-done)
		// Every commit but the last may be asynchronous: a crash can lose only whole chunks,
		// which a rerun redoes; the last, synchronous commit flushes them all.
		last, err := r.chunk(ctx, after, n, done+n < total)
		if err != nil {
			return err
		}
		done += n
		after = last
		if r.o.Progress != nil {
			r.o.Progress(done, total)
		}
	}
	return nil
}

// chunk handles the n legacy accounts after line after, and returns the last line handled.
func (r *run) chunk(ctx context.Context, after int64, n int, async bool) (last int64, err error) {
	tx, err := r.conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("userimport: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if async {
		if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return 0, fmt.Errorf("userimport: settings: %w", err)
		}
	}
	if os.Getenv("UI_EXPLAIN") != "" && (after == 0 || after > 600000) {
		for _, q := range []string{emailSQL, planSQL} {
			if after > 0 { break }
			_, _ = tx.ExecContext(ctx, "DROP TABLE IF EXISTS gpugate_import_email_x; DROP TABLE IF EXISTS gpugate_import_plan_x")
			q = strings.Replace(q, "CREATE TEMP TABLE gpugate_import_email AS", "CREATE TEMP TABLE gpugate_import_email_x AS", 1)
			q = strings.Replace(q, "CREATE TEMP TABLE gpugate_import_plan AS", "CREATE TEMP TABLE gpugate_import_plan_x AS", 1)
			rows, err := tx.QueryContext(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q)
			if err != nil { fmt.Fprintln(os.Stderr, err); continue }
			for rows.Next() { var l string; rows.Scan(&l); fmt.Fprintln(os.Stderr, l) }
			rows.Close()
		}
		rows, err := tx.QueryContext(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+chunkSQL, r.o.Issuer, after, n, MaxConflictDetails)
		if err != nil { fmt.Fprintln(os.Stderr, err) } else {
		for rows.Next() { var l string; rows.Scan(&l); fmt.Fprintln(os.Stderr, l) }
		rows.Close() }
		if after > 0 { return 0, errors.New("explained") }
		_, _ = tx.ExecContext(ctx, "ROLLBACK")
		tx, _ = r.conn.BeginTx(ctx, nil)
	}
	rows, err := tx.QueryContext(ctx, chunkSQL, r.o.Issuer, after, n, MaxConflictDetails)
	if err != nil {
		return 0, fmt.Errorf("userimport: link: %w", err)
	}
	var part Summary
	var conflicts []string
	handled, created := 0, 0
	for rows.Next() {
		var outcome string
		var k int
		var details []string
		if err := rows.Scan(&outcome, &k, pq.Array(&details), &created, &last); err != nil {
			rows.Close()
			return 0, fmt.Errorf("userimport: link: %w", err)
		}
		handled += k
		switch outcome {
		case "linked":
			part.Linked = k
		case "already":
			part.AlreadyLinked = k
		case "unmatched":
			part.Unmatched = k
		case "conflict":
			part.Conflicts = k
			conflicts = details
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("userimport: link: %w", err)
	}
	if handled != n {
		return 0, fmt.Errorf("userimport: internal error: a chunk of %d legacy accounts after line %d handled %d", n, after, handled)
	}
	r.mark("chunk")
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("userimport: commit: %w", err)
	}
	r.mark("chunk: commit")
	r.sum.UsersCreated += created
	r.sum.Linked += part.Linked
	r.sum.AlreadyLinked += part.AlreadyLinked
	r.sum.Unmatched += part.Unmatched
	r.sum.addConflicts(part.Conflicts, conflicts)
	return last, nil
}
