package main

import (
	"os"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/db/dbtest"
)

// Zero-config mode runs on the least-privilege roles: anonymous reads on gpugate_explorer (the
// explorer views only), the gateway on gpugate_app, migrations and the seed as gpugate_owner.
func TestZeroConfigUsesTheDatabaseRoles(t *testing.T) {
	t.Parallel()
	dataDir, err := os.MkdirTemp("", "gpugate-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	g := start(t, []string{"DATABASE_URL="}, "--data-dir", dataDir, "--seed", "30")
	d := g.query(t, `{ devices(first: 2) { edges { node { name gpus { uuid } private { hostname } } } } networkStats { devices } }`)
	if n := deviceCount(t, g); n != 30 {
		t.Fatalf("devices: %d (%v)", n, d)
	}
	log := g.out.String()
	for _, want := range []string{"anonymous reads: explorer views only", "mode=\"explorer role\"", "role=gpugate_explorer"} {
		if !strings.Contains(log, want) {
			t.Fatalf("the log does not say %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "can delete audit rows") {
		t.Fatalf("zero-config serves as gpugate_app, which cannot delete audit rows, yet warns:\n%s", log)
	}
}

// A gateway whose one DATABASE_URL both migrates and serves can delete audit rows (its role owns
// the table): it starts, and says so.
func TestSingleRoleGatewayWarnsAboutAuditRows(t *testing.T) {
	t.Parallel()
	_, dsn := dbtest.NewWithDSN(t)
	g := start(t, []string{"DATABASE_URL=" + dsn})
	g.query(t, `{ networkStats { devices } }`)
	if log := g.out.String(); !strings.Contains(log, "can delete audit rows") {
		t.Fatalf("no warning that the gateway's role can delete audit rows:\n%s", log)
	}
}
