package resolvers_test

// The schema's auth directives, the only place authorization is decided, called as gqlgen calls
// them (a field context carrying the arguments) over a real store, with the guard's audit
// records checked for every refusal.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/oidc"
	"github.com/gpugate/gpugate/resolvers"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

type env struct {
	t      *testing.T
	store  *db.DB
	r      *resolvers.Resolver
	audit  *bytes.Buffer
	owner  *oidc.Principal
	other  *oidc.Principal
	admin  *oidc.Principal
	device string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	e := &env{t: t, store: db.New(dbtest.New(t), db.Options{}), audit: &bytes.Buffer{}}
	g := guard.New(slog.New(slog.NewJSONHandler(e.audit, nil)))
	e.r = resolvers.New(e.store, g, map[model.Role]string{model.RoleAdmin: "gpugate-admins"}, resolvers.WorkerConfig{}, nil)
	e.owner = &oidc.Principal{Issuer: "https://issuer.test", Subject: "owner"}
	e.other = &oidc.Principal{Issuer: "https://issuer.test", Subject: "other", Roles: []string{"ADMIN"}}
	e.admin = &oidc.Principal{Issuer: "https://issuer.test", Subject: "admin", Roles: []string{"gpugate-admins"}}
	u, err := e.store.UserForIdentity(t.Context(), db.Identity{Issuer: e.owner.Issuer, Subject: e.owner.Subject})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.store.CreateEnrollmentToken(t.Context(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519Key()
	e.device, _, err = e.store.Enroll(t.Context(), db.Enrollment{Token: tok, PublicKey: pub, Region: "r",
		Snapshot: attest.Snapshot{GPUs: []attest.GPU{{UUID: "GPU-" + uuid.NewString(), PCIDeviceID: 0x2330, Name: "NVIDIA H100"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// field returns a context for resolving field (with arguments args) as principal p, signed by
// device (if not "").
func field(p *oidc.Principal, device, name string, args map[string]any) context.Context {
	ctx := oidc.NewContext(context.Background(), p)
	if device != "" {
		ctx = deviceauth.NewContext(ctx, deviceauth.Principal{DeviceID: device})
	}
	return graphql.WithFieldContext(ctx, &graphql.FieldContext{Args: args, Field: graphql.CollectedField{Field: &ast.Field{Name: name}}})
}

// next is the field resolver behind a directive: it counts its calls.
func next(calls *int) graphql.Resolver {
	return func(context.Context) (any, error) { *calls++; return "resolved", nil }
}

// denials returns the guard's denial records so far, as "op actor target reason", and forgets them.
func (e *env) denials() []string {
	e.t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(e.audit.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatal(err)
		}
		if m["msg"] == "write denied" || m["outcome"] == "FAILED" { // refusals, and failures a directive recorded
			out = append(out, strings.Join([]string{m["op"].(string), m["actor"].(string), m["target"].(string), m["reason"].(string)}, " "))
		}
	}
	e.audit.Reset()
	return out
}

func (e *env) userID(p *oidc.Principal) string {
	e.t.Helper()
	u, err := e.store.UserForIdentity(e.t.Context(), db.Identity{Issuer: p.Issuer, Subject: p.Subject})
	if err != nil {
		e.t.Fatal(err)
	}
	return u.ID
}

func TestOwnerDirectiveOnAMutation(t *testing.T) {
	e := newEnv(t)
	d := e.r.Directives()
	arg := "id"
	cases := []struct {
		name   string
		who    *oidc.Principal
		id     string
		kind   error
		denial string // "" for none
	}{
		{"anonymous", nil, e.device, oidc.ErrUnauthenticated, "updateDevice anonymous " + e.device + " UNAUTHENTICATED"},
		{"another user (an admin: roles do not make an owner)", e.other, e.device, db.ErrForbidden, "updateDevice user:" + e.userID(e.other) + " " + e.device + " FORBIDDEN"},
		{"unknown device", e.owner, "00000000-0000-4000-8000-000000000000", db.ErrNotFound, "updateDevice user:" + e.userID(e.owner) + " 00000000-0000-4000-8000-000000000000 NOT_FOUND"},
		{"not a device ID", e.owner, "x'; DROP TABLE devices; --", db.ErrInvalid, ""},
	}
	for _, c := range cases {
		calls := 0
		_, err := d.Owner(field(c.who, "", "updateDevice", map[string]any{"id": c.id}), nil, next(&calls), &arg)
		if !errors.Is(err, c.kind) || calls != 0 {
			t.Fatalf("%s: %v after %d calls, want %v and no call", c.name, err, calls, c.kind)
		}
		got := e.denials()
		if (c.denial == "" && len(got) != 0) || (c.denial != "" && (len(got) != 1 || got[0] != c.denial)) {
			t.Fatalf("%s: denials %q, want %q", c.name, got, c.denial)
		}
	}
	calls := 0
	if v, err := d.Owner(field(e.owner, "", "updateDevice", map[string]any{"id": strings.ToUpper(e.device)}), nil, next(&calls), &arg); err != nil || v != "resolved" || calls != 1 {
		t.Fatalf("the owner: %v %v after %d calls", v, err, calls)
	}
	// A removed device is nobody's.
	if err := e.store.RemoveDevice(t.Context(), e.device, e.userID(e.owner)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Owner(field(e.owner, "", "updateDevice", map[string]any{"id": e.device}), nil, next(&calls), &arg); !errors.Is(err, db.ErrNotFound) || calls != 1 {
		t.Fatalf("owner of a removed device: %v", err)
	}
}

// Without an argument, @owner guards a private field of the parent device: everyone but the
// owner reads null, with no error that would say whose device it is.
func TestOwnerDirectiveOnAPrivateField(t *testing.T) {
	e := newEnv(t)
	d := e.r.Directives()
	dev, err := e.store.Device(t.Context(), e.device)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []*oidc.Principal{nil, e.other, e.admin} {
		calls := 0
		v, err := d.Owner(field(who, "", "private", nil), &dev, next(&calls), nil)
		if v != nil || err != nil || calls != 0 {
			t.Fatalf("%v reads %v, %v (%d calls); want null and no error", who, v, err, calls)
		}
	}
	calls := 0
	if v, err := d.Owner(field(e.owner, "", "private", nil), &dev, next(&calls), nil); v != "resolved" || err != nil {
		t.Fatalf("the owner reads %v, %v", v, err)
	}
	if _, err := d.Owner(field(e.owner, "", "private", nil), "not a device", next(&calls), nil); err == nil {
		t.Fatal("@owner without arg on a non-device must fail")
	}
}

func TestHasRoleUsesTheConfiguredRoleName(t *testing.T) {
	e := newEnv(t)
	d := e.r.Directives()
	for _, c := range []struct {
		who  *oidc.Principal
		kind error
	}{
		{nil, oidc.ErrUnauthenticated},
		{e.owner, db.ErrForbidden},
		// "ADMIN" in the token is not the configured name "gpugate-admins".
		{e.other, db.ErrForbidden},
	} {
		calls := 0
		if _, err := d.HasRole(field(c.who, "", "quarantineDevice", nil), nil, next(&calls), model.RoleAdmin); !errors.Is(err, c.kind) || calls != 0 {
			t.Fatalf("%v: %v", c.who, err)
		}
	}
	if got := e.denials(); len(got) != 3 || got[2] != "quarantineDevice user:"+e.userID(e.other)+"  FORBIDDEN" {
		t.Fatalf("denials %q", got)
	}
	calls := 0
	if _, err := d.HasRole(field(e.admin, "", "quarantineDevice", nil), nil, next(&calls), model.RoleAdmin); err != nil || calls != 1 {
		t.Fatalf("admin: %v", err)
	}
	if _, err := d.Authenticated(field(nil, "", "me", nil), nil, next(&calls)); !errors.Is(err, oidc.ErrUnauthenticated) || calls != 1 {
		t.Fatalf("authenticated, anonymous: %v", err)
	}
	if _, err := d.Authenticated(field(e.owner, "", "me", nil), nil, next(&calls)); err != nil || calls != 2 {
		t.Fatalf("authenticated, signed in: %v", err)
	}
}

// @device admits only a request signed by the device the argument names; a user token,
// even the owner's, is not enough.
func TestDeviceDirective(t *testing.T) {
	e := newEnv(t)
	d := e.r.Directives()
	other := uuid.NewString()
	for _, c := range []struct {
		name   string
		who    *oidc.Principal
		signer string
		kind   error
		denial string
	}{
		{"unsigned", nil, "", deviceauth.ErrUnauthenticated, "heartbeat anonymous " + e.device + " UNAUTHENTICATED"},
		{"the owner's token only", e.owner, "", deviceauth.ErrUnauthenticated, "heartbeat anonymous " + e.device + " UNAUTHENTICATED"},
		{"signed by another device", nil, other, db.ErrForbidden, "heartbeat device:" + other + " " + e.device + " FORBIDDEN"},
	} {
		calls := 0
		_, err := d.Device(field(c.who, c.signer, "heartbeat", map[string]any{"deviceId": e.device}), nil, next(&calls), "deviceId")
		if !errors.Is(err, c.kind) || calls != 0 {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := e.denials(); len(got) != 1 || got[0] != c.denial {
			t.Fatalf("%s: denials %q, want %q", c.name, got, c.denial)
		}
	}
	calls := 0
	if _, err := d.Device(field(nil, e.device, "heartbeat", map[string]any{"deviceId": "nope"}), nil, next(&calls), "deviceId"); !errors.Is(err, db.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := d.Device(field(nil, e.device, "heartbeat", map[string]any{"deviceId": e.device}), nil, next(&calls), "deviceId"); err != nil || calls != 1 {
		t.Fatalf("signed by the device: %v", err)
	}
}

func ed25519Key() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}
