package gateway_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/guard"
	"github.com/gpugate/gpugate/resolvers"
)

var noLimit = guard.Rate{Every: -1}

// The per-device limit holds across replicas: calls alternating between two gateways count
// once. The Nth write goes, the N+1th is RATE_LIMITED with the retry-after hint in extensions
// and in HTTP Retry-After, and the device keeps the last accepted write.
func TestDeviceWriteLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{WriteLimits: guard.LimitConfig{User: noLimit, Distinct: noLimit,
		Target: guard.Rate{Burst: 6, Every: time.Hour}}}, replicaOpts{})
	alice := rs[0].user("alice")
	for i := range 6 {
		rs[i%2].as(alice, renameMutation, map[string]any{"id": rs[0].aliceDevice, "n": fmt.Sprint("name-", i)}).Decode(t, &struct{}{})
	}
	for i, r := range rs {
		resp := r.as(alice, renameMutation, map[string]any{"id": r.aliceDevice, "n": "refused"})
		e := resp.WantError(t, "RATE_LIMITED", "write limit of this device")
		ra, _ := e.Extensions["retryAfterSeconds"].(float64)
		if ra < 3000 || ra > 3600 {
			t.Fatalf("replica %d: retryAfterSeconds %v; the next token is due in about an hour", i, e.Extensions)
		}
		if h := resp.Header.Get("Retry-After"); h != strconv.Itoa(int(ra)) {
			t.Fatalf("replica %d: HTTP Retry-After %q, extensions say %v", i, h, ra)
		}
	}
	// The limit is the device's, whoever writes: the admin's moderation is not a classed write,
	// but bob's write on his own device is another device's allowance.
	rs[1].as(rs[1].user("bob"), renameMutation, map[string]any{"id": rs[0].bobDevic, "n": "bob"}).Decode(t, &struct{}{})
	var name string
	if err := rs[0].x.Get(&name, `SELECT name FROM devices WHERE id = $1`, rs[0].aliceDevice); err != nil || name != "name-5" {
		t.Fatalf("stored name %q (%v); want the last accepted write", name, err)
	}
	if !strings.Contains(rs[0].log.String()+rs[1].log.String(), "reason=RATE_LIMITED") {
		t.Fatal("the refusals are not in the audit log")
	}
}

// The acceptance check, with the default limits: 300 updateDevice calls by the owner on one
// device within a minute get RATE_LIMITED, and the device's stored state equals the last
// accepted write (nothing half-written).
func TestOwnerRewritingOneDeviceIsLimited(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{}, replicaOpts{})
	alice := rs[0].user("alice")
	start := time.Now()
	var accepted, limited int
	lastAccepted := ""
	for i := range 300 {
		n := fmt.Sprintf("rename-%03d", i)
		r := rs[i%2].as(alice, `mutation($id: ID!, $n: String, $l: [String!]) { updateDevice(id: $id, input: {name: $n, labels: $l}) { id name } }`,
			map[string]any{"id": rs[0].aliceDevice, "n": n, "l": []string{n}})
		switch code := errorCode(r); code {
		case "":
			accepted++
			lastAccepted = n
		case "RATE_LIMITED":
			limited++
		default:
			t.Fatalf("call %d: %s", i, r.RawBody)
		}
	}
	if elapsed := time.Since(start); elapsed > time.Minute {
		t.Logf("300 calls took %s (more than the minute of the acceptance check)", elapsed)
	}
	d := guard.DefaultLimits().Target
	if limited == 0 || accepted < d.Burst {
		t.Fatalf("%d accepted, %d RATE_LIMITED; want the first %d accepted and the rest mostly limited", accepted, limited, d.Burst)
	}
	t.Logf("300 calls: %d accepted, %d RATE_LIMITED", accepted, limited)
	var name, labels string
	if err := rs[0].x.QueryRow(`SELECT name, array_to_string(labels, ',') FROM devices WHERE id = $1`, rs[0].aliceDevice).Scan(&name, &labels); err != nil {
		t.Fatal(err)
	}
	if name != lastAccepted || labels != lastAccepted {
		t.Fatalf("stored %q/%q; want the last accepted write %q", name, labels, lastAccepted)
	}
}

// An owner managing a fleet of 500 devices — renaming, pausing and resuming every one within
// minutes, by script, through two replicas — is never limited by the default limits.
func TestFleetOwnerIsNotLimited(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{}, replicaOpts{})
	o := rs[0]
	if _, err := o.x.Exec(`INSERT INTO devices (id, owner_id, name, region, status, gpu_model, gpu_count)
		SELECT gen_random_uuid(), $1, 'fleet-' || i, 'eu-west', 'UP', 'H100', 8 FROM generate_series(1, 500) i`, o.alice); err != nil {
		t.Fatal(err)
	}
	var fleet []string
	if err := o.x.Select(&fleet, `SELECT id FROM devices WHERE owner_id = $1 AND name LIKE 'fleet-%' ORDER BY id`, o.alice); err != nil || len(fleet) != 500 {
		t.Fatalf("%d fleet devices (%v)", len(fleet), err)
	}
	alice := o.user("alice")
	ops := []string{renameMutation, `mutation($id: ID!) { pauseDevice(id: $id) { id } }`, `mutation($id: ID!) { resumeDevice(id: $id) { id } }`}
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for g := range 4 { // a script with four connections
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(fleet); i += 4 {
				for k, op := range ops {
					r := rs[(i+k)%2].as(alice, op, map[string]any{"id": fleet[i], "n": "renamed-" + strconv.Itoa(i)})
					if len(r.Errors) > 0 {
						mu.Lock()
						failures = append(failures, r.RawBody)
						mu.Unlock()
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("the fleet owner was refused %d times: %s", len(failures), failures[0])
	}
	var renamed int
	if err := o.x.Get(&renamed, `SELECT count(*) FROM devices WHERE owner_id = $1 AND name LIKE 'renamed-%' AND NOT paused`, o.alice); err != nil || renamed != 500 {
		t.Fatalf("%d devices renamed and resumed (%v)", renamed, err)
	}
}

// The per-user limit counts all of one identity's writes across devices and replicas, and only
// that identity's; the distinct-devices limit refuses the (N+1)th new device while the devices
// already written stay writable.
func TestUserAndDistinctDeviceLimits(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{WriteLimits: guard.LimitConfig{Target: noLimit, Distinct: noLimit,
		User: guard.Rate{Burst: 4, Every: time.Hour}}}, replicaOpts{})
	o := rs[0]
	var devices []string
	if err := o.x.Select(&devices, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 5`, o.alice); err != nil || len(devices) < 5 {
		t.Fatalf("alice owns %d demo devices (%v)", len(devices), err)
	}
	alice := o.user("alice")
	for i := range 4 {
		rs[i%2].as(alice, `mutation($id: ID!) { pauseDevice(id: $id) { id } }`, map[string]any{"id": devices[i]}).Decode(t, &struct{}{})
	}
	rs[1].as(alice, `mutation($id: ID!) { pauseDevice(id: $id) { id } }`, map[string]any{"id": devices[4]}).WantError(t, "RATE_LIMITED", "per-user")
	rs[0].as(alice, `mutation { createEnrollmentToken { token } }`, nil).WantError(t, "RATE_LIMITED", "per-user")
	rs[1].as(o.user("bob"), `mutation($id: ID!) { pauseDevice(id: $id) { id } }`, map[string]any{"id": o.bobDevic}).Decode(t, &struct{}{})

	rd := newReplicas(t, 2, gateway.Config{WriteLimits: guard.LimitConfig{Target: noLimit, User: noLimit,
		Distinct: guard.Rate{Burst: 3, Every: 20 * time.Minute}, DistinctWindow: time.Hour}}, replicaOpts{})
	if err := rd[0].x.Select(&devices, `SELECT id FROM devices WHERE owner_id = $1 ORDER BY id LIMIT 4`, rd[0].alice); err != nil || len(devices) < 4 {
		t.Fatalf("alice owns %d demo devices (%v)", len(devices), err)
	}
	alice = rd[0].user("alice")
	for i, d := range []int{0, 1, 2, 0, 1, 2} {
		rd[i%2].as(alice, renameMutation, map[string]any{"id": devices[d], "n": "x"}).Decode(t, &struct{}{})
	}
	rd[1].as(alice, renameMutation, map[string]any{"id": devices[3], "n": "x"}).WantError(t, "RATE_LIMITED", "distinct devices")
	rd[0].as(alice, renameMutation, map[string]any{"id": devices[2], "n": "y"}).Decode(t, &struct{}{})
}

// The worker limits moved to PostgreSQL hold across replicas: a device's heartbeats (taken in
// the batched write), its challenges and a user's enrollment tokens, alternating between two
// gateways, get one allowance, not one per gateway; a refused heartbeat writes nothing.
func TestWorkerLimitsAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, gateway.Config{Workers: resolvers.WorkerConfig{
		HeartbeatRate:       resolvers.Rate{Burst: 4, Every: time.Hour},
		ChallengeRate:       resolvers.Rate{Burst: 3, Every: time.Hour},
		EnrollmentTokenRate: resolvers.Rate{Burst: 3, Every: time.Hour},
	}}, replicaOpts{})
	a, b := rs[0], rs[1]
	w := a.enrolledWorker(t, "alice", h100Host(81)) // alice's first enrollment token
	wb := *w
	wb.o = b.owners
	workers := []*worker{w, &wb}
	for i := range 4 {
		workers[i%2].call(heartbeatMutation, map[string]any{"d": w.deviceID}).Decode(t, &struct{}{})
	}
	var seen time.Time
	if err := a.x.Get(&seen, `UPDATE devices SET last_seen_at = now() - interval '1 day' WHERE id = $1 RETURNING last_seen_at`, w.deviceID); err != nil {
		t.Fatal(err)
	}
	for _, wk := range workers { // each gateway's own pre-check has room left: the shared bucket refuses
		e := wk.call(heartbeatMutation, map[string]any{"d": w.deviceID}).WantError(t, "RATE_LIMITED", "heartbeat")
		if ra, _ := e.Extensions["retryAfterSeconds"].(float64); ra < 3000 {
			t.Fatalf("retry-after %v", e.Extensions)
		}
	}
	var after time.Time
	if err := a.x.Get(&after, `SELECT last_seen_at FROM devices WHERE id = $1`, w.deviceID); err != nil || !after.Equal(seen) {
		t.Fatalf("a refused heartbeat wrote last_seen_at (%v -> %v, %v)", seen, after, err)
	}
	for i := range 3 {
		workers[i%2].challenge(t)
	}
	workers[1].call(challengeMutation, map[string]any{"d": w.deviceID}).WantError(t, "RATE_LIMITED", "requestChallenge")
	alice := a.user("alice")
	for i := range 2 { // the third and fourth of alice's tokens: one was used to enroll
		rs[i%2].as(alice, `mutation { createEnrollmentToken { token } }`, nil).Decode(t, &struct{}{})
	}
	b.as(alice, `mutation { createEnrollmentToken { token } }`, nil).WantError(t, "RATE_LIMITED", "createEnrollmentToken")
	var tokens int
	if err := a.x.Get(&tokens, `SELECT count(*) FROM enrollment_tokens`); err != nil || tokens != 3 {
		t.Fatalf("%d tokens stored (%v); want 3", tokens, err)
	}
}
