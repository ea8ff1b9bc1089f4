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
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// DefaultChunkSize is how many legacy accounts one transaction links (see Options.ChunkSize).
const DefaultChunkSize = 50_000

// DefaultParallel is how many connections link chunks at once (see Options.Parallel).
const DefaultParallel = 2

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
	// Calls never overlap. See NewProgressBar.
	Progress func(done, total int)

	// ChunkSize is how many legacy accounts (in input order) each transaction creates and
	// links: an interruption loses at most the chunks in flight. Default DefaultChunkSize.
	ChunkSize int
	// Parallel is how many connections link chunks at once (default DefaultParallel). Run
	// also holds one connection throughout, so it needs Parallel+1 connections of the pool; it
	// uses fewer when the pool's MaxOpenConns is lower.
	Parallel int
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

	// ConflictDetails describes the first MaxConflictDetails conflicts (in input order), one
	// line each.
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

// Validate checks o as Run does before it touches the database: the issuer, one source of
// legacy accounts (or a mapping), and identities or a mapping. Only whether each reader is
// nil matters; none is read. It returns the first problem found.
func (o Options) Validate() error { return o.validate() }

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
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	return nil
}

// Run imports legacy accounts and links them to identities of o.Issuer. It validates every
// input before writing anything: malformed input returns an *InputError and changes nothing.
// It then commits chunk by chunk (o.ChunkSize legacy accounts, in input order, o.Parallel at
// a time), each chunk creating its users and their links atomically; when ctx is cancelled or
// the database fails, Run returns the error with the Summary of the chunks committed so far,
// and a rerun with the same inputs finishes the job (what was done is then AlreadyLinked).
//
// Only one import runs at a time per database; Run fails fast when another one holds the lock.
func Run(ctx context.Context, x *sqlx.DB, o Options) (sum Summary, err error) {
	start := time.Now()
	defer func() { sum.Elapsed = time.Since(start) }()
	if err := o.validate(); err != nil {
		return sum, err
	}
	if limit := x.Stats().MaxOpenConnections; limit > 0 {
		if limit < 2 {
			return sum, errors.New("userimport: the connection pool must allow at least 2 connections")
		}
		o.Parallel = min(o.Parallel, limit-1)
	}
	conn, err := x.Conn(ctx)
	if err != nil {
		return sum, fmt.Errorf("userimport: %w", err)
	}
	r := &run{x: x, conn: conn, o: o}
	defer r.close(ctx)
	if err := r.lock(ctx); err != nil {
		return sum, err
	}
	if err := r.stage(ctx); err != nil {
		return r.sum, err
	}
	err = r.apply(ctx)
	return r.sum, err
}

type run struct {
	x      *sqlx.DB
	conn   *sql.Conn // holds the advisory lock; stages and plans
	locked bool
	o      Options
	sum    Summary
	last   time.Time // for traceHook
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

func (r *run) lock(ctx context.Context) error {
	if err := r.conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryLockKey).Scan(&r.locked); err != nil {
		return fmt.Errorf("userimport: lock: %w", err)
	}
	if !r.locked {
		return errors.New("userimport: another import is running on this database")
	}
	return nil
}

// close drops the staging tables (they hold a copy of the inputs), releases the lock and
// returns the connection, even when ctx is already cancelled.
func (r *run) close(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if r.locked {
		_, _ = r.conn.ExecContext(cctx, dropStagingSQL)
		_, _ = r.conn.ExecContext(cctx, `SELECT pg_advisory_unlock($1)`, advisoryLockKey)
	}
	_ = r.conn.Close()
}

func (r *run) exec(ctx context.Context, what, q string, args ...any) error {
	if _, err := r.conn.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("userimport: %s: %w", what, err)
	}
	return nil
}

// tx runs f in a transaction on conn with settings for big set-based statements: enough memory
// for the hashes and sorts of a million rows; hash joins, never nested loops (every join here
// is an equi-join of big sets, and a nested loop over an underestimated CTE or fresh table is
// quadratic); no JIT compilation (it costs more than it saves on statements that run once).
func tx(ctx context.Context, conn *sql.Conn, f func(*sql.Tx) error) error {
	t, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = t.Rollback() }()
	if _, err := t.ExecContext(ctx, `SET LOCAL work_mem = '256MB'; SET LOCAL maintenance_work_mem = '256MB';
		SET LOCAL enable_nestloop = off; SET LOCAL jit = off`); err != nil {
		return err
	}
	if err := f(t); err != nil {
		return err
	}
	return t.Commit()
}

// stage loads and validates every input into the staging tables, then plans.
func (r *run) stage(ctx context.Context) error {
	r.mark("")
	if err := r.exec(ctx, "create staging tables", createStagingSQL); err != nil {
		return err
	}
	if err := r.load(ctx); err != nil {
		return err
	}
	r.mark("load inputs")
	err := tx(ctx, r.conn, func(t *sql.Tx) error {
		if err := r.uniqueIndex(ctx, t, indexLegacySQL, dupLegacySQL, r.legacySource(), "legacy_id"); err != nil {
			return err
		}
		if err := r.uniqueIndex(ctx, t, indexIdentSQL, dupIdentSQL, "identities CSV", "subject"); err != nil {
			return err
		}
		if _, err := t.ExecContext(ctx, indexMapSQL); err != nil {
			return fmt.Errorf("userimport: index mapping: %w", err)
		}
		if r.o.MappingCSV != nil {
			if _, err := t.ExecContext(ctx, pullMappedUsersSQL); err != nil {
				return fmt.Errorf("userimport: find mapped users: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.exec(ctx, "analyze", analyzeSQL); err != nil {
		return err
	}
	r.mark("index and analyze")
	if err := r.conn.QueryRowContext(ctx, countInputsSQL).Scan(&r.sum.Legacy, &r.sum.Identities, &r.sum.Mappings); err != nil {
		return fmt.Errorf("userimport: count inputs: %w", err)
	}
	if err := r.unknownMappings(ctx); err != nil {
		return err
	}
	err = tx(ctx, r.conn, func(t *sql.Tx) error {
		if _, err := t.ExecContext(ctx, emailSQL); err != nil {
			return fmt.Errorf("userimport: match emails: %w", err)
		}
		if _, err := t.ExecContext(ctx, sharedSQL); err != nil {
			return fmt.Errorf("userimport: shared emails: %w", err)
		}
		if _, err := t.ExecContext(ctx, mappingSQL); err != nil {
			return fmt.Errorf("userimport: group mapping: %w", err)
		}
		r.mark("match emails")
		if _, err := t.ExecContext(ctx, planSQL); err != nil {
			return fmt.Errorf("userimport: plan: %w", err)
		}
		r.mark("plan")
		if _, err := t.ExecContext(ctx, indexPlanSQL); err != nil {
			return fmt.Errorf("userimport: index plan: %w", err)
		}
		if err := t.QueryRowContext(ctx, identityCountsSQL).Scan(&r.sum.UnverifiedIdentities, &r.sum.UnmatchedIdentities); err != nil {
			return fmt.Errorf("userimport: count identities: %w", err)
		}
		return nil
	})
	r.mark("index plan, count identities")
	return err
}

// load copies the inputs into the staging tables, each CSV on its own connection, at once.
// Malformed rows of every input are reported together.
func (r *run) load(ctx context.Context) error {
	if r.o.LegacyTable != "" {
		if err := r.stageLegacyTable(ctx); err != nil {
			return err
		}
	}
	type job struct {
		src   io.Reader
		stage func(context.Context, *sql.Conn, io.Reader) error
	}
	var jobs []job
	if r.o.LegacyCSV != nil {
		jobs = append(jobs, job{r.o.LegacyCSV, stageLegacyCSV})
	}
	if r.o.IdentitiesCSV != nil {
		jobs = append(jobs, job{r.o.IdentitiesCSV, stageIdentitiesCSV})
	}
	if r.o.MappingCSV != nil {
		jobs = append(jobs, job{r.o.MappingCSV, stageMappingCSV})
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.o.Parallel)
	for i, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			err := func() error {
				conn, err := r.x.Conn(ctx)
				if err != nil {
					return err
				}
				defer conn.Close()
				return j.stage(ctx, conn, j.src)
			}()
			var ie *InputError
			if err != nil && !errors.As(err, &ie) {
				cancel(err) // the database failed: stop the others; malformed input lets them finish
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("userimport: load input: %w", err)
	}
	var all InputError
	for _, err := range errs {
		var ie *InputError
		if errors.As(err, &ie) {
			all.Problems = append(all.Problems, ie.Problems...)
			all.Stopped = all.Stopped || ie.Stopped
		}
	}
	if len(all.Problems) > 0 {
		return &all
	}
	return nil
}

func (r *run) legacySource() string {
	if r.o.LegacyTable != "" {
		return "legacy table " + r.o.LegacyTable
	}
	return "legacy CSV"
}

// uniqueIndex builds a unique staging index; when the input has duplicates it reports them.
// The index is built in a savepoint so that the report can follow in the same transaction.
func (r *run) uniqueIndex(ctx context.Context, t *sql.Tx, indexSQL, dupSQL, source, key string) error {
	if _, err := t.ExecContext(ctx, `SAVEPOINT unique_index`); err != nil {
		return fmt.Errorf("userimport: index %s: %w", source, err)
	}
	_, err := t.ExecContext(ctx, indexSQL)
	if err == nil {
		return nil
	}
	var pe *pq.Error
	if !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return fmt.Errorf("userimport: index %s: %w", source, err)
	}
	if _, err := t.ExecContext(ctx, `ROLLBACK TO SAVEPOINT unique_index`); err != nil {
		return fmt.Errorf("userimport: index %s: %w", source, err)
	}
	rows, err := t.QueryContext(ctx, dupSQL)
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
			_ = rows.Close() // the scan's error is the one to report
			return fmt.Errorf("userimport: legacy table %s: %w", name, err)
		}
		cols[c] = true
	}
	_ = rows.Close() // every row was read: rows.Err below reports what went wrong
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

// uuidPrefix returns the first 16 hex digits of this run's version-7 UUIDs: the 48-bit Unix
// time in milliseconds, the version (7), and 12 random bits. chunkSQL appends the variant and
// the line number.
func uuidPrefix(t time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%012x7%03x", uint64(t.UnixMilli())&(1<<48-1), (uint(b[0])<<8|uint(b[1]))&0xfff)
}

// chunk is a range of the plan's lines and, once committed, what it did.
type chunk struct {
	first, last int64
	n           int
	done        bool
	sum         Summary // UsersCreated and the outcome counts
	conflicts   []string
}

// apply cuts the plan into chunks and links them, o.Parallel connections at once, each chunk
// in its own transaction. The summary adds up the committed chunks, their conflict details in
// input order.
func (r *run) apply(ctx context.Context) error {
	chunks, err := r.chunks(ctx)
	if err != nil {
		return err
	}
	total := r.sum.Legacy
	var mu sync.Mutex // guards done and the Progress calls
	done := 0
	if r.o.Progress != nil {
		r.o.Progress(0, total)
	}
	prefix := uuidPrefix(time.Now())
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan *chunk)
	go func() {
		defer close(next)
		for _, c := range chunks {
			select {
			case next <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range min(r.o.Parallel, len(chunks)) {
		wg.Go(func() {
			conn, err := r.x.Conn(ctx)
			if err != nil {
				cancel(err)
				return
			}
			defer conn.Close()
			for c := range next {
				if err := linkChunk(ctx, conn, r.o.Issuer, prefix, c); err != nil {
					cancel(err)
					return
				}
				mu.Lock()
				done += c.n
				if r.o.Progress != nil {
					r.o.Progress(done, total)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, c := range chunks {
		if !c.done {
			continue
		}
		r.sum.UsersCreated += c.sum.UsersCreated
		r.sum.Linked += c.sum.Linked
		r.sum.AlreadyLinked += c.sum.AlreadyLinked
		r.sum.Unmatched += c.sum.Unmatched
		r.sum.addConflicts(c.sum.Conflicts, c.conflicts)
	}
	r.mark("link")
	if done < total {
		err := context.Cause(ctx)
		if err == nil {
			err = errors.New("internal error: chunks left")
		}
		return fmt.Errorf("userimport: stopped after %d of %d legacy accounts (rerun to finish): %w", done, total, err)
	}
	return nil
}

func (r *run) chunks(ctx context.Context) ([]*chunk, error) {
	rows, err := r.conn.QueryContext(ctx, chunksSQL, r.o.ChunkSize)
	if err != nil {
		return nil, fmt.Errorf("userimport: chunks: %w", err)
	}
	defer rows.Close()
	var chunks []*chunk
	for rows.Next() {
		c := &chunk{}
		if err := rows.Scan(&c.first, &c.last, &c.n); err != nil {
			return nil, fmt.Errorf("userimport: chunks: %w", err)
		}
		chunks = append(chunks, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("userimport: chunks: %w", err)
	}
	return chunks, nil
}

// linkChunk creates the users and links of one chunk in one transaction and records what it did.
func linkChunk(ctx context.Context, conn *sql.Conn, issuer, prefix string, c *chunk) error {
	var part Summary
	var conflicts []string
	err := tx(ctx, conn, func(t *sql.Tx) error {
		rows, err := t.QueryContext(ctx, chunkSQL, issuer, c.first, c.last, MaxConflictDetails, prefix)
		if err != nil {
			return err
		}
		defer rows.Close()
		handled := 0
		for rows.Next() {
			var outcome string
			var n int
			var details []string
			if err := rows.Scan(&outcome, &n, pq.Array(&details), &part.UsersCreated); err != nil {
				return err
			}
			handled += n
			switch outcome {
			case "linked":
				part.Linked = n
			case "already":
				part.AlreadyLinked = n
			case "unmatched":
				part.Unmatched = n
			case "conflict":
				part.Conflicts = n
				conflicts = details
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if handled != c.n {
			return fmt.Errorf("internal error: lines %d..%d: %d legacy accounts handled, %d planned", c.first, c.last, handled, c.n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("link lines %d..%d: %w", c.first, c.last, err)
	}
	c.sum, c.conflicts, c.done = part, conflicts, true
	return nil
}
