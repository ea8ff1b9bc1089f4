package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
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
	store := db.New(x, db.Options{StatsTTL: -1})
	if n > 0 {
		if _, err := store.Seed(context.Background(), n); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := httptest.NewServer(gateway.New(cfg, store, log))
	t.Cleanup(srv.Close)
	return &env{t: t, x: x, db: store, url: srv.URL, log: logs}
}

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

func (e gqlError) code() string { s, _ := e.Extensions["code"].(string); return s }

type response struct {
	Status  int             `json:"-"`
	Header  http.Header     `json:"-"`
	Data    json.RawMessage `json:"data"`
	Errors  []gqlError      `json:"errors"`
	RawBody string          `json:"-"`
}

// post sends one GraphQL operation and decodes the response.
func (e *env) post(query string, vars map[string]any) response {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return e.raw(http.MethodPost, "/graphql", "application/json", body, nil)
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, RawBody: string(b)}
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out); err != nil {
			e.t.Fatalf("decode %s: %v", b, err)
		}
	}
	return out
}

// data decodes a successful response's data into v, failing on any error.
func (r response) data(t *testing.T, v any) {
	t.Helper()
	if len(r.Errors) > 0 || r.Status != http.StatusOK {
		t.Fatalf("unexpected errors (HTTP %d): %s", r.Status, r.RawBody)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode data %s: %v", r.Data, err)
	}
}

// wantError asserts exactly one error with code, whose message contains msg.
func (r response) wantError(t *testing.T, code, msg string) gqlError {
	t.Helper()
	if len(r.Errors) != 1 {
		t.Fatalf("want one %s error, got HTTP %d: %s", code, r.Status, r.RawBody)
	}
	return r.wantErrors(t, code, msg)[0]
}

// wantErrors asserts at least one error, every one with code and a message containing msg.
func (r response) wantErrors(t *testing.T, code, msg string) []gqlError {
	t.Helper()
	if len(r.Errors) == 0 {
		t.Fatalf("want %s errors, got HTTP %d: %s", code, r.Status, r.RawBody)
	}
	for _, got := range r.Errors {
		if got.code() != code {
			t.Fatalf("want code %s, got %q: %s", code, got.code(), r.RawBody)
		}
		if !strings.Contains(got.Message, msg) {
			t.Fatalf("want message containing %q, got %q", msg, got.Message)
		}
	}
	return r.Errors
}

// newBenchEnv serves a gateway on a fresh database with n demo devices and returns its URL.
func newBenchEnv(b *testing.B, n int) string {
	b.Helper()
	x := dbtest.New(b)
	store := db.New(x, db.Options{})
	if _, err := store.Seed(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gateway.New(gateway.Config{}, store, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	b.Cleanup(srv.Close)
	return srv.URL
}
