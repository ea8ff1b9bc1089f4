package gateway_test

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway"
)

type node struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	Region       string    `json:"region"`
	Verification string    `json:"verification"`
	Level        string    `json:"verificationLevel"`
	GPUModel     string    `json:"gpuModel"`
	GPUCount     int       `json:"gpuCount"`
	CreatedAt    time.Time `json:"createdAt"`
	GPUs         []struct {
		Index       int    `json:"index"`
		UUID        string `json:"uuid"`
		Model       string `json:"model"`
		PCIDeviceID string `json:"pciDeviceId"`
		MemoryMiB   int    `json:"memoryMiB"`
	} `json:"gpus"`
}

type connection struct {
	Edges []struct {
		Cursor string `json:"cursor"`
		Node   node   `json:"node"`
	} `json:"edges"`
	PageInfo struct {
		HasNextPage bool    `json:"hasNextPage"`
		EndCursor   *string `json:"endCursor"`
	} `json:"pageInfo"`
}

const nodeFields = `id name status region verification verificationLevel gpuModel gpuCount createdAt`

const listQuery = `query($first: Int!, $after: String, $filter: DeviceFilter, $orderBy: DeviceOrder) {
	devices(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
		edges { cursor node { ` + nodeFields + ` } }
		pageInfo { hasNextPage endCursor }
	}
}`

func (e *env) page(first int, after *string, filter, order map[string]any) connection {
	e.t.Helper()
	vars := map[string]any{"first": first, "after": after, "filter": filter, "orderBy": order}
	var out struct{ Devices connection }
	e.post(listQuery, vars).Decode(e.t, &out)
	return out.Devices
}

// walk pages through a whole listing and returns the nodes in order; between pages it calls
// between (which may insert rows).
func (e *env) walk(first int, filter, order map[string]any, between func(page int)) []node {
	e.t.Helper()
	var all []node
	var after *string
	for page := 0; ; page++ {
		c := e.page(first, after, filter, order)
		if len(c.Edges) > first {
			e.t.Fatalf("page %d has %d edges, asked for %d", page, len(c.Edges), first)
		}
		for _, edge := range c.Edges {
			all = append(all, edge.Node)
		}
		if !c.PageInfo.HasNextPage {
			return all
		}
		if c.PageInfo.EndCursor == nil || *c.PageInfo.EndCursor != c.Edges[len(c.Edges)-1].Cursor {
			e.t.Fatalf("page %d: endCursor is not the last edge's cursor", page)
		}
		after = c.PageInfo.EndCursor
		if between != nil {
			between(page)
		}
		if page > 10000 {
			e.t.Fatal("listing does not end")
		}
	}
}

// ids returns the IDs of devices matching a WHERE clause written by the test itself.
func (e *env) ids(where string, args ...any) []string {
	e.t.Helper()
	var out []string
	if err := e.x.Select(&out, `SELECT id FROM devices WHERE `+where, args...); err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func nodeIDs(ns []node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	sort.Strings(out)
	return out
}

var orders = []struct {
	field, dir string
	less       func(a, b node) bool // strict order the listing must follow
}{
	{"CREATED_AT", "DESC", func(a, b node) bool {
		return a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID
	}},
	{"CREATED_AT", "ASC", func(a, b node) bool {
		return a.CreatedAt.Before(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID
	}},
	{"NAME", "ASC", func(a, b node) bool { return a.Name < b.Name || a.Name == b.Name && a.ID < b.ID }},
	{"NAME", "DESC", func(a, b node) bool { return a.Name > b.Name || a.Name == b.Name && a.ID > b.ID }},
	// Strength, ties by creation time then ID, all in the direction asked.
	{"VERIFICATION_LEVEL", "ASC", func(a, b node) bool {
		ra, rb := levelRank(a.Level), levelRank(b.Level)
		return ra < rb || ra == rb && (a.CreatedAt.Before(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID)
	}},
	{"VERIFICATION_LEVEL", "DESC", func(a, b node) bool {
		ra, rb := levelRank(a.Level), levelRank(b.Level)
		return ra > rb || ra == rb && (a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID)
	}},
}

// levelRank is the documented strength order: FLAGGED < PENDING < SELF_REPORTED < ATTESTED.
func levelRank(l string) int {
	return slices.Index([]string{"FLAGGED", "PENDING", "SELF_REPORTED", "ATTESTED"}, l)
}

func TestPaginationHasNoDuplicatesOrGapsWhileRowsAreInserted(t *testing.T) {
	t.Parallel()
	for _, o := range orders {
		t.Run(o.field+"_"+o.dir, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 120, gateway.Config{})
			before := e.ids("true")
			owner := ""
			if err := e.x.Get(&owner, `SELECT id FROM users LIMIT 1`); err != nil {
				t.Fatal(err)
			}
			inserted := 0
			got := e.walk(7, nil, map[string]any{"field": o.field, "direction": o.dir}, func(page int) {
				// Rows arrive between pages: some sort before the cursor, some after, and some
				// share the cursor's creation time exactly.
				_, err := e.x.Exec(`INSERT INTO devices (owner_id, name, region, created_at)
					SELECT $1, 'ins-' || $2 || '-' || g, 'us-east',
					       (SELECT created_at FROM devices ORDER BY random() LIMIT 1)
					FROM generate_series(1, 2) g`, owner, page)
				if err != nil {
					t.Fatal(err)
				}
				inserted += 2
			})
			seen := map[string]bool{}
			for i, n := range got {
				if seen[n.ID] {
					t.Fatalf("device %s listed twice", n.ID)
				}
				seen[n.ID] = true
				if i > 0 && !o.less(got[i-1], n) {
					t.Fatalf("position %d: %+v listed after %+v", i, n, got[i-1])
				}
			}
			for _, id := range before {
				if !seen[id] {
					t.Fatalf("device %s present before the walk was never listed", id)
				}
			}
			if inserted == 0 {
				t.Fatal("no rows were inserted between pages")
			}
		})
	}
}

func TestEveryFilterMatchesTheDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 400, gateway.Config{})
	cases := []struct {
		name   string
		filter map[string]any
		where  string
		args   []any
	}{
		{"status UP", map[string]any{"status": "UP"}, "status = 'UP'", nil},
		{"status DOWN", map[string]any{"status": "DOWN"}, "status = 'DOWN'", nil},
		{"status PAUSED", map[string]any{"status": "PAUSED"}, "status = 'PAUSED'", nil},
		{"verification FLAGGED", map[string]any{"verification": "FLAGGED"}, "verification = 'FLAGGED'", nil},
		{"verification PENDING", map[string]any{"verification": "PENDING"}, "verification = 'PENDING'", nil},
		{"region", map[string]any{"region": "eu-west"}, "region = 'eu-west'", nil},
		{"gpu model", map[string]any{"gpuModel": "NVIDIA H100 SXM5 80GB"}, "gpu_model = 'NVIDIA H100 SXM5 80GB'", nil},
		{"all combined", map[string]any{"status": "UP", "region": "us-east", "verification": "VERIFIED",
			"gpuModel": "NVIDIA B200"},
			"status = 'UP' AND region = 'us-east' AND verification = 'VERIFIED' AND gpu_model = 'NVIDIA B200'", nil},
		{"level ATTESTED", map[string]any{"verificationLevel": "ATTESTED"}, "verification_level = 'ATTESTED'", nil},
		{"level SELF_REPORTED", map[string]any{"verificationLevel": "SELF_REPORTED"}, "verification_level = 'SELF_REPORTED'", nil},
		{"level PENDING", map[string]any{"verificationLevel": "PENDING"}, "verification_level = 'PENDING'", nil},
		{"level FLAGGED", map[string]any{"verificationLevel": "FLAGGED"}, "verification_level = 'FLAGGED'", nil},
		// The deprecated filter: VERIFIED is SELF_REPORTED or ATTESTED.
		{"verification VERIFIED", map[string]any{"verification": "VERIFIED"}, "verification_level IN ('SELF_REPORTED', 'ATTESTED')", nil},
		{"level and status", map[string]any{"verificationLevel": "ATTESTED", "status": "UP"}, "verification_level = 'ATTESTED' AND status = 'UP'", nil},
		{"level against the deprecated state", map[string]any{"verificationLevel": "ATTESTED", "verification": "PENDING"}, "false", nil},
		{"unknown region", map[string]any{"region": "moon-1"}, "false", nil},
		{"SQL metacharacters", map[string]any{"region": "x' OR '1'='1", "gpuModel": "%"}, "false", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := *e
			e.t = t
			want := e.ids(c.where, c.args...)
			if c.where != "false" && len(want) == 0 {
				t.Fatalf("demo data has no device where %s: the case tests nothing", c.where)
			}
			got := e.walk(100, c.filter, nil, nil)
			if !slices.Equal(nodeIDs(got), want) {
				t.Fatalf("filter %v: got %d devices, want %d", c.filter, len(got), len(want))
			}
			for _, n := range got { // the deprecated field answers from the level
				if want := map[string]string{"PENDING": "PENDING", "SELF_REPORTED": "VERIFIED", "ATTESTED": "VERIFIED",
					"FLAGGED": "FLAGGED"}[n.Level]; n.Verification != want {
					t.Fatalf("device %s: verification %s with level %s", n.ID, n.Verification, n.Level)
				}
			}
			for _, o := range orders {
				ordered := e.walk(37, c.filter, map[string]any{"field": o.field, "direction": o.dir}, nil)
				if !slices.Equal(nodeIDs(ordered), want) {
					t.Fatalf("filter %v order %s %s: got %d devices, want %d", c.filter, o.field, o.dir, len(ordered), len(want))
				}
				for i := 1; i < len(ordered); i++ {
					if !o.less(ordered[i-1], ordered[i]) {
						t.Fatalf("order %s %s broken at %d", o.field, o.dir, i)
					}
				}
			}
		})
	}
}

func TestDeviceByIDReturnsPublicFieldsAndGPUs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50, gateway.Config{})
	var id string
	if err := e.x.Get(&id, `SELECT id FROM devices WHERE gpu_count = 8 LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	var out struct{ Device node }
	e.post(`query($id: ID!) { device(id: $id) { `+nodeFields+` gpus { index uuid model pciDeviceId memoryMiB } } }`,
		map[string]any{"id": strings.ToUpper(id)}).Decode(t, &out)
	if out.Device.ID != id || len(out.Device.GPUs) != 8 || out.Device.GPUCount != 8 {
		t.Fatalf("device %s: got %+v", id, out.Device)
	}
	for i, g := range out.Device.GPUs {
		if g.Index != i || !strings.HasPrefix(g.UUID, "GPU-") || !strings.HasPrefix(g.PCIDeviceID, "0x") || g.Model != out.Device.GPUModel {
			t.Fatalf("gpu %d: %+v", i, g)
		}
	}
	r := e.post(`{ device(id: "00000000-0000-4000-8000-000000000000") { id } }`, nil)
	r.WantError(t, "NOT_FOUND", "device not found")
	if string(r.Data) != `{"device":null}` {
		t.Fatalf("data = %s", r.Data)
	}
}

func TestSearchByIDPrefixAndName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 300, gateway.Config{})
	var id, name string
	if err := e.x.QueryRow(`SELECT id, name FROM devices ORDER BY id LIMIT 1 OFFSET 17`).Scan(&id, &name); err != nil {
		t.Fatal(err)
	}
	search := func(t *testing.T, q string) []node {
		t.Helper()
		var all []node
		var after *string
		for {
			var out struct{ SearchDevices connection }
			e.post(`query($q: String!, $after: String) { searchDevices(query: $q, first: 10, after: $after) {
				edges { node { `+nodeFields+` } } pageInfo { hasNextPage endCursor } } }`,
				map[string]any{"q": q, "after": after}).Decode(t, &out)
			for _, edge := range out.SearchDevices.Edges {
				all = append(all, edge.Node)
			}
			if !out.SearchDevices.PageInfo.HasNextPage {
				return all
			}
			after = out.SearchDevices.PageInfo.EndCursor
		}
	}
	word := strings.SplitN(name, "-", 2)[0]
	cases := []struct {
		name, query, where string
		args               []any
	}{
		{"full ID", id, "id = $1", []any{id}},
		{"full ID upper case", strings.ToUpper(id), "id = $1", []any{id}},
		{"ID prefix of 4", id[:4], "id::text LIKE $1", []any{id[:4] + "%"}},
		{"ID prefix across a hyphen", id[:11], "id::text LIKE $1", []any{id[:11] + "%"}},
		{"ID prefix without hyphens", strings.ReplaceAll(id[:13], "-", ""), "id::text LIKE $1", []any{id[:13] + "%"}},
		{"name word", word, "lower(name) LIKE $1", []any{"%" + word + "%"}},
		{"name, any case", strings.ToUpper(word), "lower(name) LIKE $1", []any{"%" + word + "%"}},
		{"exact name", name, "name = $1", []any{name}},
		{"LIKE wildcards are literal", "%%%", "false", nil},
		{"underscore is literal", "___", "false", nil},
		{"SQL injection attempt", "'; DROP TABLE devices; --", "false", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := e.ids(c.where, c.args...)
			if c.where != "false" && len(want) == 0 {
				t.Fatal("the case matches nothing: it tests nothing")
			}
			got := search(t, c.query)
			gotIDs := nodeIDs(got)
			// A hex query may also match names and vice versa: the ID/name matches must be there,
			// and every result must match the query one way or the other.
			for _, w := range want {
				if !slices.Contains(gotIDs, w) {
					t.Fatalf("search %q misses %s", c.query, w)
				}
			}
			for i, n := range got {
				hex := strings.ToLower(strings.ReplaceAll(c.query, "-", ""))
				if !strings.HasPrefix(strings.ReplaceAll(n.ID, "-", ""), hex) &&
					!strings.Contains(strings.ToLower(n.Name), strings.ToLower(c.query)) {
					t.Fatalf("search %q returned unrelated %s %s", c.query, n.ID, n.Name)
				}
				if i > 0 && !(got[i-1].Name < n.Name || got[i-1].Name == n.Name && got[i-1].ID < n.ID) {
					t.Fatalf("search results not ordered by name at %d", i)
				}
			}
		})
	}
	var n int
	if err := e.x.Get(&n, `SELECT count(*) FROM devices`); err != nil || n != 300 {
		t.Fatalf("devices after injection attempts: %d, %v", n, err)
	}
}

func TestNetworkStatsMatchTheDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 250, gateway.Config{})
	var out struct {
		NetworkStats struct {
			Devices, GPUs int
			ByStatus      []struct {
				Status        string
				Devices, GPUs int
			}
			ByGpuModel []struct {
				Model         string
				Devices, GPUs int
			}
			ByRegion []struct {
				Region        string
				Devices, GPUs int
			}
			ByVerification []struct {
				Verification  string
				Devices, GPUs int
			}
		}
	}
	e.post(`{ networkStats { devices gpus byStatus { status devices gpus } byGpuModel { model devices gpus }
		byRegion { region devices gpus } byVerification { verification devices gpus } computedAt } }`, nil).Decode(t, &out)
	s := out.NetworkStats
	var devices, gpus int
	if err := e.x.QueryRow(`SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM gpus)`).Scan(&devices, &gpus); err != nil {
		t.Fatal(err)
	}
	if s.Devices != devices || s.GPUs != gpus || devices != 250 {
		t.Fatalf("totals: got %d devices %d gpus, database has %d and %d", s.Devices, s.GPUs, devices, gpus)
	}
	check := func(col, key string, gotDevices, gotGPUs int) {
		t.Helper()
		var d, g int
		err := e.x.QueryRow(`SELECT count(DISTINCT d.id), count(g.idx) FROM devices d LEFT JOIN gpus g ON g.device_id = d.id
			WHERE CASE $1 WHEN 'status' THEN d.status WHEN 'model' THEN d.gpu_model WHEN 'region' THEN d.region
			ELSE d.verification END = $2`, col, key).Scan(&d, &g)
		if err != nil {
			t.Fatal(err)
		}
		if d != gotDevices || g != gotGPUs {
			t.Fatalf("%s %s: got %d/%d, database has %d/%d", col, key, gotDevices, gotGPUs, d, g)
		}
	}
	sum := 0
	for _, r := range s.ByStatus {
		check("status", r.Status, r.Devices, r.GPUs)
		sum += r.Devices
	}
	for _, r := range s.ByGpuModel {
		check("model", r.Model, r.Devices, r.GPUs)
	}
	for _, r := range s.ByRegion {
		check("region", r.Region, r.Devices, r.GPUs)
	}
	for _, r := range s.ByVerification {
		check("verification", r.Verification, r.Devices, r.GPUs)
	}
	if sum != devices || len(s.ByGpuModel) < 2 || len(s.ByRegion) < 2 {
		t.Fatalf("breakdowns incomplete: %+v", s)
	}
}

func TestEmptyNetwork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{})
	c := e.page(10, nil, nil, nil)
	if len(c.Edges) != 0 || c.PageInfo.HasNextPage || c.PageInfo.EndCursor != nil {
		t.Fatalf("empty listing: %+v", c)
	}
	var out struct{ NetworkStats struct{ Devices, GPUs int } }
	e.post(`{ networkStats { devices gpus byStatus { status } } }`, nil).Decode(t, &out)
	if out.NetworkStats.Devices != 0 || out.NetworkStats.GPUs != 0 {
		t.Fatalf("stats of an empty network: %+v", out)
	}
}

func TestDeadlineReachesSQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 20, gateway.Config{RequestTimeout: 300 * time.Millisecond})
	// Hold a lock the listing must wait for; the request's deadline must cancel the statement
	// inside PostgreSQL, not just abandon it.
	ctx := context.Background()
	tx, err := e.x.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	waiting := func() int {
		var n int
		err := e.x.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'SELECT id, %FROM devices%'`)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	done := make(chan response, 1)
	go func() { done <- e.post(`{ devices(first: 5) { edges { node { id } } } }`, nil) }()
	sawWaiting := false
	var r response
	for r.Status == 0 {
		select {
		case r = <-done:
		case <-time.After(10 * time.Millisecond):
			sawWaiting = sawWaiting || waiting() > 0
		}
	}
	r.WantError(t, "TIMEOUT", "time limit")
	if !sawWaiting {
		t.Fatal("the listing never reached PostgreSQL: the test proves nothing")
	}
	deadline := time.Now().Add(5 * time.Second)
	for waiting() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the statement still waits in PostgreSQL after its request timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
