package db

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/uuid"
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
	{"NVIDIA A100 SXM4 40GB", 0x20B0, 40960, "Ampere", "8.0", 8, true, "a100"},
	{"NVIDIA A100 SXM4 80GB", 0x20B2, 81920, "Ampere", "8.0", 8, true, "a100x"},
	{"NVIDIA H100 SXM5 80GB", 0x2330, 81559, "Hopper", "9.0", 8, true, "h100"},
	{"NVIDIA H200 SXM 141GB", 0x2335, 143771, "Hopper", "9.0", 8, true, "h200"},
	{"NVIDIA B200", 0x2901, 183359, "Blackwell", "10.0", 8, true, "b200"},
	{"NVIDIA L40S", 0x26B9, 46068, "Ada Lovelace", "8.9", 4, false, "l40s"},
	{"NVIDIA GeForce RTX 4090", 0x2684, 24564, "Ada Lovelace", "8.9", 4, false, "rtx4090"},
	{"NVIDIA GeForce RTX 3090", 0x2204, 24576, "Ampere", "8.6", 4, false, "rtx3090"},
	{"NVIDIA T4", 0x1EB8, 15360, "Turing", "7.5", 4, false, "t4"},
}

// DemoRegions are the regions the demo data spreads devices over.
var DemoRegions = []string{"us-east", "us-west", "eu-central", "eu-west", "ap-southeast",
	"ap-northeast", "sa-east", "af-south"}

// DemoUsers are the named demo accounts; each owns a handful of devices.
var DemoUsers = []string{"alice", "bob", "admin"}

// The seed has a deterministic shape and random identities. Names, models, counts, regions,
// statuses and verdicts are pseudo-random choices hashed from the row number (hb below), so two
// seeds of the same size look alike. Everything that identifies someone is random per database:
// user IDs (crypto/rand), which device belongs to which user, device IDs (GPU UUIDs derive from
// them) and the owner-only fields (hostname, address, labels). The last three come from hashes of
// the row number under a random per-seed salt (db and pb below), so reading this code maps no
// public device to its owner and no public field to a private one. (A salted md5 rather than
// gen_random_uuid() for the device ID: the latter costs about 2.7 µs a row, md5 0.2 µs.)
const seedUsersSQL = `
INSERT INTO users (id, email, display_name)
SELECT ($3::uuid[])[x.n], x.u || '@example.com', initcap(x.u)
FROM unnest($1::text[]) WITH ORDINALITY AS x(u, n)
UNION ALL
SELECT ($4::uuid[])[i], 'operator' || i || '@example.com', 'Operator ' || i
FROM generate_series(1, $2::int) AS i`

// uuidOf formats 16 bytes (a bytea expression that is evaluated once: a column of an OFFSET 0
// subquery) as a version-4-looking UUID: the same value as
// overlay(overlay(encode(b, 'hex') placing '4' from 13) placing '8' from 17)::uuid, computed on
// bytes, which is several times cheaper than text overlays in a UTF-8 database.
func uuidOf(b string) string {
	return `encode(set_byte(set_byte(` + b + `, 6, (get_byte(` + b + `, 6) & 15) | 64), 8, (get_byte(` + b +
		`, 8) & 15) | 128), 'hex')::uuid`
}

// The hashes of a row are computed once, in an OFFSET 0 subquery (a flattened LATERAL would
// evaluate md5 again for each of its uses). Owners come from two arrays of random user IDs: the
// demo users own the rows listed in $4 (chosen at random), every other row belongs to the
// operator its salted hash picks. Rows are produced in generate_series order, so the table is
// physically in created_at order.
//
// Parameters: $1 models, $2 GPUs per host, $3 fixed counts, $4 demo rows, $5 their owners,
// $6 regions, $7 last row, $8 first row, $9 short model names, $10 operator IDs, $11 salt,
// $12 whether the model supports confidential computing (can be ATTESTED). A CC-capable model's
// hosts are fixed-size (every host has GPUsPerHost GPUs), so attested_gpus never exceeds gpu_count.
var seedDevicesSQL = `
INSERT INTO devices (id, owner_id, name, status, region, verification, verification_level, attested_gpus, gpu_model, gpu_count,
                     last_seen_at, created_at, updated_at, hostname, ip_address, labels, enrolled_at, paused)
SELECT ` + uuidOf("r.db") + `,
       CASE WHEN h.demo IS NOT NULL THEN ($5::uuid[])[h.demo]
            ELSE ($10::uuid[])[1 + h.owner % cardinality($10::uuid[])] END,
       (ARRAY['atlas','nebula','orion','vega','lyra','zephyr','kestrel','aurora','titan','quasar',
              'cobalt','ember','falcon','helix','ion','juno'])[1 + h.word % 16]
         || '-' || ($9::text[])[h.m]
         || '-' || lpad(r.i::text, 6, '0'),
       CASE WHEN h.st < 70 THEN 'UP' WHEN h.st < 90 THEN 'DOWN' ELSE 'PAUSED' END,
       ($6::text[])[1 + h.region % array_length($6::text[], 1)],
       CASE WHEN h.ver < 75 THEN 'VERIFIED' WHEN h.ver < 90 THEN 'PENDING' ELSE 'FLAGGED' END,
       -- Levels: only confidential-computing GPUs (Hopper, Blackwell) can attest; about half of
       -- the verified ones do, and a few more attest all but one GPU (one without CC mode).
       CASE WHEN h.ver < 75 AND ($12::bool[])[h.m] AND h.ver < 40 THEN 'ATTESTED'
            WHEN h.ver < 75 THEN 'SELF_REPORTED' WHEN h.ver < 90 THEN 'PENDING' ELSE 'FLAGGED' END,
       CASE WHEN ($12::bool[])[h.m] AND h.ver < 40 THEN ($2::int[])[h.m]
            WHEN ($12::bool[])[h.m] AND h.ver < 45 THEN ($2::int[])[h.m] - 1 ELSE 0 END,
       ($1::text[])[h.m],
       CASE WHEN ($3::bool[])[h.m] THEN ($2::int[])[h.m] ELSE 1 + h.cnt % ($2::int[])[h.m] END,
       CASE WHEN h.st < 70 THEN now() - make_interval(secs => h.seen % 120)
            WHEN h.st < 90 THEN now() - make_interval(mins => 10 + h.seen % 5000)
            ELSE now() - make_interval(hours => h.seen % 72) END,
       r.ts,
       r.ts,
       'node-' || encode(substr(r.pb, 1, 4), 'hex') || '.' || ($6::text[])[1 + h.region % array_length($6::text[], 1)] || '.internal',
       ('10.' || get_byte(r.pb, 4) || '.' || get_byte(r.pb, 5) || '.' || (1 + get_byte(r.pb, 6) % 254))::inet,
       string_to_array((ARRAY['rack-a,prod', 'rack-b,prod', 'lab,spare', 'rack-c,batch'])[1 + get_byte(r.pb, 7) % 4], ','),
       r.ts,
       h.st >= 90
FROM (SELECT i, decode(md5('gpugate-h-' || i), 'hex') AS hb, decode(md5($11::text || '-d' || i), 'hex') AS db,
             decode(md5($11::text || '-p' || i), 'hex') AS pb,
             timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => (i::float8 * 31536000 / $7::int)) AS ts
      FROM generate_series($8::int, $7::int) AS i OFFSET 0) r
CROSS JOIN LATERAL (SELECT get_byte(r.hb, 2) AS word, get_byte(r.hb, 3) % 100 AS st,
                           get_byte(r.hb, 4) AS region, get_byte(r.hb, 5) % 100 AS ver,
                           get_byte(r.hb, 6) AS cnt, get_byte(r.hb, 7) * 256 + get_byte(r.hb, 8) AS seen,
                           1 + get_byte(r.hb, 9) % array_length($1::text[], 1) AS m,
                           get_byte(r.pb, 8) * 65536 + get_byte(r.pb, 9) * 256 + get_byte(r.pb, 10) AS owner,
                           array_position($4::int[], r.i) AS demo) h`

var seedGPUsSQL = `
WITH specs AS (
  SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[])
    AS s(model, pci, mem, arch, cc)
)
INSERT INTO gpus (device_id, idx, uuid, model, pci_device_id, memory_mib, architecture, compute_capability, verification_level)
SELECT z.id, z.idx, 'GPU-' || ` + uuidOf("z.b") + `, z.model, z.pci, z.mem, z.arch, z.cc,
       CASE WHEN z.idx < z.attested THEN 'ATTESTED' ELSE z.level END
FROM (SELECT d.id, g.idx, s.model, s.pci, s.mem, s.arch, s.cc, d.attested_gpus AS attested, d.verification_level AS level,
             decode(md5('gpugate-gpu-' || d.id || '-' || g.idx), 'hex') AS b
      FROM devices d
      JOIN specs s ON s.model = d.gpu_model
      CROSS JOIN LATERAL generate_series(0, d.gpu_count - 1) AS g(idx)
      WHERE NOT EXISTS (SELECT 1 FROM gpus x WHERE x.device_id = d.id)
      OFFSET 0) z`

// bulkSeedMin is the seed size from which the load runs without the indexes and the key
// constraints of devices and gpus: maintaining a dozen indexes (one of them a trigram GIN) and
// the foreign keys row by row costs several times more than building them once afterwards. The
// drops take exclusive locks on those tables (and the tables whose foreign keys reference them)
// until the seed commits.
const bulkSeedMin = 50_000

// loadDDL lists, from the catalogue, what dropForLoad drops and what restores it: the
// non-constraint indexes of devices and gpus, their primary/unique/exclusion constraints and every
// foreign key on or referencing them (drops: foreign keys first; creates: foreign keys last).
const loadDDL = `
WITH t AS (SELECT unnest(ARRAY['devices'::regclass, 'gpus'::regclass]) AS rel)
SELECT drop_sql, create_sql FROM (
  SELECT 0 AS drop_order, c.conname::text AS name,
         format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS drop_sql,
         format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                pg_get_constraintdef(c.oid)) AS create_sql
  FROM pg_constraint c
  WHERE c.contype = 'f' AND (c.conrelid IN (SELECT rel FROM t) OR c.confrelid IN (SELECT rel FROM t))
  UNION ALL
  SELECT 1, c.conname::text,
         format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
         format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                pg_get_constraintdef(c.oid))
  FROM pg_constraint c
  WHERE c.contype IN ('p', 'u', 'x') AND c.conrelid IN (SELECT rel FROM t)
  UNION ALL
  SELECT 2, i.indexrelid::regclass::text,
         format('DROP INDEX %s', i.indexrelid::regclass),
         pg_get_indexdef(i.indexrelid)
  FROM pg_index i
  WHERE i.indrelid IN (SELECT rel FROM t)
    AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                    WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))
) ddl ORDER BY drop_order, name`

// dropForLoad drops the indexes and constraints of loadDDL inside the seed's transaction (so a
// failed seed restores them with everything else) and returns the statements that recreate
// them, in order.
func dropForLoad(ctx context.Context, x sqlx.ExtContext) ([]string, error) {
	var ddl []struct {
		Drop   string `db:"drop_sql"`
		Create string `db:"create_sql"`
	}
	if err := sqlx.SelectContext(ctx, x, &ddl, loadDDL); err != nil {
		return nil, translate("seed: list indexes", err)
	}
	creates := make([]string, 0, len(ddl))
	for _, s := range ddl {
		if _, err := x.ExecContext(ctx, s.Drop); err != nil {
			return nil, translate("seed: drop for load", err)
		}
		creates = append(creates, s.Create)
	}
	// The drops came foreign keys first; the creates go in the reverse order (indexes, then
	// keys, then the foreign keys that need them).
	slices.Reverse(creates)
	return creates, nil
}

// Seed inserts demo data with a deterministic shape and random identities (see seedUsersSQL):
// the DemoUsers, one generated owner per ~50 devices and n devices with their GPUs, of which
// DemoDevicesPerUser random ones belong to each demo user. It does
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
	ids, err := randomIDs(len(DemoUsers) + owners)
	if err != nil {
		return err
	}
	demoIDs, operatorIDs := ids[:len(DemoUsers)], ids[len(DemoUsers):]
	if _, err := x.ExecContext(ctx, seedUsersSQL, pq.Array(DemoUsers), owners, pq.Array(demoIDs), pq.Array(operatorIDs)); err != nil {
		return translate("seed users", err)
	}
	demoRows, demoOwners, err := demoDevices(n, demoIDs)
	if err != nil {
		return err
	}
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	var models, archs, ccs, shorts []string
	var perHost, pcis []int
	var mems []int64
	var fixed, ccCapable []bool
	for _, s := range DemoCatalogue {
		ccCapable = append(ccCapable, s.Fixed && (s.Architecture == "Hopper" || s.Architecture == "Blackwell"))
		models = append(models, s.Model)
		perHost = append(perHost, s.GPUsPerHost)
		fixed = append(fixed, s.Fixed)
		pcis = append(pcis, s.PCIID)
		mems = append(mems, s.MemoryMiB)
		archs = append(archs, s.Architecture)
		ccs = append(ccs, s.ComputeCapability)
		shorts = append(shorts, s.Short)
	}
	var rebuild []string
	if n >= bulkSeedMin {
		// Index builds sort: give them room. JIT compiling the generating expressions costs more
		// than it saves (this transaction only).
		if _, err := x.ExecContext(ctx, `SET LOCAL maintenance_work_mem = '512MB'; SET LOCAL jit = off`); err != nil {
			return translate("seed", err)
		}
		var err error
		if rebuild, err = dropForLoad(ctx, x); err != nil {
			return err
		}
	}
	if _, err := x.ExecContext(ctx, seedDevicesSQL, pq.Array(models), pq.Array(perHost), pq.Array(fixed),
		pq.Array(demoRows), pq.Array(demoOwners), pq.Array(DemoRegions), n, 1, pq.Array(shorts),
		pq.Array(operatorIDs), hex.EncodeToString(salt[:]), pq.Array(ccCapable)); err != nil {
		return translate("seed devices", err)
	}
	if _, err := x.ExecContext(ctx, seedGPUsSQL, pq.Array(models), pq.Array(pcis), pq.Array(mems),
		pq.Array(archs), pq.Array(ccs)); err != nil {
		return translate("seed gpus", err)
	}
	for _, stmt := range rebuild {
		if _, err := x.ExecContext(ctx, stmt); err != nil {
			return translate("seed: rebuild indexes", err)
		}
	}
	if _, err := x.ExecContext(ctx, `ANALYZE devices; ANALYZE gpus`); err != nil {
		return fmt.Errorf("seed: analyze: %w", err)
	}
	return nil
}

// DemoDevicesPerUser is how many devices each of the DemoUsers owns (fewer when the seed is
// smaller than DemoDevicesPerUser × len(DemoUsers)).
const DemoDevicesPerUser = 6

// randomIDs returns n random (version 4) UUIDs.
func randomIDs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		u, err := uuid.NewRandom()
		if err != nil {
			return nil, fmt.Errorf("seed: %w", err)
		}
		out[i] = u.String()
	}
	return out, nil
}

// demoDevices picks, at random, the rows (1..n) the demo users own: DemoDevicesPerUser each,
// in DemoUsers order, and returns them with their owner's ID.
func demoDevices(n int, demoIDs []string) (rows []int, owners []string, err error) {
	want := min(n, DemoDevicesPerUser*len(demoIDs))
	seen := make(map[int]bool, want)
	for len(rows) < want {
		v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
		if err != nil {
			return nil, nil, fmt.Errorf("seed: %w", err)
		}
		row := int(v.Int64()) + 1
		if seen[row] {
			continue
		}
		seen[row] = true
		rows = append(rows, row)
		owners = append(owners, demoIDs[(len(rows)-1)/DemoDevicesPerUser])
	}
	return rows, owners, nil
}
