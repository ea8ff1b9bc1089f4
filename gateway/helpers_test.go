package gateway_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// env is one test's gateway on its own database, reached over real HTTP.
type env struct {
	t   *testing.T
	x   *sqlx.DB
	db  *db.DB
	url string
	log *testutil.SyncBuffer
}

// newEnv starts a gateway in front of a fresh database seeded with n demo devices (none if 0).
func newEnv(t *testing.T, n int, cfg gateway.Config) *env {
	t.Helper()
	x := dbtest.New(t)
	if n > 0 { // as the owner seeds (cli/seed.go); the gateway runs on the app and explorer roles
		if _, err := db.New(x, db.Options{}).Seed(context.Background(), n); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	store := dbtest.Store(t, x, db.Options{StatsTTL: -1})
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := httptest.NewServer(gateway.New(cfg, store, log))
	t.Cleanup(srv.Close)
	return &env{t: t, x: x, db: store, url: srv.URL, log: logs}
}

// response and gqlError are the shared test client's (internal/testutil).
type (
	response = testutil.Response
	gqlError = testutil.GQLError
)

// post sends one GraphQL operation and decodes the response.
func (e *env) post(query string, vars map[string]any) response {
	e.t.Helper()
	return testutil.PostGraphQL(context.Background(), e.t, e.url, "", query, vars)
}

func (e *env) raw(method, path, contentType string, body []byte, header http.Header) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return testutil.Do(e.t, req)
}
