package db

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// GPUSpec is one row of the demo catalogue: what a real host of that model reports.
type GPUSpec struct {
	Model             string
	PCIID             int
	MemoryMiB         int64
	Architecture      string
	ComputeCapability string
	GPUsPerHost       int  // with Fixed, every host has this many; otherwise 1..GPUsPerHost
	Fixed             bool // DGX-class hosts come in 8s
	Short             string
}

// DemoCatalogue is the set of GPU models the demo data uses.
var DemoCatalogue = []GPUSpec{
	{"NVIDIA A100-SXM4-40GB", 0x20B0, 40960, "Ampere", "8.0", 8, true, "a100"},
	{"NVIDIA A100-SXM4-80GB", 0x20B2, 81920, "Ampere", "8.0", 8, true, "a100x"},
	{"NVIDIA H100 80GB HBM3", 0x2330, 81559, "Hopper", "9.0", 8, true, "h100"},
	{"NVIDIA H200", 0x2335, 143771, "Hopper", "9.0", 8, true, "h200"},
	{"NVIDIA B200", 0x2901, 183359, "Blackwell", "10.0", 8, true, "b200"},
	{"NVIDIA L40S", 0x26B9, 46068, "Ada Lovelace", "8.9", 4, false, "l40s"},
	{"NVIDIA GeForce RTX 4090", 0x2684, 24564, "Ada Lovelace", "8.9", 4, false, "rtx4090"},
	{"NVIDIA GeForce RTX 3090", 0x2204, 24576, "Ampere", "8.6", 4, false, "rtx3090"},
	{"Tesla T4", 0x1EB8, 15360, "Turing", "7.5", 4, false, "t4"},
}

// DemoRegions are the regions the demo data spreads devices over.
var DemoRegions = []string{"us-east", "us-west", "eu-central", "eu-west", "ap-southeast",
	"ap-northeast", "sa-east", "af-south"}

// DemoUsers are the named demo accounts; each owns a handful of devices.
var DemoUsers = []string{"alice", "bob", "admin"}

// The seed statements are deterministic: every pseudo-random choice is a hash of the row number
// (h(salt, i) below), so two seeds of the same size produce the same IDs, names and models.
const seedUsersSQL = `
INSERT INTO users (id, email, display_name)
SELECT overlay(overlay(md5('gpugate-user-' || u) placing '4' from 13) placing '8' from 17)::uuid,
       u || '@example.com', initcap(u)
FROM unnest($1::text[]) AS u
UNION ALL
SELECT overlay(overlay(md5('gpugate-user-' || i) placing '4' from 13) placing '8' from 17)::uuid,
       'operator' || i || '@example.com', 'Operator ' || i
FROM generate_series(1, $2::int) AS i`

const seedDevicesSQL = `
WITH models AS (
  SELECT m.*, (m.n - 1)::int AS k FROM unnest($1::text[], $2::int[], $3::bool[], $9::text[])
    WITH ORDINALITY AS m(model, per_host, fixed, short, n)
), named AS (SELECT array_length($4::text[], 1) AS nnamed)
INSERT INTO devices (id, owner_id, name, status, region, verification, gpu_model, gpu_count,
                     last_seen_at, created_at, updated_at)
SELECT overlay(overlay(md5('gpugate-device-' || i) placing '4' from 13) placing '8' from 17)::uuid,
       overlay(overlay(md5('gpugate-user-' || CASE
           WHEN i <= 6 * nnamed THEN ($4::text[])[1 + (i - 1) / 6]
           ELSE (1 + h.owner % $5::int)::text END) placing '4' from 13) placing '8' from 17)::uuid,
       (ARRAY['atlas','nebula','orion','vega','lyra','zephyr','kestrel','aurora','titan','quasar',
              'cobalt','ember','falcon','helix','ion','juno'])[1 + h.word % 16]
         || '-' || m.short
         || '-' || lpad(i::text, 6, '0'),
       CASE WHEN h.st < 70 THEN 'UP' WHEN h.st < 90 THEN 'DOWN' ELSE 'PAUSED' END,
       ($6::text[])[1 + h.region % array_length($6::text[], 1)],
       CASE WHEN h.ver < 75 THEN 'VERIFIED' WHEN h.ver < 90 THEN 'PENDING' ELSE 'FLAGGED' END,
       m.model,
       CASE WHEN m.fixed THEN m.per_host ELSE 1 + h.cnt % m.per_host END,
       CASE WHEN h.st < 70 THEN now() - make_interval(secs => h.seen % 120)
            WHEN h.st < 90 THEN now() - make_interval(mins => 10 + h.seen % 5000)
            ELSE now() - make_interval(hours => h.seen % 72) END,
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => (i::float8 * 31536000 / $7::int)),
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => (i::float8 * 31536000 / $7::int))
FROM generate_series($8::int, $7::int) AS i
CROSS JOIN named
CROSS JOIN LATERAL (SELECT decode(md5('gpugate-h-' || i), 'hex') AS b) r
CROSS JOIN LATERAL (SELECT get_byte(b, 0) * 256 + get_byte(b, 1) AS owner,
                           get_byte(b, 2) AS word, get_byte(b, 3) % 100 AS st,
                           get_byte(b, 4) AS region, get_byte(b, 5) % 100 AS ver,
                           get_byte(b, 6) AS cnt, get_byte(b, 7) * 256 + get_byte(b, 8) AS seen,
                           get_byte(b, 9) AS model) h
JOIN models m ON m.k = h.model % (SELECT count(*) FROM models)`

const seedGPUsSQL = `
WITH specs AS (
  SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[])
    AS s(model, pci, mem, arch, cc)
)
INSERT INTO gpus (device_id, idx, uuid, model, pci_device_id, memory_mib, architecture, compute_capability)
SELECT d.id, g.idx,
       'GPU-' || overlay(overlay(md5('gpugate-gpu-' || d.id || '-' || g.idx) placing '4' from 13)
                         placing '8' from 17)::uuid,
       s.model, s.pci, s.mem, s.arch, s.cc
FROM devices d
JOIN specs s ON s.model = d.gpu_model
CROSS JOIN LATERAL generate_series(0, d.gpu_count - 1) AS g(idx)
WHERE NOT EXISTS (SELECT 1 FROM gpus x WHERE x.device_id = d.id)`

// Seed inserts deterministic demo data: the DemoUsers, one generated owner per ~50 devices and
// n devices (the first six of each demo user belong to that user) with their GPUs. It does
// nothing and returns false when devices already exist. It returns an error if a statement fails;
// the whole seed runs in one transaction so a failure leaves nothing behind.
func (d *DB) Seed(ctx context.Context, n int) (bool, error) {
	if n < 1 {
		return false, Invalidf("seed size must be positive")
	}
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return false, translate("seed", err)
	}
	defer func() { _ = tx.Rollback() }()
	var exists bool
	if err := tx.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM devices)`); err != nil {
		return false, translate("seed", err)
	}
	if exists {
		return false, nil
	}
	if err := seed(ctx, tx, n); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, translate("seed", err)
	}
	return true, nil
}

func seed(ctx context.Context, x sqlx.ExtContext, n int) error {
	owners := max(1, n/50)
	if _, err := x.ExecContext(ctx, seedUsersSQL, pq.Array(DemoUsers), owners); err != nil {
		return translate("seed users", err)
	}
	var models, archs, ccs, shorts []string
	var perHost, pcis []int
	var mems []int64
	var fixed []bool
	for _, s := range DemoCatalogue {
		models = append(models, s.Model)
		perHost = append(perHost, s.GPUsPerHost)
		fixed = append(fixed, s.Fixed)
		pcis = append(pcis, s.PCIID)
		mems = append(mems, s.MemoryMiB)
		archs = append(archs, s.Architecture)
		ccs = append(ccs, s.ComputeCapability)
		shorts = append(shorts, s.Short)
	}
	if _, err := x.ExecContext(ctx, seedDevicesSQL, pq.Array(models), pq.Array(perHost), pq.Array(fixed),
		pq.Array(DemoUsers), owners, pq.Array(DemoRegions), n, 1, pq.Array(shorts)); err != nil {
		return translate("seed devices", err)
	}
	if _, err := x.ExecContext(ctx, seedGPUsSQL, pq.Array(models), pq.Array(pcis), pq.Array(mems),
		pq.Array(archs), pq.Array(ccs)); err != nil {
		return translate("seed gpus", err)
	}
	if _, err := x.ExecContext(ctx, `ANALYZE devices; ANALYZE gpus`); err != nil {
		return fmt.Errorf("seed: analyze: %w", err)
	}
	return nil
}
