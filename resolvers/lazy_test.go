package resolvers

import (
	"context"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vikstrous/dataloadgen"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

// TestLoadersMadeOnFirstUse: an operation gets its loaders holder but no dataloader until a
// field asks for one, and then only that one.
func TestLoadersMadeOnFirstUse(t *testing.T) {
	var ctx context.Context
	(&Resolver{}).Loaders(context.Background(), func(c context.Context) graphql.ResponseHandler {
		ctx = c
		return nil
	})
	l := loadersFrom(ctx)
	if l == nil {
		t.Fatal("no loaders in the operation's context")
	}
	if l.gpus != nil || l.credentials != nil || l.attestations != nil || l.addresses != nil {
		t.Fatal("dataloaders made before any field needed one")
	}
	fetch := func(_ context.Context, ids []string) (map[string][]db.GPU, error) {
		out := map[string][]db.GPU{}
		for _, id := range ids {
			out[id] = []db.GPU{{DeviceID: id, Index: 7}}
		}
		return out, nil
	}
	got, err := load(ctx, func(l *loaders) *dataloadgen.Loader[string, []db.GPU] { return l.gpus }, fetch, "d1")
	if err != nil || len(got) != 1 || got[0].DeviceID != "d1" || got[0].Index != 7 {
		t.Fatalf("load: %+v, %v", got, err)
	}
	if l.gpus == nil || l.credentials != nil || l.attestations != nil || l.addresses != nil {
		t.Error("the GPU loader alone should exist after loading GPUs")
	}
}

// TestConnectionBuildsNoCursorUpfront: turning a page of 100 devices into a connection builds
// the end cursor only (a handful of allocations, not a JSON+base64 cursor per edge); each edge
// builds its own when asked, equal to the page's.
func TestConnectionBuildsNoCursorUpfront(t *testing.T) {
	x := dbtest.New(t)
	ctx := context.Background()
	s := db.New(x, db.Options{})
	if _, err := s.Seed(ctx, 150); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListDevices(ctx, db.ListParams{First: 100})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(50, func() { _ = toConnection(page) })
	if allocs > 12 {
		t.Errorf("toConnection of 100 devices: %.0f allocations, want at most 12", allocs)
	}
	c := toConnection(page)
	if len(c.Edges) != 100 || !c.PageInfo.HasNextPage || *c.PageInfo.EndCursor != page.Cursor(99) {
		t.Fatalf("connection: %d edges, pageInfo %+v", len(c.Edges), c.PageInfo)
	}
	for i, e := range c.Edges {
		if e.Cursor() != page.Cursor(i) || e.Node().ID != page.Devices[i].ID {
			t.Fatalf("edge %d: cursor %q node %s, want %q %s", i, e.Cursor(), e.Node().ID, page.Cursor(i), page.Devices[i].ID)
		}
	}
}
