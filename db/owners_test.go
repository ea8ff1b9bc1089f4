package db_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// Ownership is enforced in the SQL of every write, so a resolver that forgot its directive still
// cannot touch another owner's device.
func TestWritesAreScopedToTheOwnerInSQL(t *testing.T) {
	t.Parallel()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	ctx := context.Background()
	if _, err := store.Seed(ctx, 30); err != nil {
		t.Fatal(err)
	}
	var device, owner, other string
	if err := x.QueryRow(`SELECT d.id, d.owner_id, (SELECT id FROM users WHERE id <> d.owner_id LIMIT 1)
		FROM devices d LIMIT 1`).Scan(&device, &owner, &other); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var s string
		if err := x.Get(&s, `SELECT coalesce((SELECT row_to_json(d)::text FROM devices d WHERE id = $1), 'absent')`, device); err != nil {
			t.Fatal(err)
		}
		return s
	}
	name := "vandalised"
	writes := map[string]func() error{
		"update": func() error {
			_, err := store.UpdateDevice(ctx, device, other, db.UpdateDeviceInput{Name: &name})
			return err
		},
		"pause":  func() error { _, err := store.SetPaused(ctx, device, other, true); return err },
		"resume": func() error { _, err := store.SetPaused(ctx, device, other, false); return err },
		"remove": func() error { return store.RemoveDevice(ctx, device, other) },
		"quarantine without the admin role": func() error {
			_, err := store.SetQuarantine(ctx, false, device, true, "x")
			return err
		},
	}
	for name, write := range writes {
		before := snapshot()
		if err := write(); !errors.Is(err, db.ErrForbidden) {
			t.Fatalf("%s by another user: got %v, want ErrForbidden", name, err)
		}
		if after := snapshot(); after != before {
			t.Fatalf("%s by another user changed the device", name)
		}
	}
	if _, err := store.UpdateDevice(ctx, device, owner, db.UpdateDeviceInput{Name: &name}); err != nil {
		t.Fatalf("the owner's own update: %v", err)
	}
}

func TestCleanText(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"  rig-01 ", "rig-01", true},
		{"Cafe\u0301", "Café", true},
		{"ＧＰＵ", "ＧＰＵ", true},
		{"", "", false},
		{"a\tb", "", false},
		{"a\u200bb", "", false}, // zero-width space (format)
		{"a\u202eb", "", false}, // right-to-left override
		{"\xff", "", false},
	} {
		got, err := db.CleanText("name", c.in, 64)
		if (err == nil) != c.ok || got != c.want {
			t.Fatalf("CleanText(%q) = %q, %v", c.in, got, err)
		}
		if err != nil && !errors.Is(err, db.ErrInvalid) {
			t.Fatalf("CleanText(%q): %v is not ErrInvalid", c.in, err)
		}
	}
}
