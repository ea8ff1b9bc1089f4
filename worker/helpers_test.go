package worker

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Khan/genqlient/graphql"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/worker/client"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// testGateway is a real gpugate gateway on its own seeded database, over real HTTP.
type testGateway struct {
	x     *sqlx.DB
	store *db.DB
	url   string
	srv   *httptest.Server
}

// startGateway starts a gateway with the worker settings cfg (difficulty 12 unless set). With
// ln non-nil it serves on that listener.
func startGateway(t *testing.T, cfg resolvers.WorkerConfig, ln net.Listener) *testGateway {
	t.Helper()
	if cfg.Difficulty == 0 {
		cfg.Difficulty = 12
	}
	x := dbtest.New(t)
	store := db.New(x, db.Options{StatsTTL: -1})
	if _, err := store.Seed(context.Background(), 20); err != nil {
		t.Fatalf("seed: %v", err)
	}
	logs := testutil.LogOnFailure(t, "gateway")
	h := gateway.New(gateway.Config{Workers: cfg}, store, slog.New(slog.NewTextHandler(logs, nil)))
	srv := httptest.NewUnstartedServer(h)
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testGateway{x: x, store: store, url: srv.URL, srv: srv}
}

func (g *testGateway) ownerID(t *testing.T, user string) string {
	t.Helper()
	var id string
	if err := g.x.Get(&id, `SELECT id FROM users WHERE email = $1`, user+"@example.com"); err != nil {
		t.Fatalf("owner %s: %v", user, err)
	}
	return id
}

// token creates a one-time enrollment token for the demo user (alice, bob).
func (g *testGateway) token(t *testing.T, user string) string {
	t.Helper()
	tok, _, err := g.store.CreateEnrollmentToken(context.Background(), g.ownerID(t, user))
	if err != nil {
		t.Fatalf("enrollment token: %v", err)
	}
	return tok
}

type attestationRow struct {
	Verdict string         `db:"verdict"`
	Reasons pq.StringArray `db:"reasons"`
}

// attestations returns the device's verdicts, newest first.
func (g *testGateway) attestations(t *testing.T, deviceID string) []attestationRow {
	t.Helper()
	var rows []attestationRow
	if err := g.x.Select(&rows, `SELECT verdict, reasons FROM attestations WHERE device_id = $1
		ORDER BY created_at DESC`, deviceID); err != nil {
		t.Fatal(err)
	}
	return rows
}

// public is an anonymous (unsigned) client, as the explorer uses the API.
func (g *testGateway) public() graphql.Client {
	return graphql.NewClient(g.url+"/graphql", http.DefaultClient)
}

// listed finds the device in the public devices listing.
func (g *testGateway) listed(t *testing.T, deviceID string) client.PublicDevicesDevicesDeviceConnectionEdgesDeviceEdgeNodeDevice {
	t.Helper()
	var after *string
	for {
		res, err := client.PublicDevices(context.Background(), g.public(), 100, after)
		if err != nil {
			t.Fatalf("devices: %v", err)
		}
		for _, e := range res.Devices.Edges {
			if e.Node.Id == deviceID {
				return e.Node
			}
		}
		if !res.Devices.PageInfo.HasNextPage {
			t.Fatalf("device %s is not in the public listing", deviceID)
		}
		after = res.Devices.PageInfo.EndCursor
	}
}

// options are the worker options of a test: fast retries, bounded, logs in the test output.
func (g *testGateway) options(t *testing.T, profile, keyFile, token string) Options {
	return Options{
		Server: g.url, KeyFile: keyFile, EnrollToken: token, Simulate: profile, Once: true,
		Region: "eu-west", Logger: slog.New(slog.NewTextHandler(testutil.LogOnFailure(t, "worker"), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}, GiveUpAfter: 10 * time.Second,
	}
}

func keyPath(t *testing.T, name string) string {
	return filepath.Join(t.TempDir(), name)
}

// deviceOf returns the device id recorded in a key file.
func deviceOf(t *testing.T, keyFile string) string {
	t.Helper()
	k, err := LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if k.DeviceID == "" {
		t.Fatalf("%s has no deviceId", keyFile)
	}
	return k.DeviceID
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// countingTransport counts the GraphQL operations sent through it, by operation name.
type countingTransport struct {
	mu  sync.Mutex
	ops map[string]int
	all atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	c.all.Add(1)
	c.mu.Lock()
	if c.ops == nil {
		c.ops = map[string]int{}
	}
	for _, op := range []string{"EnrollDevice", "RequestChallenge", "SubmitProof", "Heartbeat"} {
		if strings.Contains(string(body), `"operationName":"`+op+`"`) {
			c.ops[op]++
		}
	}
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (c *countingTransport) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops[op]
}

var challengeID = regexp.MustCompile(`"id":"[^"]*"`)

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// proxy relays every connection accepted on ln to target until the test ends.
func proxy(t *testing.T, ln net.Listener, target string) {
	t.Cleanup(func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { _, _ = io.Copy(u, c) }()
			_, _ = io.Copy(c, u)
		}()
	}
}
