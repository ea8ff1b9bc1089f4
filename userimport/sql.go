package userimport

// Every statement here is a constant: user data travels as parameters or through COPY. The one
// exception is the legacy table's name, validated against tableNameRE and quoted with
// pq.QuoteIdentifier (see stageLegacyTable).
//
// The staging tables are UNLOGGED (no WAL) ordinary tables, not TEMPORARY ones, so that several
// sessions can load and link in parallel and PostgreSQL can use parallel query on them. Their
// fixed gpugate_import_ names are safe because one import runs at a time (advisory lock). Run
// drops them when it ends; if the process is killed, the next import drops them first.

// wsSQL is the whitespace trimmed from identifiers and emails: the same set as space in Go.
const wsSQL = `E' \t\r\n\x0B\f'`

const dropStagingSQL = `DROP TABLE IF EXISTS gpugate_import_legacy, gpugate_import_ident,
    gpugate_import_map, gpugate_import_email, gpugate_import_shared, gpugate_import_ml,
    gpugate_import_ms, gpugate_import_plan`

const createStagingSQL = dropStagingSQL + `;
CREATE UNLOGGED TABLE gpugate_import_legacy (
    line         bigint NOT NULL,
    legacy_id    text,
    email        text,
    display_name text NOT NULL DEFAULT '',
    nemail       text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE UNLOGGED TABLE gpugate_import_ident (
    line     bigint NOT NULL,
    subject  text NOT NULL,
    email    text,
    verified boolean NOT NULL,
    nemail   text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE UNLOGGED TABLE gpugate_import_map (
    line      bigint NOT NULL,
    legacy_id text NOT NULL,
    subject   text NOT NULL
);`

const (
	copyLegacySQL     = `COPY gpugate_import_legacy (line, legacy_id, email, display_name) FROM STDIN`
	copyIdentitiesSQL = `COPY gpugate_import_ident (line, subject, email, verified) FROM STDIN`
	copyMappingSQL    = `COPY gpugate_import_map (line, legacy_id, subject) FROM STDIN`
)

// legacyTableColumnsSQL lists the columns of the legacy table ($1: its quoted name).
const legacyTableColumnsSQL = `
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`

// stageLegacyTableSQL is completed with the quoted table name; %s is the display_name
// expression. Table rows are numbered as lines.
const stageLegacyTableSQL = `
INSERT INTO gpugate_import_legacy (line, legacy_id, email, display_name)
SELECT row_number() OVER (), btrim(t.legacy_id::text, ` + wsSQL + `), nullif(btrim(t.email::text, ` + wsSQL + `), ''), %s
FROM `

// legacyTableProblemsSQL finds invalid rows copied from a legacy table.
const legacyTableProblemsSQL = `
SELECT CASE
    WHEN legacy_id IS NULL OR legacy_id = '' THEN 'a row has an empty legacy_id'
    WHEN char_length(legacy_id) > $1 THEN format('legacy_id %s... is %s characters long (at most %s)', left(legacy_id, 40), char_length(legacy_id), $1)
    WHEN char_length(email) > $2 THEN format('legacy_id %s: email is %s characters long (at most %s)', legacy_id, char_length(email), $2)
    WHEN char_length(display_name) > $3 THEN format('legacy_id %s: display_name is %s characters long (at most %s)', legacy_id, char_length(display_name), $3)
END AS problem
FROM gpugate_import_legacy
WHERE legacy_id IS NULL OR legacy_id = '' OR char_length(legacy_id) > $1
   OR char_length(email) > $2 OR char_length(display_name) > $3
LIMIT 10`

// The staging indexes double as the duplicate checks: a legacy account or an identity must
// appear once in its input. (COLLATE "C": byte equality, and the fastest sort.)
const (
	indexLegacySQL = `CREATE UNIQUE INDEX ON gpugate_import_legacy (legacy_id COLLATE "C")`
	indexIdentSQL  = `CREATE UNIQUE INDEX ON gpugate_import_ident (subject COLLATE "C")`
	indexMapSQL    = `CREATE INDEX ON gpugate_import_map (legacy_id COLLATE "C")`
)

// Reports for a failed unique index: the first duplicates with their lines.
const (
	dupLegacySQL = `
SELECT legacy_id, count(*), string_agg(line::text, ', ' ORDER BY line)
FROM gpugate_import_legacy GROUP BY legacy_id HAVING count(*) > 1 ORDER BY min(line), legacy_id LIMIT 10`
	dupIdentSQL = `
SELECT subject, count(*), string_agg(line::text, ', ' ORDER BY line)
FROM gpugate_import_ident GROUP BY subject HAVING count(*) > 1 ORDER BY min(line) LIMIT 10`
)

// pullMappedUsersSQL adds, as legacy accounts, the existing users a mapping names by legacy_id
// when the legacy input does not list them (a mapping-only run after an earlier import). They
// come after the input's lines.
const pullMappedUsersSQL = `
INSERT INTO gpugate_import_legacy (line, legacy_id, email, display_name)
SELECT (SELECT coalesce(max(line), 0) FROM gpugate_import_legacy) + row_number() OVER (),
       u.legacy_id, nullif(btrim(u.email, ` + wsSQL + `), ''), u.display_name
FROM users u
WHERE u.legacy_id IN (SELECT legacy_id FROM gpugate_import_map)
  AND NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = u.legacy_id)`

// analyzeSQL refreshes the statistics of the staging tables, and of users and user_identities:
// a previous import may have just grown them by a million rows, and the chunks' per-row lookups
// must be planned on their real size. (Without ownership of users and user_identities, ANALYZE
// skips them with a warning: autovacuum's statistics then serve.)
const analyzeSQL = `ANALYZE gpugate_import_legacy, gpugate_import_ident, gpugate_import_map, users, user_identities`

const countInputsSQL = `SELECT (SELECT count(*) FROM gpugate_import_legacy),
    (SELECT count(*) FROM gpugate_import_ident), (SELECT count(*) FROM gpugate_import_map)`

// unknownMappingSQL lists mapping rows naming no legacy account ($1: how many to describe).
const unknownMappingSQL = `
SELECT count(*) OVER (), m.line, m.legacy_id
FROM gpugate_import_map m
WHERE NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = m.legacy_id)
ORDER BY m.line
LIMIT $1`

// emailSQL groups the verified identities by normalized email: how many have it (ni), how
// many of those the mapping does not name (nfree), and the subject and email of one of them.
const emailSQL = `
CREATE UNLOGGED TABLE gpugate_import_email AS
SELECT i.nemail, count(*) AS ni, count(*) FILTER (WHERE m.subject IS NULL) AS nfree,
       min(i.subject) AS subject, min(i.email) AS email
FROM gpugate_import_ident i
LEFT JOIN (SELECT DISTINCT subject FROM gpugate_import_map) m ON m.subject = i.subject
WHERE i.verified AND i.nemail IS NOT NULL
GROUP BY i.nemail`

// sharedSQL lists the normalized emails shared by legacy accounts: by two of this import, or
// by one of this import and an existing user with a legacy_id this import does not list.
const sharedSQL = `
CREATE UNLOGGED TABLE gpugate_import_shared AS
SELECT nemail FROM gpugate_import_legacy WHERE nemail IS NOT NULL GROUP BY nemail HAVING count(*) > 1
UNION
SELECT lower(nullif(btrim(u.email, ` + wsSQL + `), ''))
FROM users u
WHERE u.legacy_id IS NOT NULL AND u.email IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = u.legacy_id)
  AND lower(nullif(btrim(u.email, ` + wsSQL + `), '')) IN (SELECT nemail FROM gpugate_import_legacy)`

// identityCountsSQL counts the identities no legacy account can take by email: unverified (and
// not mapped), and verified (and not mapped) with an email no legacy account of the import has.
const identityCountsSQL = `
SELECT (SELECT count(*) FROM gpugate_import_ident i
        WHERE (NOT i.verified OR i.nemail IS NULL)
          AND NOT EXISTS (SELECT 1 FROM gpugate_import_map m WHERE m.subject = i.subject)),
       (SELECT coalesce(sum(e.nfree), 0) FROM gpugate_import_email e
        WHERE NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.nemail = e.nemail))`

// planSQL decides, from the inputs alone, what each legacy account should become: a candidate
// link (subject, linked_by, email), nothing (unmatched), or a conflict (problem). What the
// database already holds is checked per chunk, in the chunk's transaction (chunkSQL).
//
//   - A legacy account named in the mapping is linked to its subject when the mapping gives it
//     exactly one subject and gives that subject to no other legacy account.
//   - Any other legacy account is linked by email when exactly one identity has that email,
//     verified; unless another legacy account (in the input, or an existing user with a
//     legacy_id) has the same email, or the mapping gives that identity to someone else.
//
// It also notes the id of the user that already has the legacy_id, if any.
// mappingSQL groups the mapping by legacy_id (gpugate_import_ml) and by subject
// (gpugate_import_ms), identical rows counted once.
const mappingSQL = `
CREATE UNLOGGED TABLE gpugate_import_ml AS
SELECT legacy_id, count(*) AS n, min(subject) AS subject, string_agg(line::text, ', ' ORDER BY line) AS lines
FROM (SELECT legacy_id, subject, min(line) AS line FROM gpugate_import_map GROUP BY legacy_id, subject) m
GROUP BY legacy_id;
CREATE UNLOGGED TABLE gpugate_import_ms AS
SELECT subject, count(*) AS n, min(legacy_id) AS legacy_id
FROM (SELECT DISTINCT legacy_id, subject FROM gpugate_import_map) m
GROUP BY subject;
ANALYZE gpugate_import_email, gpugate_import_shared, gpugate_import_ml, gpugate_import_ms`

const planSQL = `
CREATE UNLOGGED TABLE gpugate_import_plan AS
SELECT l.line, l.legacy_id, l.email, l.display_name, u.id AS existing_id,
    CASE
        WHEN ml.legacy_id IS NOT NULL THEN
            CASE
                WHEN ml.n > 1 THEN format('legacy_id %s: the mapping gives it %s subjects (mapping lines %s); none linked', l.legacy_id, ml.n, ml.lines)
                WHEN ms.n > 1 THEN format('legacy_id %s: the mapping gives subject %s to %s legacy accounts; none linked', l.legacy_id, ml.subject, ms.n)
            END
        WHEN e.nemail IS NULL THEN NULL
        WHEN sh.nemail IS NOT NULL THEN format('legacy_id %s: email %s is shared by several legacy accounts; none linked, never merged', l.legacy_id, l.email)
        WHEN e.ni > 1 THEN format('legacy_id %s: %s identities have the verified email %s; none linked', l.legacy_id, e.ni, l.email)
        WHEN ms2.subject IS NOT NULL THEN format('legacy_id %s: identity %s has its email but the mapping gives it to legacy_id %s; not linked by email', l.legacy_id, e.subject, ms2.legacy_id)
    END AS problem,
    CASE
        WHEN ml.legacy_id IS NOT NULL THEN CASE WHEN ml.n = 1 AND ms.n = 1 THEN ml.subject END
        WHEN e.ni = 1 AND sh.nemail IS NULL AND ms2.subject IS NULL THEN e.subject
    END AS subject,
    CASE WHEN ml.legacy_id IS NOT NULL THEN 'mapping' ELSE 'email' END AS linked_by,
    CASE WHEN ml.legacy_id IS NOT NULL THEN CASE WHEN mi.verified THEN mi.email END ELSE e.email END AS iemail
FROM gpugate_import_legacy l
LEFT JOIN users u ON u.legacy_id = l.legacy_id
LEFT JOIN gpugate_import_ml ml ON ml.legacy_id = l.legacy_id
LEFT JOIN gpugate_import_ms ms ON ms.subject = ml.subject
LEFT JOIN gpugate_import_ident mi ON mi.subject = ml.subject
LEFT JOIN gpugate_import_email e ON ml.legacy_id IS NULL AND e.nemail = l.nemail
LEFT JOIN gpugate_import_shared sh ON ml.legacy_id IS NULL AND sh.nemail = l.nemail
LEFT JOIN gpugate_import_ms ms2 ON ms2.subject = e.subject`

const indexPlanSQL = `CREATE UNIQUE INDEX ON gpugate_import_plan (line); ANALYZE gpugate_import_plan`

// chunksSQL cuts the plan into chunks of $1 legacy accounts, in line order.
const chunksSQL = `
SELECT min(line), max(line), count(*)
FROM (SELECT line, (row_number() OVER (ORDER BY line) - 1) / $1 AS c FROM gpugate_import_plan) s
GROUP BY c ORDER BY c`

// chunkSQL handles the legacy accounts of the plan with lines $2..$3, for issuer $1, in one
// statement. It creates the users the plan found missing, with a time-ordered id (UUID version
// 7: $5 is the run's 48-bit millisecond timestamp, the version and 12 random bits, as 16 hex
// digits; the variant and the line fill the rest) so that the primary key grows at its right
// edge instead of all over the index. It creates the links, checking what the database holds:
// an identity already linked to the same user is AlreadyLinked; linked to another user, a
// conflict (never re-pointed); a user already linked to another subject of this issuer, a
// conflict (never two accounts of one IdP on one user); an unmatched user with a link to this
// issuer, AlreadyLinked. A new user has no link yet, so only existing users are looked up; ON
// CONFLICT catches an identity linked meanwhile. It returns, per outcome, the count and the
// first $4 details, with the number of users created.
//
// Every join is between the chunk's own rows: run it with enable_nestloop off (see tx), so that
// an underestimated CTE never turns one into a quadratic nested loop. The per-row lookups can
// only use the index on (issuer, subject) and the one on user_id (the min over a CASE keeps the
// planner from scanning the primary key in subject order for the issuer's first match).
const chunkSQL = `
WITH chunk AS MATERIALIZED (
    SELECT p.*, p.existing_id IS NOT NULL AS existing,
           coalesce(p.existing_id, ($5 || '8' || lpad(to_hex(p.line), 15, '0'))::uuid) AS user_id
    FROM gpugate_import_plan p WHERE p.line BETWEEN $2 AND $3
), nu AS (
    INSERT INTO users (id, email, display_name, legacy_id)
    SELECT user_id, email, display_name, legacy_id FROM chunk WHERE NOT existing ORDER BY line
    RETURNING 1
), k AS MATERIALIZED (
    SELECT c.line, c.legacy_id, c.subject, c.user_id, c.iemail, c.linked_by, c.problem,
        CASE WHEN c.existing AND c.problem IS NULL AND c.subject IS NOT NULL THEN
            (SELECT ui.user_id FROM user_identities ui WHERE ui.issuer = $1 AND ui.subject = c.subject)
        END AS linked_to,
        CASE WHEN c.existing AND c.problem IS NULL THEN
            (SELECT min(CASE WHEN ui.issuer = $1 THEN ui.subject END)
             FROM user_identities ui WHERE ui.user_id = c.user_id)
        END AS user_subject
    FROM chunk c
), ins AS (
    INSERT INTO user_identities (issuer, subject, user_id, email, linked_by)
    SELECT $1, k.subject, k.user_id, k.iemail, k.linked_by
    FROM k
    WHERE k.problem IS NULL AND k.subject IS NOT NULL AND k.linked_to IS NULL AND k.user_subject IS NULL
    ORDER BY k.line
    ON CONFLICT DO NOTHING
    RETURNING subject
), o AS (
    SELECT k.line,
        CASE
            WHEN k.problem IS NOT NULL THEN 'conflict'
            WHEN k.subject IS NULL THEN CASE WHEN k.user_subject IS NOT NULL THEN 'already' ELSE 'unmatched' END
            WHEN k.linked_to = k.user_id THEN 'already'
            WHEN ins.subject IS NOT NULL THEN 'linked'
            ELSE 'conflict'
        END AS outcome,
        CASE
            WHEN k.problem IS NOT NULL THEN k.problem
            WHEN k.subject IS NULL OR k.linked_to = k.user_id OR ins.subject IS NOT NULL THEN NULL
            WHEN k.linked_to IS NULL AND k.user_subject IS NOT NULL THEN
                format('legacy_id %s: its user is already linked to subject %s of this issuer; %s not linked (%s)', k.legacy_id, k.user_subject, k.subject, k.linked_by)
            ELSE coalesce(
                (SELECT format('legacy_id %s: identity %s is already linked to another user (%s); not re-pointed', k.legacy_id, k.subject, ui.user_id)
                 FROM user_identities ui WHERE ui.issuer = $1 AND ui.subject = k.subject),
                format('legacy_id %s: identity %s was linked by someone else during the import; rerun to see to whom', k.legacy_id, k.subject))
        END AS detail
    FROM k
    LEFT JOIN ins ON ins.subject = k.subject
)
SELECT outcome, count(*),
       coalesce((array_agg(detail ORDER BY line) FILTER (WHERE detail IS NOT NULL))[1:$4], '{}'),
       (SELECT count(*) FROM nu)
FROM o
GROUP BY outcome`
