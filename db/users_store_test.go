package db_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/gpugate/gpugate/db"
)

func TestUserForIdentity(t *testing.T) {
	f := newFixture(t)
	for _, bad := range []db.Identity{
		{Issuer: "", Subject: "s"},
		{Issuer: "https://i", Subject: ""},
		{Issuer: strings.Repeat("i", 513), Subject: "s"},
		{Issuer: "https://i", Subject: strings.Repeat("s", 256)},
	} {
		_, err := f.store.UserForIdentity(f.ctx, bad)
		wantKind(t, "unusable identity", err, db.ErrInvalid)
	}
	if n := scalar[int](f, `SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("refused identities created %d users", n)
	}

	id := db.Identity{Issuer: "https://issuer.test", Subject: "alice", Email: "alice@example.test", Name: strings.Repeat("é", 200)}
	u, err := f.store.UserForIdentity(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Email == nil || *u.Email != "alice@example.test" || u.DisplayName != strings.Repeat("é", 128) {
		t.Fatalf("new user = %+v (email %v), want the token's email and the name cut to 128 characters", u, u.Email)
	}
	if linked := scalar[string](f, `SELECT linked_by FROM user_identities WHERE issuer = $1 AND subject = $2`, id.Issuer, id.Subject); linked != "login" {
		t.Fatalf("linked_by = %q, want login", linked)
	}
	// The same identity is the same user, whatever its claims say now.
	again, err := f.store.UserForIdentity(f.ctx, db.Identity{Issuer: id.Issuer, Subject: id.Subject, Email: "other@example.test"})
	if err != nil || again.ID != u.ID {
		t.Fatalf("second login = %+v, %v; want user %s", again, err, u.ID)
	}
	// Another subject of the same issuer, or the same subject at another issuer, is a new user:
	// nothing is merged by email.
	for _, other := range []db.Identity{
		{Issuer: id.Issuer, Subject: "alice2", Email: "alice@example.test"},
		{Issuer: "https://other.test", Subject: "alice", Email: "alice@example.test"},
	} {
		o, err := f.store.UserForIdentity(f.ctx, other)
		if err != nil || o.ID == u.ID {
			t.Fatalf("%+v: user %s, %v; want a new user", other, o.ID, err)
		}
	}
	noEmail, err := f.store.UserForIdentity(f.ctx, db.Identity{Issuer: id.Issuer, Subject: "no-email"})
	if err != nil || noEmail.Email != nil {
		t.Fatalf("identity without email: %+v, %v; want a nil email", noEmail, err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM users`); n != 4 {
		t.Fatalf("%d users, want 4", n)
	}
}

// N first requests of one identity at once create exactly one user.
func TestUserForIdentityConcurrentFirstLogin(t *testing.T) {
	f := newFixture(t)
	const n = 12
	id := db.Identity{Issuer: "https://issuer.test", Subject: "racer", Email: "racer@example.test"}
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			u, err := f.store.UserForIdentity(f.ctx, id)
			ids[i], errs[i] = u.ID, err
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("login %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("login %d got user %s, login 0 got %s", i, ids[i], ids[0])
		}
	}
	if users := scalar[int](f, `SELECT count(*) FROM users`); users != 1 {
		t.Fatalf("%d users for one identity", users)
	}
}

func TestLinkIdentity(t *testing.T) {
	f := newFixture(t)
	alice := must[db.User](t, "alice")(f.store.UserForIdentity(f.ctx, db.Identity{Issuer: "https://a", Subject: "1", Email: "Alice@Example.test"}))
	bob := must[db.User](t, "bob")(f.store.UserForIdentity(f.ctx, db.Identity{Issuer: "https://a", Subject: "2", Email: "bob@example.test"}))
	dev := db.Identity{Issuer: "https://dev", Subject: "alice"}

	wantKind(t, "link to an unknown email", f.store.LinkIdentity(f.ctx, dev, "nobody@example.test", "dev"), db.ErrNotFound)
	if err := f.store.LinkIdentity(f.ctx, dev, "alice@EXAMPLE.test", "dev"); err != nil {
		t.Fatalf("link: %v", err)
	}
	u, err := f.store.UserForIdentity(f.ctx, dev)
	if err != nil || u.ID != alice.ID {
		t.Fatalf("linked identity logs in as %s (%v), want alice %s", u.ID, err, alice.ID)
	}
	// An existing link is never moved.
	if err := f.store.LinkIdentity(f.ctx, dev, "bob@example.test", "dev"); err != nil {
		t.Fatalf("relink: %v", err)
	}
	if u, _ := f.store.UserForIdentity(f.ctx, dev); u.ID != alice.ID || u.ID == bob.ID {
		t.Fatalf("relinking moved the identity to %s", u.ID)
	}
	if by := scalar[string](f, `SELECT linked_by FROM user_identities WHERE issuer = 'https://dev'`); by != "dev" {
		t.Fatalf("linked_by = %q", by)
	}
	// linkedBy is checked by the schema: an unknown value is invalid input, not a driver error.
	err = f.store.LinkIdentity(f.ctx, db.Identity{Issuer: "https://dev", Subject: "x"}, "bob@example.test", "bogus")
	wantKind(t, "unknown linked_by", err, db.ErrInvalid)
}

// A dev-mode link and the identity's first login race: whoever wins, the identity ends with one
// user, every login that succeeds gets it, and no orphan user is left behind.
func TestLinkIdentityRacingFirstLogin(t *testing.T) {
	f := newFixture(t)
	alice := must[db.User](t, "alice")(f.store.UserForIdentity(f.ctx, db.Identity{Issuer: "https://a", Subject: "1", Email: "alice@example.test"}))
	for round := range 8 {
		id := db.Identity{Issuer: "https://dev", Subject: "alice-" + uuid.NewString()}
		const logins = 4
		got := make([]string, logins)
		errs := make([]error, logins+1)
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() { <-start; errs[logins] = f.store.LinkIdentity(f.ctx, id, "alice@example.test", "dev") })
		for i := range logins {
			wg.Go(func() {
				<-start
				u, err := f.store.UserForIdentity(f.ctx, id)
				got[i], errs[i] = u.ID, err
			})
		}
		close(start)
		wg.Wait()
		if errs[logins] != nil {
			t.Fatalf("round %d: link: %v", round, errs[logins])
		}
		owner := scalar[string](f, `SELECT user_id::text FROM user_identities WHERE issuer = $1 AND subject = $2`, id.Issuer, id.Subject)
		for i := range logins {
			if errs[i] != nil {
				// Until UserForIdentity deferred to a concurrent link, a login losing the
				// race answered CONFLICT ("provision user: conflict").
				t.Errorf("round %d: login %d failed while a link raced it: %v", round, i, errs[i])
				continue
			}
			if got[i] != owner {
				t.Fatalf("round %d: login %d got user %s, the identity belongs to %s", round, i, got[i], owner)
			}
		}
		// Orphans: users without any identity (the link's target alice has one).
		if orphans := scalar[int](f, `SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM user_identities i WHERE i.user_id = u.id)`); orphans != 0 {
			t.Fatalf("round %d: %d users without an identity", round, orphans)
		}
	}
	_ = alice
}
