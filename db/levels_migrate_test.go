package db_test

import (
	"context"
	"os"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/gpugate/gpugate/db"
)

// Migration 6 gives existing rows their level: a VERIFIED device (and its GPUs) becomes
// SELF_REPORTED, PENDING and FLAGGED stay, earlier verdicts read by their verdict; it rolls back.
func TestMigrationToVerificationLevels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqldb := open(t, emptyDatabase(t, "", ""))
	p, err := goose.NewProvider(goose.DialectPostgres, sqldb, os.DirFS("migrations"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	x := sqlx.NewDb(sqldb, "postgres")
	x.MustExec(`INSERT INTO users (id) VALUES ('00000000-0000-4000-8000-000000000001')`)
	for i, state := range []string{"VERIFIED", "PENDING", "FLAGGED"} {
		x.MustExec(`INSERT INTO devices (id, owner_id, name, region, verification, gpu_model, gpu_count)
			VALUES ($1, '00000000-0000-4000-8000-000000000001', $2, 'eu-west', $2, 'NVIDIA H100 SXM5 80GB', 2)`,
			[]string{"00000000-0000-4000-8000-0000000000a0", "00000000-0000-4000-8000-0000000000b0", "00000000-0000-4000-8000-0000000000c0"}[i], state)
	}
	x.MustExec(`INSERT INTO gpus (device_id, idx, uuid, model, pci_device_id, memory_mib, architecture)
		SELECT d.id, g, 'GPU-' || d.name || g, d.gpu_model, 9008, 81559, 'Hopper' FROM devices d, generate_series(0, 1) g`)
	x.MustExec(`INSERT INTO attestations (device_id, verdict) SELECT id, CASE verification WHEN 'FLAGGED' THEN 'FLAGGED' ELSE 'PASSED' END
		FROM devices WHERE verification <> 'PENDING'`)
	if _, err := db.Migrate(ctx, sqldb); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		var rows []struct {
			Name   string `db:"name"`
			Level  string `db:"verification_level"`
			Rank   int    `db:"verification_rank"`
			GPUs   string `db:"gpus"`
			Proofs string `db:"proofs"`
		}
		if err := x.Select(&rows, `SELECT d.name, d.verification_level, d.verification_rank,
				(SELECT string_agg(g.verification_level, ',' ORDER BY g.idx) FROM gpus g WHERE g.device_id = d.id) AS gpus,
				coalesce((SELECT string_agg(a.level, ',') FROM attestations a WHERE a.device_id = d.id), '') AS proofs
			FROM devices d ORDER BY d.name`); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			name, level  string
			rank         int
			gpus, proofs string
		}{
			{"FLAGGED", "FLAGGED", 0, "FLAGGED,FLAGGED", "FLAGGED"},
			{"PENDING", "PENDING", 1, "PENDING,PENDING", ""},
			{"VERIFIED", "SELF_REPORTED", 2, "SELF_REPORTED,SELF_REPORTED", "SELF_REPORTED"},
		}
		for i, w := range want {
			r := rows[i]
			if r.Name != w.name || r.Level != w.level || r.Rank != w.rank || r.GPUs != w.gpus || r.Proofs != w.proofs {
				t.Fatalf("device %s after migration: %+v, want %+v", w.name, r, w)
			}
		}
	}
	check()
	// Down and up again: the rollback leaves version 5's schema and the data migrates the same.
	if _, err := p.DownTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := x.Get(&n, `SELECT count(*) FROM information_schema.columns WHERE table_name IN ('devices', 'gpus', 'attestations')
		AND column_name IN ('verification_level', 'verification_rank', 'attested_gpus', 'level', 'gpu_evidence')`); err != nil || n != 0 {
		t.Fatalf("after down: %d level columns remain (%v)", n, err)
	}
	if _, err := db.Migrate(ctx, sqldb); err != nil {
		t.Fatal(err)
	}
	check()
}
