package db_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// TestListPlansStayIndexScans runs every prepared listing statement (db.preparedLists) ten
// times on one connection, so PostgreSQL has switched to its generic plan where it would, then
// checks the plan of an eleventh execution: an index scan, never a sequential scan or a sort.
// Same for GPUsByDevice's statement (a scan of the gpus primary key) and Device's. The database holds
// GPUGATE_PLAN_DEVICES demo devices (100,000 by default; -short: 20,000).
//
//	GPUGATE_PLAN_DEVICES=1000000 go test -count=1 -run TestListPlansStayIndexScans -v ./db/
func TestListPlansStayIndexScans(t *testing.T) {
	size := 100000
	if testing.Short() {
		size = 20000
	}
	if n, err := strconv.Atoi(os.Getenv("GPUGATE_PLAN_DEVICES")); err == nil && n > 0 {
		size = n
	}
	ctx := context.Background()
	x := dbtest.New(t)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(ctx, size); err != nil {
		t.Fatal(err)
	}
	explorer := dbtest.AsRole(t, x, db.RoleExplorer)
	// A value each filter really has in the demo data, so the plans are for real matches.
	values := map[string]any{"status": "UP", "gpuModel": db.DemoCatalogue[2].Model, "region": db.DemoRegions[0],
		"verification": "VERIFIED", "verificationLevel": 2}
	lists := db.PreparedLists()
	sort.Slice(lists, func(i, j int) bool { return fmt.Sprint(lists[i]) < fmt.Sprint(lists[j]) })
	if len(lists) != 80 {
		t.Errorf("%d prepared listing statements, want 80", len(lists))
	}
	for i, l := range lists {
		var args []any
		if l.Filter != "" {
			args = append(args, values[l.Filter])
		}
		if l.After {
			// The cursor of the 50th row of the first page, so the keyset condition matters.
			page, err := store.ListDevices(ctx, db.ListParams{First: 50, Order: l.Order})
			if err != nil {
				t.Fatal(err)
			}
			last := page.Devices[len(page.Devices)-1]
			args = append(args, db.CursorKey(l.Order, last), last.ID)
		}
		args = append(args, 51)
		pool := x
		if l.Public {
			pool = explorer
		}
		conn, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		name := "plan_" + strconv.Itoa(i)
		if _, err := conn.ExecContext(ctx, "PREPARE "+name+" AS "+l.SQL); err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
		exec := execute(name, args)
		for range 10 {
			if _, err := conn.ExecContext(ctx, exec); err != nil {
				t.Fatalf("%+v: %v", l, err)
			}
		}
		plan := explain(t, ctx, conn, exec)
		_ = conn.Close()
		what := fmt.Sprintf("%s filter=%q after=%v public=%v", l.Order, l.Filter, l.After, l.Public)
		if testing.Verbose() {
			t.Logf("%s:\n%s", what, plan)
		}
		if strings.Contains(plan, "Sort") || strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index Scan") {
			t.Errorf("%s is not an index scan after 10 executions:\n%s", what, plan)
		}
	}

	page, err := store.ListDevices(ctx, db.ListParams{First: 100})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(page.Devices))
	for i, d := range page.Devices {
		ids[i] = d.ID
	}
	conn, err := explorer.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PREPARE gpus AS "+db.GPUsQuery); err != nil {
		t.Fatal(err)
	}
	exec := execute("gpus", []any{"{" + strings.Join(ids, ",") + "}"})
	for range 10 {
		if _, err := conn.ExecContext(ctx, exec); err != nil {
			t.Fatal(err)
		}
	}
	plan := explain(t, ctx, conn, exec)
	t.Logf("GPUsByDevice, 100 devices:\n%s", plan)
	if strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Sort") || !strings.Contains(plan, "gpus_pkey") {
		t.Errorf("GPUsByDevice does not read the gpus primary key:\n%s", plan)
	}
	if _, err := conn.ExecContext(ctx, "PREPARE device AS "+db.DevicePublicQuery); err != nil {
		t.Fatal(err)
	}
	exec = execute("device", []any{ids[7]})
	for range 10 {
		if _, err := conn.ExecContext(ctx, exec); err != nil {
			t.Fatal(err)
		}
	}
	plan = explain(t, ctx, conn, exec)
	t.Logf("Device:\n%s", plan)
	if !strings.Contains(plan, "Index Scan using devices_pkey") {
		t.Errorf("Device is not a primary key lookup:\n%s", plan)
	}
}

// execute returns the EXECUTE statement of the prepared statement name with args as literals
// (EXECUTE takes no protocol parameters): integers as they are, strings quoted.
func execute(name string, args []any) string {
	lits := make([]string, len(args))
	for i, a := range args {
		if n, ok := a.(int); ok {
			lits[i] = strconv.Itoa(n)
		} else {
			lits[i] = pq.QuoteLiteral(fmt.Sprint(a))
		}
	}
	return "EXECUTE " + name + "(" + strings.Join(lits, ", ") + ")"
}

// explain returns the EXPLAIN (ANALYZE) lines of exec on conn.
func explain(t *testing.T, ctx context.Context, conn *sql.Conn, exec string) string {
	t.Helper()
	rows, err := conn.QueryContext(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+exec)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
