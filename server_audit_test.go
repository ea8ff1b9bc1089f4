package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/db/dbtest"
)

// The gateway writes its buffered audit records when it stops: with a flush interval that never
// comes, the refused writes are in the table after SIGTERM, none before.
func TestShutdownFlushesTheAuditLog(t *testing.T) {
	t.Parallel()
	x, dsn := dbtest.NewWithDSN(t)
	g := start(t, []string{"DATABASE_URL=" + dsn}, "--audit-flush-interval", "1h", "--log-level", "info")
	const refused = `{"query":"mutation { pauseDevice(id: \"00000000-0000-4000-8000-000000000001\") { id } }"}`
	for range 3 {
		resp, err := http.Post("http://"+g.addr+"/graphql", "application/json", strings.NewReader(refused))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	count := func() (n int) {
		if err := x.Get(&n, `SELECT count(*) FROM audit_events WHERE operation = 'pauseDevice' AND outcome = 'DENIED'
			AND reason = 'UNAUTHENTICATED'`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d rows before the flush interval: the test proves nothing", n)
	}
	g.stop(t)
	if n := count(); n != 3 {
		t.Fatalf("%d audit rows after shutdown, want 3:\n%s", n, g.out.String())
	}
	if !strings.Contains(g.out.String(), "audit log closed") {
		t.Fatalf("no audit totals in the log:\n%s", g.out.String())
	}
}
