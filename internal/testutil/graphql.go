package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// GQLError is one error of a GraphQL response.
type GQLError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// Code returns the error's extensions.code, or "".
func (e GQLError) Code() string { s, _ := e.Extensions["code"].(string); return s }

// Response is an HTTP response from the gateway, decoded as GraphQL when its body is a JSON
// object.
type Response struct {
	Status  int             `json:"-"`
	Header  http.Header     `json:"-"`
	Data    json.RawMessage `json:"data"`
	Errors  []GQLError      `json:"errors"`
	RawBody string          `json:"-"`
}

// PostGraphQL sends one GraphQL operation to base+"/graphql", with token as the bearer token
// unless it is empty, and decodes the response. It fails t if the request cannot be sent.
func PostGraphQL(ctx context.Context, t testing.TB, base, token, query string, vars map[string]any) Response {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return Do(t, req)
}

// Do sends req and decodes the response, as GraphQL when its body is a JSON object. It fails t
// if the request cannot be sent or such a body does not decode.
func Do(t testing.TB, req *http.Request) Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req) // #nosec G704 -- a test helper: req goes to the test's own server
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := Response{Status: resp.StatusCode, Header: resp.Header, RawBody: string(b)}
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
	return out
}

// Decode decodes a successful response's data into v, failing t on any error.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if len(r.Errors) > 0 || r.Status != http.StatusOK {
		t.Fatalf("unexpected errors (HTTP %d): %s", r.Status, r.RawBody)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode data %s: %v", r.Data, err)
	}
}

// WantError asserts exactly one error with code, whose message contains msg, and returns it.
func (r Response) WantError(t testing.TB, code, msg string) GQLError {
	t.Helper()
	if len(r.Errors) != 1 {
		t.Fatalf("want one %s error, got HTTP %d: %s", code, r.Status, r.RawBody)
	}
	return r.WantErrors(t, code, msg)[0]
}

// WantErrors asserts at least one error, every one with code and a message containing msg.
func (r Response) WantErrors(t testing.TB, code, msg string) []GQLError {
	t.Helper()
	if len(r.Errors) == 0 {
		t.Fatalf("want %s errors, got HTTP %d: %s", code, r.Status, r.RawBody)
	}
	for _, got := range r.Errors {
		if got.Code() != code {
			t.Fatalf("want code %s, got %q: %s", code, got.Code(), r.RawBody)
		}
		if !strings.Contains(got.Message, msg) {
			t.Fatalf("want message containing %q, got %q", msg, got.Message)
		}
	}
	return r.Errors
}
