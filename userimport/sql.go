package userimport

// Every statement here is a constant: user data travels as parameters or through COPY. The one
// exception is the legacy table's name, validated against tableNameRE and quoted with
// pq.QuoteIdentifier (see stageLegacyTable).
//
// Staging tables are TEMPORARY (not WAL-logged, private to the session, dropped when it ends);
// Run pins one connection for them and discards it at the end.

// wsSQL is the whitespace trimmed from identifiers and emails: the same set as space in Go.
const wsSQL = `E' \t\r\n\x0B\f'`

const createStagingSQL = `
DROP TABLE IF EXISTS pg_temp.gpugate_import_legacy, pg_temp.gpugate_import_ident,
    pg_temp.gpugate_import_map, pg_temp.gpugate_import_email, pg_temp.gpugate_import_plan;
CREATE TEMP TABLE gpugate_import_legacy (
    line         bigint NOT NULL,
    legacy_id    text,
    email        text,
    display_name text NOT NULL DEFAULT '',
    from_db      boolean NOT NULL DEFAULT false,
    nemail       text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE TEMP TABLE gpugate_import_ident (
    line     bigint NOT NULL,
    subject  text NOT NULL,
    email    text,
    verified boolean NOT NULL,
    nemail   text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE TEMP TABLE gpugate_import_map (
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

// stageLegacyTableSQL is completed with the quoted table name; %s is the display_name expression.
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
INSERT INTO gpugate_import_legacy (line, legacy_id, email, display_name, from_db)
SELECT (SELECT coalesce(max(line), 0) FROM gpugate_import_legacy) + row_number() OVER (),
       u.legacy_id, nullif(btrim(u.email, ` + wsSQL + `), ''), u.display_name, true
FROM users u
WHERE u.legacy_id IN (SELECT legacy_id FROM gpugate_import_map)
  AND NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = u.legacy_id)`

const analyzeSQL = `ANALYZE gpugate_import_legacy, gpugate_import_ident, gpugate_import_map`

// unknownMappingSQL lists mapping rows naming no legacy account ($1: how many to describe).
const unknownMappingSQL = `
SELECT count(*) OVER (), m.line, m.legacy_id
FROM gpugate_import_map m
WHERE NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = m.legacy_id)
ORDER BY m.line
LIMIT $1`

// emailSQL counts, per normalized email: the legacy accounts of this import (nl), the existing
// users with a legacy_id not in this import (nold), the verified identities (ni) and those of
// them the mapping does not name (nfree). One aggregation serves the plan and the identity
// counts. Only emails some verified identity has are kept.
const emailSQL = `
CREATE TEMP TABLE gpugate_import_email AS
SELECT nemail,
       count(*) FILTER (WHERE src = 'l') AS nl,
       count(*) FILTER (WHERE src = 'o') AS nold,
       count(*) FILTER (WHERE src = 'i') AS ni,
       count(*) FILTER (WHERE src = 'i' AND NOT mapped) AS nfree,
       min(subject) AS subject,
       min(email) AS email
FROM (
    SELECT nemail, 'l' AS src, NULL::text AS subject, NULL::text AS email, false AS mapped
    FROM gpugate_import_legacy WHERE nemail IS NOT NULL
    UNION ALL
    SELECT lower(nullif(btrim(u.email, ` + wsSQL + `), '')), 'o', NULL, NULL, false
    FROM users u
    WHERE u.legacy_id IS NOT NULL AND u.email IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM gpugate_import_legacy l WHERE l.legacy_id = u.legacy_id)
    UNION ALL
    SELECT i.nemail, 'i', i.subject, i.email, EXISTS (SELECT 1 FROM gpugate_import_map m WHERE m.subject = i.subject)
    FROM gpugate_import_ident i WHERE i.verified AND i.nemail IS NOT NULL
) s
WHERE nemail IS NOT NULL
GROUP BY nemail
HAVING count(*) FILTER (WHERE src = 'i') > 0`

// identityCountsSQL counts the identities no legacy account can take by email: unverified (and
// not mapped), and verified (and not mapped) with an email no legacy account of the import has.
const identityCountsSQL = `
SELECT (SELECT count(*) FROM gpugate_import_ident i
        WHERE (NOT i.verified OR i.nemail IS NULL)
          AND NOT EXISTS (SELECT 1 FROM gpugate_import_map m WHERE m.subject = i.subject)),
       (SELECT coalesce(sum(nfree), 0) FROM gpugate_import_email WHERE nl = 0)`

// planSQL decides, from the inputs alone, what each legacy account should become: a candidate
// link (subject, linked_by, email), nothing (unmatched), or a conflict (problem). What the
// database already holds is checked per chunk, in the chunk's transaction (chunkSQL).
//
//   - A legacy account named in the mapping is linked to its subject when the mapping gives it
//     exactly one subject and gives that subject to no other legacy account.
//   - Any other legacy account is linked by email when exactly one identity has that email,
//     verified; unless another legacy account (in the input, or an existing user with a
//     legacy_id) has the same email, or the mapping gives that identity to someone else.
const planSQL = `
CREATE TEMP TABLE gpugate_import_plan AS
WITH m AS (
    SELECT legacy_id, subject, min(line) AS line FROM gpugate_import_map GROUP BY legacy_id, subject
), ml AS (
    SELECT legacy_id, count(*) AS n, min(subject) AS subject,
           string_agg(line::text, ', ' ORDER BY line) AS lines
    FROM m GROUP BY legacy_id
), ms AS (
    SELECT subject, count(*) AS n, min(legacy_id) AS legacy_id FROM m GROUP BY subject
)
SELECT l.line, l.legacy_id, l.email, l.display_name, l.from_db,
    CASE
        WHEN ml.legacy_id IS NOT NULL THEN
            CASE
                WHEN ml.n > 1 THEN format('legacy_id %s: the mapping gives it %s subjects (mapping lines %s); none linked', l.legacy_id, ml.n, ml.lines)
                WHEN ms.n > 1 THEN format('legacy_id %s: the mapping gives subject %s to %s legacy accounts; none linked', l.legacy_id, ml.subject, ms.n)
            END
        WHEN e.nemail IS NULL THEN NULL
        WHEN e.nl + e.nold > 1 THEN format('legacy_id %s: email %s is shared by several legacy accounts; none linked, never merged', l.legacy_id, l.email)
        WHEN e.ni > 1 THEN format('legacy_id %s: %s identities have the verified email %s; none linked', l.legacy_id, e.ni, l.email)
        WHEN ms2.subject IS NOT NULL THEN format('legacy_id %s: identity %s has its email but the mapping gives it to legacy_id %s; not linked by email', l.legacy_id, e.subject, ms2.legacy_id)
    END AS problem,
    CASE
        WHEN ml.legacy_id IS NOT NULL THEN CASE WHEN ml.n = 1 AND ms.n = 1 THEN ml.subject END
        WHEN e.nl + e.nold = 1 AND e.ni = 1 AND ms2.subject IS NULL THEN e.subject
    END AS subject,
    CASE WHEN ml.legacy_id IS NOT NULL THEN 'mapping' ELSE 'email' END AS linked_by,
    CASE WHEN ml.legacy_id IS NOT NULL THEN CASE WHEN mi.verified THEN mi.email END ELSE e.email END AS iemail
FROM gpugate_import_legacy l
LEFT JOIN ml ON ml.legacy_id = l.legacy_id
LEFT JOIN ms ON ms.subject = ml.subject
LEFT JOIN gpugate_import_ident mi ON mi.subject = ml.subject
LEFT JOIN gpugate_import_email e ON ml.legacy_id IS NULL AND e.nemail = l.nemail
LEFT JOIN ms AS ms2 ON ms2.subject = e.subject`

const indexPlanSQL = `CREATE UNIQUE INDEX ON gpugate_import_plan (line); ANALYZE gpugate_import_plan`

// chunkSQL handles the next $3 legacy accounts of the plan after line $2, for issuer $1, in one
// statement: it creates their users (an existing user with the legacy_id is left as it is) and
// their links, checking what the database holds: an identity already linked to the same user is
// AlreadyLinked; linked to another user, a conflict (never re-pointed); a user already linked to
// another subject of this issuer, a conflict (never two accounts of one IdP on one user). A new
// user has no link yet, so only existing users are looked up. It returns, per outcome, the
// count and the first $4 details, with the users created and the last line handled.
const chunkSQL = `
WITH chunk AS MATERIALIZED (
    SELECT * FROM gpugate_import_plan WHERE line > $2 ORDER BY line LIMIT $3
), nu AS (
    INSERT INTO users (email, display_name, legacy_id)
    SELECT email, display_name, legacy_id FROM chunk WHERE NOT from_db ORDER BY line
    ON CONFLICT (legacy_id) DO NOTHING
    RETURNING id, legacy_id
), c AS (
    SELECT ch.line, ch.legacy_id, ch.subject, ch.iemail, ch.linked_by, ch.problem,
           nu.id IS NOT NULL AS new,
           coalesce(nu.id, (SELECT u.id FROM users u WHERE u.legacy_id = ch.legacy_id)) AS user_id
    FROM chunk ch LEFT JOIN nu ON nu.legacy_id = ch.legacy_id
), k AS (
    SELECT c.line, c.subject, c.user_id, c.iemail, c.linked_by,
        CASE WHEN NOT c.new THEN
            (SELECT ui.user_id FROM user_identities ui WHERE ui.issuer = $1 AND ui.subject = c.subject)
        END AS linked_to,
        CASE WHEN NOT c.new THEN
            (SELECT min(ui.subject) FROM user_identities ui WHERE ui.user_id = c.user_id AND ui.issuer = $1)
        END AS user_subject
    FROM c
    WHERE c.problem IS NULL AND c.subject IS NOT NULL
), ins AS (
    INSERT INTO user_identities (issuer, subject, user_id, email, linked_by)
    SELECT $1, k.subject, k.user_id, k.iemail, k.linked_by
    FROM k
    WHERE k.linked_to IS NULL AND k.user_subject IS NULL
    ORDER BY k.line
    ON CONFLICT DO NOTHING
    RETURNING subject
), o AS (
    SELECT c.line,
        CASE
            WHEN c.problem IS NOT NULL THEN 'conflict'
            WHEN c.subject IS NULL THEN
                CASE WHEN NOT c.new AND EXISTS (SELECT 1 FROM user_identities ui WHERE ui.user_id = c.user_id AND ui.issuer = $1)
                     THEN 'already' ELSE 'unmatched' END
            WHEN k.linked_to = c.user_id THEN 'already'
            WHEN ins.subject IS NOT NULL THEN 'linked'
            ELSE 'conflict'
        END AS outcome,
        CASE
            WHEN c.problem IS NOT NULL THEN c.problem
            WHEN c.subject IS NULL OR k.linked_to = c.user_id OR ins.subject IS NOT NULL THEN NULL
            WHEN k.linked_to IS NULL AND k.user_subject IS NOT NULL THEN
                format('legacy_id %s: its user is already linked to subject %s of this issuer; %s not linked (%s)', c.legacy_id, k.user_subject, c.subject, c.linked_by)
            ELSE coalesce(
                (SELECT format('legacy_id %s: identity %s is already linked to another user (%s); not re-pointed', c.legacy_id, c.subject, ui.user_id)
                 FROM user_identities ui WHERE ui.issuer = $1 AND ui.subject = c.subject),
                format('legacy_id %s: identity %s was linked by someone else during the import; rerun to see to whom', c.legacy_id, c.subject))
        END AS detail
    FROM c
    LEFT JOIN k ON k.line = c.line
    LEFT JOIN ins ON ins.subject = c.subject
)
SELECT outcome, count(*),
       coalesce((array_agg(detail ORDER BY line) FILTER (WHERE detail IS NOT NULL))[1:$4], '{}'),
       (SELECT count(*) FROM nu),
       (SELECT max(line) FROM chunk)
FROM o
GROUP BY outcome`
