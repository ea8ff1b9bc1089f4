package db_test

// Fixtures of the store conformance suite: every test gets its own database (dbtest), real
// users created the way a login creates them and real devices enrolled the way a worker
// enrolls them, so each store method is exercised on rows the gateway itself writes.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"

	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
)

type fixture struct {
	t     *testing.T
	x     *sqlx.DB
	store *db.DB
	ctx   context.Context
}

// newFixture marks the test parallel and gives it a fresh migrated database. Stats are never
// cached, so a test sees its own writes.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	t.Parallel()
	x := dbtest.New(t)
	return &fixture{t: t, x: x, store: db.New(x, db.Options{StatsTTL: -1}), ctx: t.Context()}
}

// user provisions a user through UserForIdentity, as a first login does.
func (f *fixture) user(name string) string {
	f.t.Helper()
	u, err := f.store.UserForIdentity(f.ctx, db.Identity{Issuer: "https://issuer.test", Subject: name + "-" + uuid.NewString(),
		Email: name + "@example.test", Name: name})
	if err != nil {
		f.t.Fatalf("provision %s: %v", name, err)
	}
	return u.ID
}

// h100 is one H100 SXM5 as NVML reports it, with the given UUID and a serial derived from it.
func h100(uuid string, serial string) attest.GPU {
	return attest.GPU{UUID: uuid, Name: "NVIDIA H100 80GB HBM3", PCIDeviceID: 0x2330, PCIVendorID: 0x10DE,
		MemoryTotalBytes: 80 << 30, Architecture: "Hopper", ComputeMajor: 9, ComputeMinor: 0, Serial: serial}
}

// snapshot returns a host snapshot with one H100 per UUID (serial "" when none is wanted).
func snapshot(uuids ...string) attest.Snapshot {
	s := attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040}
	for _, u := range uuids {
		s.GPUs = append(s.GPUs, h100(u, ""))
	}
	return s
}

// gpuUUID returns a fresh NVML-style GPU UUID.
func gpuUUID() string { return "GPU-" + uuid.NewString() }

// device is an enrolled device and the worker key that enrolled it.
type device struct {
	ID, Owner, Credential string
	Priv                  ed25519.PrivateKey
	Pub                   ed25519.PublicKey
	Snapshot              attest.Snapshot
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// token creates an enrollment token for owner.
func (f *fixture) token(owner string) string {
	f.t.Helper()
	tok, _, err := f.store.CreateEnrollmentToken(f.ctx, owner)
	if err != nil {
		f.t.Fatalf("enrollment token: %v", err)
	}
	return tok
}

// enroll enrolls a device of owner with a fresh key, a fresh token and the snapshot.
func (f *fixture) enroll(owner string, snap attest.Snapshot) device {
	f.t.Helper()
	pub, priv := newKey(f.t)
	id, cred, err := f.store.Enroll(f.ctx, db.Enrollment{Token: f.token(owner), PublicKey: pub, Region: "eu-west",
		Hostname: "node-1.internal", IP: "192.0.2.10", Snapshot: snap})
	if err != nil {
		f.t.Fatalf("enroll: %v", err)
	}
	return device{ID: id, Owner: owner, Credential: cred, Priv: priv, Pub: pub, Snapshot: snap}
}

// enrollGPUs enrolls a device of owner holding n fresh GPUs.
func (f *fixture) enrollGPUs(owner string, n int) device {
	f.t.Helper()
	uuids := make([]string, n)
	for i := range uuids {
		uuids[i] = gpuUUID()
	}
	return f.enroll(owner, snapshot(uuids...))
}

// get returns a device row through the store (Device hides removed devices; this does not).
func (f *fixture) row(id string) db.Device {
	f.t.Helper()
	dev, err := f.store.Device(f.ctx, id)
	if err != nil {
		f.t.Fatalf("device %s: %v", id, err)
	}
	return dev
}

// scalar runs a query returning one value.
func scalar[T any](f *fixture, q string, args ...any) T {
	f.t.Helper()
	var v T
	if err := f.x.GetContext(f.ctx, &v, q, args...); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return v
}

func (f *fixture) exec(q string, args ...any) {
	f.t.Helper()
	if _, err := f.x.ExecContext(f.ctx, q, args...); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
}

// holder returns the device holding a GPU UUID, or "".
func (f *fixture) holder(gpu string) string {
	f.t.Helper()
	return scalar[string](f, `SELECT coalesce((SELECT device_id::text FROM gpus WHERE uuid = $1), '')`, gpu)
}

// wantKind fails unless err wraps the sentinel kind.
func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got %v, want %v", what, err, kind)
	}
}

// challenge issues an open challenge for the device.
func (f *fixture) challenge(deviceID string) db.IssuedChallenge {
	f.t.Helper()
	c, err := f.store.CreateChallenge(f.ctx, deviceID, 4, 60e9)
	if err != nil {
		f.t.Fatalf("challenge: %v", err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}
