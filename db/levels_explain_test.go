package db_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// TestLevelQueryPlansAt1M prints the plans of the level listings and stats on a seeded database
// of GPUGATE_EXPLAIN_DEVICES devices (skipped unless set; 1000000 for the numbers in
// the report): the level order must be a scan of devices_level_created and the level filter an
// index scan, never a sort of the table.
//
//	GPUGATE_EXPLAIN_DEVICES=1000000 go test -count=1 -run TestLevelQueryPlansAt1M -v ./db/
func TestLevelQueryPlansAt1M(t *testing.T) {
	n := os.Getenv("GPUGATE_EXPLAIN_DEVICES")
	if n == "" {
		t.Skip("set GPUGATE_EXPLAIN_DEVICES to seed that many devices and print the plans")
	}
	var size int
	for _, r := range n {
		size = size*10 + int(r-'0')
	}
	ctx := context.Background()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(ctx, size); err != nil {
		t.Fatal(err)
	}
	page, err := store.ListDevices(ctx, db.ListParams{First: 50, Order: db.DeviceOrder{Field: db.OrderVerificationLevel, Direction: db.Desc}})
	if err != nil {
		t.Fatal(err)
	}
	last := page.Devices[len(page.Devices)-1]
	key := strconv.Itoa(last.DeviceLevel.Rank()) + "/" + last.CreatedAt.UTC().Format(time.RFC3339Nano)
	desc := db.ListQuery(db.DeviceOrder{Field: db.OrderVerificationLevel, Direction: db.Desc})
	asc := db.ListQuery(db.DeviceOrder{Field: db.OrderVerificationLevel, Direction: db.Asc})
	created := db.ListQuery(db.DefaultOrder)
	attested := 3 // the rank of ATTESTED
	// The statements ListDevices runs, with their parameters bound as it binds them: $1..$4
	// filters, $5/$6 the cursor, $7 the limit, $8 the owner, $9 the level's rank.
	plans := []struct {
		name  string
		query string
		args  []any
	}{
		{"level order DESC, first page", desc, []any{nil, nil, nil, nil, nil, nil, 51, nil, nil}},
		{"level order DESC, after a cursor", desc, []any{nil, nil, nil, nil, key, last.ID, 51, nil, nil}},
		{"level order ASC", asc, []any{nil, nil, nil, nil, nil, nil, 51, nil, nil}},
		{"filter ATTESTED, newest first", created, []any{nil, nil, nil, nil, nil, nil, 51, nil, attested}},
		{"filter ATTESTED, level order", desc, []any{nil, nil, nil, nil, nil, nil, 51, nil, attested}},
	}
	for _, p := range plans {
		var lines []string
		if err := x.Select(&lines, `EXPLAIN (ANALYZE, COSTS OFF, BUFFERS) `+p.query, p.args...); err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		t.Logf("%s:\n%s", p.name, plan)
		// A filtered page may walk another keyset index and filter (ATTESTED is a large share
		// of the demo data); what must never happen is a scan and sort of the whole table.
		if strings.Contains(plan, "Sort") || strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index Scan") {
			t.Errorf("%s is not a keyset index scan", p.name)
		}
	}
}
