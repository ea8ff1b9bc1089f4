package db_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// The demo data's identities are random per database: reading the seed's source maps no public
// device ID to its owner. Its shape (names, models, counts) stays the same.
func TestDemoIdentitiesAreRandomPerDatabase(t *testing.T) {
	t.Parallel()
	type seeded struct {
		alice, bob  string
		devices     []string // ids
		names       []string
		aliceNames  []string
		hosts, ips  []string
		demoDevices int
	}
	seedOne := func() seeded {
		x := dbtest.New(t)
		if _, err := db.New(x, db.Options{}).Seed(context.Background(), 120); err != nil {
			t.Fatal(err)
		}
		var s seeded
		if err := x.Get(&s.alice, `SELECT id FROM users WHERE email = 'alice@example.com'`); err != nil {
			t.Fatal(err)
		}
		if err := x.Get(&s.bob, `SELECT id FROM users WHERE email = 'bob@example.com'`); err != nil {
			t.Fatal(err)
		}
		for q, dst := range map[string]*[]string{
			`SELECT id::text FROM devices ORDER BY id`:           &s.devices,
			`SELECT name FROM devices ORDER BY name`:             &s.names,
			`SELECT hostname FROM devices ORDER BY name`:         &s.hosts,
			`SELECT host(ip_address) FROM devices ORDER BY name`: &s.ips,
			`SELECT d.name FROM devices d JOIN users u ON u.id = d.owner_id WHERE u.email = 'alice@example.com' ORDER BY d.name`: &s.aliceNames,
		} {
			if err := x.Select(dst, q); err != nil {
				t.Fatal(err)
			}
		}
		if err := x.Get(&s.demoDevices, `SELECT count(*) FROM devices d JOIN users u ON u.id = d.owner_id
			WHERE u.email IN ('alice@example.com', 'bob@example.com', 'admin@example.com')`); err != nil {
			t.Fatal(err)
		}
		// Not the md5 of a fixed string, as the seed once derived them.
		var fixed int
		if err := x.Get(&fixed, `SELECT count(*) FROM users
			WHERE id = overlay(overlay(md5('gpugate-user-alice') placing '4' from 13) placing '8' from 17)::uuid`); err != nil || fixed != 0 {
			t.Fatalf("alice's ID is the md5 of a fixed string (%d, %v)", fixed, err)
		}
		return s
	}
	a, b := seedOne(), seedOne()
	if a.alice == b.alice || a.bob == b.bob {
		t.Fatalf("demo user IDs repeat across databases: alice %s / %s", a.alice, b.alice)
	}
	for _, id := range a.devices {
		if _, found := slices.BinarySearch(b.devices, id); found {
			t.Fatalf("device ID %s is in both databases", id)
		}
	}
	if !slices.Equal(a.names, b.names) {
		t.Fatal("the shape changed between two seeds of the same size: names differ")
	}
	if a.demoDevices != 3*db.DemoDevicesPerUser || len(a.aliceNames) != db.DemoDevicesPerUser {
		t.Fatalf("demo users own %d devices (alice %d), want %d each", a.demoDevices, len(a.aliceNames), db.DemoDevicesPerUser)
	}
	// Owner-only fields are not a function of the public name either.
	if slices.Equal(a.hosts, b.hosts) || slices.Equal(a.ips, b.ips) {
		t.Fatal("hostnames or addresses repeat across databases: they follow from the public name")
	}
	for i, h := range a.hosts {
		if num := a.names[i][strings.LastIndexByte(a.names[i], '-')+1:]; strings.Contains(h, num) {
			t.Fatalf("hostname %q carries the row number of its public name %q", h, a.names[i])
		}
	}
}
