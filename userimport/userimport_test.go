package userimport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

const issuer = "https://idp.example.com/"

// link is one user_identities row, seen through its user's legacy_id.
type link struct {
	LegacyID string `db:"legacy_id"`
	Subject  string `db:"subject"`
	LinkedBy string `db:"linked_by"`
	Email    string `db:"email"`
}

func links(t *testing.T, x *sqlx.DB) []link {
	t.Helper()
	var out []link
	err := x.Select(&out, `
SELECT coalesce(u.legacy_id, '(id:' || u.id || ')') AS legacy_id, ui.subject, ui.linked_by, coalesce(ui.email, '') AS email
FROM user_identities ui JOIN users u ON u.id = ui.user_id
WHERE ui.issuer = $1
ORDER BY u.legacy_id COLLATE "C", ui.subject COLLATE "C"`, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type legacyUser struct {
	LegacyID    string `db:"legacy_id"`
	Email       string `db:"email"`
	DisplayName string `db:"display_name"`
}

func legacyUsers(t *testing.T, x *sqlx.DB) []legacyUser {
	t.Helper()
	var out []legacyUser
	err := x.Select(&out, `SELECT legacy_id, coalesce(email, '') AS email, display_name FROM users
WHERE legacy_id IS NOT NULL ORDER BY legacy_id COLLATE "C"`)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func count(t *testing.T, x *sqlx.DB, table string) int {
	t.Helper()
	var n int
	q := map[string]string{
		"users":           `SELECT count(*) FROM users`,
		"user_identities": `SELECT count(*) FROM user_identities`,
	}[table]
	if err := x.Get(&n, q); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustRun(t *testing.T, x *sqlx.DB, o Options) Summary {
	t.Helper()
	if o.Issuer == "" {
		o.Issuer = issuer
	}
	s, err := Run(context.Background(), x, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("summary:\n%s", s)
	return s
}

func csvOf(lines ...string) *strings.Reader {
	return strings.NewReader(strings.Join(lines, "\n") + "\n")
}

// counts compares the four outcome counters.
func wantCounts(t *testing.T, s Summary, linked, already, unmatched, conflicts int) {
	t.Helper()
	got := [4]int{s.Linked, s.AlreadyLinked, s.Unmatched, s.Conflicts}
	want := [4]int{linked, already, unmatched, conflicts}
	if got != want {
		t.Errorf("linked/already/unmatched/conflicts = %v, want %v\n%s", got, want, s)
	}
}

func TestLinkByVerifiedEmail(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	s := mustRun(t, x, Options{
		LegacyCSV:     csvOf("legacy_id,email,display_name", "a1,alice@example.com,Alice", "a2,bob@example.com,Bob"),
		IdentitiesCSV: csvOf("subject,email,email_verified", "auth0|1,alice@example.com,true", "auth0|3,carol@example.com,true"),
	})
	wantCounts(t, s, 1, 0, 1, 0)
	if s.Legacy != 2 || s.UsersCreated != 2 || s.Identities != 2 || s.UnmatchedIdentities != 1 || s.UnverifiedIdentities != 0 {
		t.Errorf("summary = %+v", s)
	}
	want := []link{{"a1", "auth0|1", "email", "alice@example.com"}}
	if got := links(t, x); !reflect.DeepEqual(got, want) {
		t.Errorf("links = %v, want %v", got, want)
	}
	wantUsers := []legacyUser{{"a1", "alice@example.com", "Alice"}, {"a2", "bob@example.com", "Bob"}}
	if got := legacyUsers(t, x); !reflect.DeepEqual(got, wantUsers) {
		t.Errorf("users = %v, want %v", got, wantUsers)
	}
	// new users get time-ordered ids (UUID version 7, RFC 9562 variant), in input order
	var ids []string
	if err := x.Select(&ids, `SELECT id::text FROM users ORDER BY legacy_id`); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if len(id) != 36 || id[14] != '7' || id[19] != '8' {
			t.Errorf("user id %s: want a version 7 UUID", id)
		}
	}
	if len(ids) == 2 && ids[0] >= ids[1] {
		t.Errorf("user ids %v: want them increasing in input order", ids)
	}
	// the staging tables are gone
	var left int
	if err := x.Get(&left, `SELECT count(*) FROM pg_class WHERE relname LIKE 'gpugate\_import\_%'`); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d staging tables or indexes left behind", left)
	}
}

func TestUnverifiedEmailNotLinked(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	s := mustRun(t, x, Options{
		LegacyCSV:     csvOf("legacy_id,email", "a1,alice@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified", "auth0|1,alice@example.com,false"),
	})
	wantCounts(t, s, 0, 0, 1, 0)
	if s.UnverifiedIdentities != 1 {
		t.Errorf("UnverifiedIdentities = %d, want 1", s.UnverifiedIdentities)
	}
	if got := links(t, x); len(got) != 0 {
		t.Errorf("links = %v, want none", got)
	}
	if n := count(t, x, "users"); n != 1 {
		t.Errorf("users = %d, want 1 (the legacy account exists, unlinked)", n)
	}
}

func TestEmailMatchIgnoresCaseAndSpace(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	s := mustRun(t, x, Options{
		LegacyCSV:     csvOf("Email , LEGACY_ID", `"  Alice@Example.COM ",a1`, "\tBOB@example.com\t,a2"),
		IdentitiesCSV: csvOf("email_verified,subject,email,name", `TRUE,auth0|1,alice@example.com  ,x`, `1,auth0|2, bob@EXAMPLE.com,y`),
	})
	wantCounts(t, s, 2, 0, 0, 0)
	want := []link{{"a1", "auth0|1", "email", "alice@example.com"}, {"a2", "auth0|2", "email", "bob@EXAMPLE.com"}}
	if got := links(t, x); !reflect.DeepEqual(got, want) {
		t.Errorf("links = %v, want %v", got, want)
	}
	// the legacy email is kept as written, trimmed
	wantUsers := []legacyUser{{"a1", "Alice@Example.COM", ""}, {"a2", "BOB@example.com", ""}}
	if got := legacyUsers(t, x); !reflect.DeepEqual(got, wantUsers) {
		t.Errorf("users = %v, want %v", got, wantUsers)
	}
}

func TestSharedEmailIsAConflictNeverAMerge(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	s := mustRun(t, x, Options{
		LegacyCSV: csvOf("legacy_id,email",
			"a1,alice@example.com", "a2,ALICE@example.com ", // one email, two accounts
			"b1,bob@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified",
			"auth0|1,alice@example.com,true",
			"auth0|2,bob@example.com,true", "auth0|3,Bob@example.com,true"), // one email, two identities
	})
	wantCounts(t, s, 0, 0, 0, 3)
	if got := links(t, x); len(got) != 0 {
		t.Errorf("links = %v, want none", got)
	}
	if n := count(t, x, "users"); n != 3 {
		t.Errorf("users = %d, want 3 (never merged)", n)
	}
	joined := strings.Join(s.ConflictDetails, "\n")
	for _, want := range []string{"legacy_id a1: email", "legacy_id a2: email", "legacy_id b1: 2 identities"} {
		if !strings.Contains(joined, want) {
			t.Errorf("conflict details lack %q:\n%s", want, joined)
		}
	}

	// A later import whose account shares an email with an account imported earlier: conflict.
	s = mustRun(t, x, Options{
		LegacyCSV:     csvOf("legacy_id,email", "c1,bob@example.com", "d1,dave@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified", "auth0|2,bob@example.com,true", "auth0|4,dave@example.com,true"),
	})
	wantCounts(t, s, 1, 0, 0, 1)
	if len(s.ConflictDetails) != 1 || !strings.Contains(s.ConflictDetails[0], "legacy_id c1: email bob@example.com is shared") {
		t.Errorf("details = %q", s.ConflictDetails)
	}
}

func TestExistingLinkIsNeverRepointed(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	// Before the import: someone logged in as auth0|1 and got a fresh user; legacy b1 was
	// imported and linked to auth0|9.
	var other, b1 string
	if err := x.Get(&other, `INSERT INTO users (email) VALUES ('alice@example.com') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if err := x.Get(&b1, `INSERT INTO users (email, legacy_id) VALUES ('bob@example.com', 'b1') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	x.MustExec(`INSERT INTO user_identities (issuer, subject, user_id, email, linked_by) VALUES
		($1, 'auth0|1', $2, 'alice@example.com', 'login'), ($1, 'auth0|9', $3, 'bob@example.com', 'login')`, issuer, other, b1)

	s := mustRun(t, x, Options{
		LegacyCSV: csvOf("legacy_id,email", "a1,alice@example.com", "b1,bob@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified",
			"auth0|1,alice@example.com,true", // already another user's
			"auth0|2,bob@example.com,true"),  // b1 already has auth0|9 at this issuer
	})
	wantCounts(t, s, 0, 0, 0, 2)
	joined := strings.Join(s.ConflictDetails, "\n")
	for _, want := range []string{
		"legacy_id a1: identity auth0|1 is already linked to another user (" + other + "); not re-pointed",
		"legacy_id b1: its user is already linked to subject auth0|9 of this issuer; auth0|2 not linked",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("conflict details lack %q:\n%s", want, joined)
		}
	}
	var owner, by string
	if err := x.QueryRow(`SELECT user_id, linked_by FROM user_identities WHERE issuer = $1 AND subject = 'auth0|1'`, issuer).Scan(&owner, &by); err != nil {
		t.Fatal(err)
	}
	if owner != other || by != "login" {
		t.Errorf("auth0|1 now -> %s (%s), want unchanged %s (login)", owner, by, other)
	}
	if n := count(t, x, "user_identities"); n != 2 {
		t.Errorf("user_identities = %d, want 2 (unchanged)", n)
	}
}

func TestMapping(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	s := mustRun(t, x, Options{
		LegacyCSV: csvOf("legacy_id,email",
			"a1,alice@example.com", "a2,", "a3,carol@example.com", "a4,dan@example.com",
			"a5,erin@example.com", "a6,frank@example.com", "a7,gina@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified",
			"okta|1,alice@corp.example,true", // mapped to a1: linked whatever its email
			"okta|5,gina@example.com,true",   // has a7's email, but the mapping gives it to a5
			"okta|9,carol@example.com,false"),
		MappingCSV: csvOf("legacy_id,subject",
			"a1,okta|1",
			"a2,okta|2",
			"a2,okta|2",  // an identical repeat is harmless
			"zz,okta|3",  // line 5: unknown legacy_id
			"a4,okta|4a", // a4 mapped twice
			"a4,okta|4b",
			"a5,okta|5",
			"a6,okta|6", // okta|6 given to two accounts
			"a3,okta|6"),
	})
	// linked: a1, a2, a5; conflicts: zz, a4, a6, a3, a7
	wantCounts(t, s, 3, 0, 0, 5)
	want := []link{
		{"a1", "okta|1", "mapping", "alice@corp.example"},
		{"a2", "okta|2", "mapping", ""},
		{"a5", "okta|5", "mapping", "gina@example.com"},
	}
	if got := links(t, x); !reflect.DeepEqual(got, want) {
		t.Errorf("links = %v, want %v", got, want)
	}
	joined := strings.Join(s.ConflictDetails, "\n")
	for _, want := range []string{
		"mapping line 5: legacy_id zz is neither a legacy account",
		"legacy_id a4: the mapping gives it 2 subjects (mapping lines 6, 7)",
		"legacy_id a3: the mapping gives subject okta|6 to 2 legacy accounts",
		"legacy_id a6: the mapping gives subject okta|6 to 2 legacy accounts",
		"legacy_id a7: identity okta|5 has its email but the mapping gives it to legacy_id a5",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("conflict details lack %q:\n%s", want, joined)
		}
	}
	if s.UnverifiedIdentities != 1 {
		t.Errorf("UnverifiedIdentities = %d, want 1", s.UnverifiedIdentities)
	}

	// A mapping alone, after the import: it names existing users by legacy_id.
	s = mustRun(t, x, Options{MappingCSV: csvOf("legacy_id,subject", "a7,okta|7", "a1,okta|1")})
	wantCounts(t, s, 1, 1, 0, 0)
	if s.UsersCreated != 0 || s.Legacy != 2 {
		t.Errorf("summary = %+v", s)
	}
}

func TestLegacyTable(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	x.MustExec(`CREATE SCHEMA legacy;
CREATE TABLE legacy.accounts (legacy_id integer PRIMARY KEY, email varchar(200), display_name text, extra text);
INSERT INTO legacy.accounts VALUES (1, ' Alice@Example.com', 'Alice', 'x'), (2, 'bob@example.com', NULL, 'y'), (3, NULL, 'Nobody', 'z');
CREATE TABLE plain (legacy_id text, email text);
INSERT INTO plain VALUES ('p1', 'pat@example.com');`)
	ids := csvOf("subject,email,email_verified", "s1,alice@example.com,true", "s2,bob@example.com,true", "s3,pat@example.com,true")
	s := mustRun(t, x, Options{LegacyTable: "legacy.accounts", IdentitiesCSV: ids})
	wantCounts(t, s, 2, 0, 1, 0)
	want := []link{{"1", "s1", "email", "alice@example.com"}, {"2", "s2", "email", "bob@example.com"}}
	if got := links(t, x); !reflect.DeepEqual(got, want) {
		t.Errorf("links = %v, want %v", got, want)
	}
	wantUsers := []legacyUser{{"1", "Alice@Example.com", "Alice"}, {"2", "bob@example.com", ""}, {"3", "", "Nobody"}}
	if got := legacyUsers(t, x); !reflect.DeepEqual(got, wantUsers) {
		t.Errorf("users = %v, want %v", got, wantUsers)
	}

	// unqualified name, no display_name column
	s = mustRun(t, x, Options{LegacyTable: "plain", IdentitiesCSV: csvOf("subject,email,email_verified", "s3,pat@example.com,true")})
	wantCounts(t, s, 1, 0, 0, 0)

	// names that are not plain identifiers never reach SQL
	for _, bad := range []string{"legacy.accounts; DROP TABLE users", "Legacy.Accounts", `a"b`, "a.b.c", "1abc", "", "gpugate_import_legacy", "users--"} {
		_, err := Run(context.Background(), x, Options{Issuer: issuer, LegacyTable: bad, IdentitiesCSV: csvOf("subject,email,email_verified")})
		if err == nil {
			t.Errorf("LegacyTable %q: no error", bad)
		}
	}
	_, err := Run(context.Background(), x, Options{Issuer: issuer, LegacyTable: "legacy.missing", IdentitiesCSV: csvOf("subject,email,email_verified")})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing table: err = %v", err)
	}
	x.MustExec(`CREATE TABLE dup (legacy_id text, email text); INSERT INTO dup VALUES ('d', 'x'), ('d', 'y'), (' ', 'z')`)
	_, err = Run(context.Background(), x, Options{Issuer: issuer, LegacyTable: "dup", IdentitiesCSV: csvOf("subject,email,email_verified")})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "empty legacy_id") {
		t.Errorf("table with an empty legacy_id: err = %v", err)
	}
	x.MustExec(`DELETE FROM dup WHERE legacy_id = ' '`)
	_, err = Run(context.Background(), x, Options{Issuer: issuer, LegacyTable: "dup", IdentitiesCSV: csvOf("subject,email,email_verified")})
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), `legacy_id "d" appears 2 times`) {
		t.Errorf("table with a duplicate: err = %v", err)
	}
}

// population builds n legacy accounts and their IdP export: most match by verified email (in
// another case), every 10th identity is unverified, every 25th legacy account has no identity,
// every 50th pair of accounts shares an email.
func population(n int) (legacy, idents string) {
	var l, i strings.Builder
	l.WriteString("legacy_id,email,display_name\n")
	i.WriteString("subject,email,email_verified\n")
	for k := range n {
		email := fmt.Sprintf("user%d@example.com", k)
		if k%50 == 1 {
			email = fmt.Sprintf("user%d@example.com", k-1)
		}
		fmt.Fprintf(&l, "L%07d,%s,User %d\n", k, email, k)
		if k%25 == 7 {
			continue
		}
		fmt.Fprintf(&i, "idp|%d,%s,%t\n", k, strings.ToUpper(email[:1])+email[1:], k%10 != 3)
	}
	return l.String(), i.String()
}

func TestIdempotentRerun(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	legacy, idents := population(1000)
	opts := func() Options {
		return Options{LegacyCSV: strings.NewReader(legacy), IdentitiesCSV: strings.NewReader(idents), ChunkSize: 300}
	}
	first := mustRun(t, x, opts())
	if first.Linked == 0 || first.Unmatched == 0 || first.Conflicts == 0 {
		t.Fatalf("the population should exercise every outcome: %+v", first)
	}
	if first.Linked+first.Unmatched+first.Conflicts != 1000 || first.UsersCreated != 1000 {
		t.Errorf("first run: %+v", first)
	}
	usersBefore, linksBefore := legacyUsers(t, x), links(t, x)
	nUsers, nLinks := count(t, x, "users"), count(t, x, "user_identities")

	second := mustRun(t, x, opts())
	wantCounts(t, second, 0, first.Linked, first.Unmatched, first.Conflicts)
	if second.UsersCreated != 0 {
		t.Errorf("second run created %d users", second.UsersCreated)
	}
	if !slices.Equal(second.ConflictDetails, first.ConflictDetails) {
		t.Errorf("conflicts changed:\n%q\n%q", first.ConflictDetails, second.ConflictDetails)
	}
	if count(t, x, "users") != nUsers || count(t, x, "user_identities") != nLinks {
		t.Error("row counts changed")
	}
	if !reflect.DeepEqual(legacyUsers(t, x), usersBefore) || !reflect.DeepEqual(links(t, x), linksBefore) {
		t.Error("rows changed")
	}
}

func TestInterruptedRunResumes(t *testing.T) {
	t.Parallel()
	legacy, idents := population(1000)
	opts := func() Options {
		return Options{Issuer: issuer, LegacyCSV: strings.NewReader(legacy), IdentitiesCSV: strings.NewReader(idents), ChunkSize: 300}
	}

	ref := dbtest.New(t)
	full := mustRun(t, ref, opts())

	x := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := opts()
	o.Progress = func(done, total int) {
		if done > 0 {
			cancel() // after the first chunk's commit
		}
	}
	partial, err := Run(ctx, x, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: err = %v, want context.Canceled", err)
	}
	// the chunks in flight when the context is cancelled may commit too (Parallel = 2)
	if n := count(t, x, "users"); n != partial.UsersCreated || n%300 != 0 || n == 0 || n == 1000 {
		t.Errorf("interrupted run: summary %+v, %d users; want whole chunks of 300, not all", partial, n)
	}
	if got := links(t, x); len(got) != partial.Linked {
		t.Errorf("interrupted run: %d links, summary says %d", len(got), partial.Linked)
	}

	rest := mustRun(t, x, opts())
	if rest.Linked+partial.Linked != full.Linked || rest.AlreadyLinked != partial.Linked ||
		rest.Unmatched != full.Unmatched || rest.Conflicts != full.Conflicts || rest.UsersCreated != 1000-partial.UsersCreated {
		t.Errorf("resumed run: %+v\npartial: %+v\nfull: %+v", rest, partial, full)
	}
	if !reflect.DeepEqual(links(t, x), links(t, ref)) || !reflect.DeepEqual(legacyUsers(t, x), legacyUsers(t, ref)) {
		t.Error("the resumed import does not end in the state of an uninterrupted one")
	}
}

func TestMalformedInput(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	long := strings.Repeat("x", 256)
	ok := "subject,email,email_verified\ns1,a@example.com,true\n"
	cases := []struct {
		name, legacy, idents, mapping string
		want                          []string // substrings of the error
	}{
		{"wrong column count", "legacy_id,email\na1,a@x\na2,b@x,extra\na3\n", ok, "",
			[]string{"legacy CSV line 3: 3 columns, the header has 2", "legacy CSV line 4: 1 columns"}},
		{"empty legacy_id", "legacy_id,email\n  ,a@x\n", ok, "", []string{"legacy CSV line 2: empty legacy_id"}},
		{"long legacy_id", "legacy_id,email\n" + long + ",a@x\n", ok, "", []string{"line 2: legacy_id is 256 characters long (at most 255)"}},
		{"invalid UTF-8", "legacy_id,email\na1,\xff\xfe@x\n", ok, "", []string{"legacy CSV line 2: column 2 is not valid UTF-8"}},
		{"NUL byte", "legacy_id,email\na\x001,a@x\n", ok, "", []string{"line 2: column 1 contains a NUL byte"}},
		{"missing column", "id,email\n1,a@x\n", ok, "", []string{"the header lacks column(s) legacy_id"}},
		{"empty file", "", ok, "", []string{"legacy CSV: empty file"}},
		{"bare quote", "legacy_id,email\na1,a@x\na\"2,b@x\n", ok, "", []string{"legacy CSV line 3: bare \" in non-quoted-field"}},
		{"duplicate legacy_id", "legacy_id,email\na1,a@x\na2,b@x\na1,c@x\n", ok, "", []string{`legacy_id "a1" appears 2 times (lines 2, 4)`}},
		{"duplicate subject", "legacy_id,email\na1,a@x\n", "subject,email,email_verified\ns1,a@x,true\ns1,b@x,false\n", "",
			[]string{`identities CSV: subject "s1" appears 2 times (lines 2, 3)`}},
		{"bad email_verified", "legacy_id,email\na1,a@x\n", "subject,email,email_verified\ns1,a@x,maybe\n", "",
			[]string{`identities CSV line 2: email_verified is "maybe"`}},
		{"long subject", "legacy_id,email\na1,a@x\n", "subject,email,email_verified\n" + long + ",a@x,true\n", "",
			[]string{"identities CSV line 2: subject is 256 characters long"}},
		{"empty mapping subject", "legacy_id,email\na1,a@x\n", "", "legacy_id,subject\na1,\n", []string{"mapping CSV line 2: empty subject"}},
		{"many problems", "legacy_id,email\n" + strings.Repeat(",x\n", 50), ok, "", []string{"10 problems; reading stops at an input's 10th", "line 11: empty legacy_id"}},
	}
	for _, c := range cases {
		o := Options{Issuer: issuer, LegacyCSV: strings.NewReader(c.legacy)}
		if c.idents != "" {
			o.IdentitiesCSV = strings.NewReader(c.idents)
		}
		if c.mapping != "" {
			o.MappingCSV = strings.NewReader(c.mapping)
		}
		_, err := Run(context.Background(), x, o)
		var ie *InputError
		if !errors.As(err, &ie) {
			t.Errorf("%s: err = %v, want an *InputError", c.name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", c.name, w, err)
			}
		}
	}
	if n := count(t, x, "users"); n != 0 {
		t.Errorf("malformed inputs wrote %d users", n)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	l := func() *strings.Reader { return csvOf("legacy_id,email") }
	for name, o := range map[string]Options{
		"no issuer":      {LegacyCSV: l(), IdentitiesCSV: l()},
		"issuer not URL": {Issuer: "idp.example.com", LegacyCSV: l(), IdentitiesCSV: l()},
		"two legacy":     {Issuer: issuer, LegacyCSV: l(), LegacyTable: "t", IdentitiesCSV: l()},
		"no legacy":      {Issuer: issuer, IdentitiesCSV: l()},
		"no identities":  {Issuer: issuer, LegacyCSV: l()},
	} {
		if _, err := Run(context.Background(), x, o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestOneImportAtATime(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	conn, err := x.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_lock($1)`, advisoryLockKey); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), x, Options{Issuer: issuer, LegacyCSV: csvOf("legacy_id,email"), MappingCSV: csvOf("legacy_id,subject")})
	if err == nil || !strings.Contains(err.Error(), "another import is running") {
		t.Errorf("err = %v", err)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	clock := time.Unix(0, 0)
	now := func() time.Time { return clock }
	var b strings.Builder
	p := newProgress(&b, false, now)
	p(0, 100)
	clock = clock.Add(time.Second)
	p(50, 100) // throttled: within 5s
	clock = clock.Add(5 * time.Second)
	p(60, 100)
	p(100, 100)
	p(100, 100) // after the end: nothing
	want := "users import: 0/100 legacy accounts (0%), 0s\n" +
		"users import: 60/100 legacy accounts (60%), 6s\n" +
		"users import: 100/100 legacy accounts (100%), 6s\n"
	if b.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	p = newProgress(&b, true, now)
	p(0, 4)
	clock = clock.Add(time.Second)
	p(1, 4)
	p(4, 4)
	want = "\r[>                             ]   0%  0/4  0s" +
		"\r[=======>                      ]  25%  1/4  1s" +
		"\r[==============================] 100%  4/4  1s\n"
	if b.String() != want {
		t.Errorf("terminal progress:\n%q\nwant:\n%q", b.String(), want)
	}

	// NewProgressBar on something that is not a terminal writes plain lines
	b.Reset()
	NewProgressBar(&b)(1, 1)
	if !strings.HasPrefix(b.String(), "users import: 1/1") {
		t.Errorf("NewProgressBar(non-terminal) wrote %q", b.String())
	}
}

func TestConnectionPoolLimits(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	// leftovers of a killed import are dropped first
	x.MustExec(`CREATE UNLOGGED TABLE gpugate_import_plan (junk int)`)
	opts := func() Options {
		return Options{Issuer: issuer, LegacyCSV: csvOf("legacy_id,email", "a1,a@example.com", "a2,b@example.com"),
			IdentitiesCSV: csvOf("subject,email,email_verified", "s1,a@example.com,true", "s2,b@example.com,true"), ChunkSize: 1}
	}
	x.SetMaxOpenConns(1)
	if _, err := Run(context.Background(), x, opts()); err == nil || !strings.Contains(err.Error(), "at least 2 connections") {
		t.Errorf("pool of 1: err = %v", err)
	}
	x.SetMaxOpenConns(2) // one for the lock and the plan, one linking
	s, err := Run(context.Background(), x, opts())
	if err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, 2, 0, 0, 0)
}

// cancelReader cancels a context once it has been read from.
type cancelReader struct {
	r      *strings.Reader
	cancel context.CancelFunc
}

func (c cancelReader) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p[:min(len(p), 16)])
}

func TestCancelWhileLoading(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	legacy, idents := population(2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Run(ctx, x, Options{Issuer: issuer, LegacyCSV: cancelReader{strings.NewReader(legacy), cancel}, IdentitiesCSV: strings.NewReader(idents)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	var left int
	if err := x.Get(&left, `SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM pg_class WHERE relname LIKE 'gpugate\_import\_%')`); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("a cancelled load left %d users or staging tables", left)
	}
}

func TestProblemsOfEveryInputTogether(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	_, err := Run(context.Background(), x, Options{Issuer: issuer,
		LegacyCSV:     csvOf("legacy_id,email", ",a@example.com"),
		IdentitiesCSV: csvOf("subject,email,email_verified", "s1,a@example.com,perhaps")})
	var ie *InputError
	if !errors.As(err, &ie) || len(ie.Problems) != 2 {
		t.Fatalf("err = %v, want both inputs' problems", err)
	}
	t.Log(err)
}
