package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpugate/gpugate/internal/testutil"
	"github.com/gpugate/gpugate/resolvers"
)

func TestKeyFileIsPrivateAndStable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "key.json")
	k, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	k.DeviceID, k.CredentialID = "dev", "cred"
	if err := k.Save(); err != nil {
		t.Fatal(err)
	}
	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || !bytes.Equal(again.Key(), k.Key()) || again.DeviceID != "dev" || again.CredentialID != "cred" {
		t.Fatalf("reload: %v %v %+v", created, err, again)
	}
	var raw map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &raw); err != nil || raw["privateKey"] == nil || raw["deviceId"] != "dev" || raw["credentialId"] != "cred" {
		t.Fatalf("file content: %s", data)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after save %v", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestKeyFileReadableByOthersIsRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key.json")
	if _, _, err := LoadOrCreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateKeyFile(path)
	if !errors.Is(err, ErrKeyFileExposed) || !strings.Contains(err.Error(), "chmod 600 "+path) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("0644 key file: %v", err)
	}
	var stderr bytes.Buffer
	code := mainContext(context.Background(), []string{"--server", "http://127.0.0.1:1", "--simulate", "dgxh100", "--key-file", path, "--once"},
		nil, &bytes.Buffer{}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "chmod 600") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

func TestHelpListsEveryFlagAndProfile(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := mainContext(context.Background(), []string{"--help"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exits %d", code)
	}
	for _, want := range append([]string{"-server", "-key-file", "-enroll", "-simulate", "-clone-uuids-from", "-region", "-name",
		"-once", "-reprove-every", "-request-timeout", "-retry-initial", "-retry-max", "-give-up-after", "-log-level", "-log-format",
		"-insecure", "-max-difficulty", "-max-challenge-ttl"},
		ProfileNames()...) {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	if code := mainContext(context.Background(), []string{"--simulate", "dgx-x"}, nil, &stdout, &stderr); code != 2 {
		t.Fatalf("an unknown profile exits %d, want 2", code)
	}
	if code := mainContext(context.Background(), []string{"--bogus"}, nil, &stdout, &stderr); code != 2 {
		t.Fatalf("an unknown flag exits %d, want 2", code)
	}
}

func TestNotEnrolledWithoutToken(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	err := Run(context.Background(), g.options(t, "dgxh100", keyPath(t, "k.json"), ""))
	if err == nil || !strings.Contains(err.Error(), "--enroll TOKEN") {
		t.Fatalf("run without a token: %v", err)
	}
}

// The gateway is down when the worker starts and comes up later: the worker retries with
// backoff and completes the cycle.
func TestRetriesUntilTheGatewayIsUp(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here until the gateway starts

	logs := testutil.LogOnFailure(t, "worker (retry)")
	done := make(chan error, 1)
	o := Options{Server: "http://" + addr, KeyFile: keyPath(t, "k.json"), Simulate: "dgxh100", Once: true,
		Backoff: Backoff{Initial: 20 * time.Millisecond, Max: 80 * time.Millisecond}, GiveUpAfter: 20 * time.Second}
	o.Logger = newTestLogger(logs)

	// The token comes from the gateway's database, which must exist before the worker starts:
	// start the gateway's store now and its HTTP listener later.
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	o.EnrollToken = g.token(t, "alice")
	go func() { done <- Run(context.Background(), o) }()

	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(logs.String(), "retrying") {
		t.Fatalf("no retry logged while the gateway was down:\n%s", logs.String())
	}
	relay, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	go proxy(t, relay, g.srv.Listener.Addr().String())
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the worker did not finish after the gateway came up")
	}
}

func TestGivesUpOnAnUnreachableGateway(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	logs := testutil.LogOnFailure(t, "worker")
	o := Options{Server: "http://" + addr, KeyFile: keyPath(t, "k.json"), Simulate: "dgxh100", Once: true, EnrollToken: "x",
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond}, GiveUpAfter: 250 * time.Millisecond,
		Logger: newTestLogger(logs)}
	start := time.Now()
	err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "giving up") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("run: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	if n := strings.Count(logs.String(), "retrying"); n < 3 {
		t.Fatalf("%d retries logged", n)
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	seen := map[time.Duration]bool{}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
			}
			seen[d] = true
		}
	}
	if len(seen) < 10 {
		t.Fatal("no jitter")
	}
}

// Without --once the worker heartbeats until its context ends, then returns nil.
func TestLoopStopsCleanlyWhenCancelled(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{HeartbeatEvery: time.Second}, nil)
	path := keyPath(t, "k.json")
	tr := &countingTransport{}
	o := g.options(t, "dgxh100", path, g.token(t, "alice"))
	o.Once, o.Transport = false, tr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	deadline := time.Now().Add(10 * time.Second)
	for tr.count("Heartbeat") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no second heartbeat")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the worker did not stop")
	}
	if n := tr.count("SubmitProof"); n != 1 {
		t.Fatalf("%d proofs in a few seconds; the worker re-proves every ReproveEvery", n)
	}
}

// SIGTERM stops `gpugate worker` cleanly (exit 0). Not parallel: the signal goes to the whole
// test process, and no other Main may be listening for it.
func TestSIGTERMStopsMain(t *testing.T) {
	g := startGateway(t, resolvers.WorkerConfig{HeartbeatEvery: time.Second}, nil)
	path := keyPath(t, "k.json")
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"--server", g.url, "--simulate", "dgxh100", "--enroll", g.token(t, "alice"),
			"--key-file", path, "--log-level", "warn"})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var seen bool
		k, err := LoadKeyFile(path)
		if err == nil && k.DeviceID != "" {
			_ = g.x.Get(&seen, `SELECT last_seen_at IS NOT NULL FROM devices WHERE id = $1`, k.DeviceID)
		}
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker never heartbeated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not stop the worker")
	}
}
