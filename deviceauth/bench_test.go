package deviceauth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/db/dbtest"
	"github.com/gpugate/gpugate/deviceauth"
	"github.com/gpugate/gpugate/gateway"
)

// BenchmarkSignedRequest is one signed request through the real middleware, the replay window
// in this process's memory (one replica only) or shared in PostgreSQL (db.RecordReplay), one
// request at a time on one database connection. Besides ns/op it reports the CPU time per
// request of this process (handler, signing client and HTTP both ways: the same in both) and of
// the PostgreSQL backend serving the connection, from /proc.
//
//	go test -run X -bench SignedRequest -benchtime 3000x ./deviceauth/
func BenchmarkSignedRequest(b *testing.B) {
	for _, shared := range []bool{false, true} {
		name := "memory"
		if shared {
			name = "postgres"
		}
		b.Run(name, func(b *testing.B) {
			x := dbtest.New(b)
			x.SetMaxOpenConns(1)
			store := db.New(x, db.Options{MaxOpenConns: 1})
			ctx := context.Background()
			u, err := store.UserForIdentity(ctx, db.Identity{Issuer: "https://issuer.test", Subject: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			tok, _, err := store.CreateEnrollmentToken(ctx, u.ID)
			if err != nil {
				b.Fatal(err)
			}
			device, _, err := store.Enroll(ctx, db.Enrollment{Token: tok, PublicKey: pub, Region: "r",
				Snapshot: attest.Snapshot{GPUs: []attest.GPU{{UUID: "GPU-" + uuid.NewString(), Name: "NVIDIA H100 80GB HBM3", PCIDeviceID: 0x2330}}}})
			if err != nil {
				b.Fatal(err)
			}
			o := deviceauth.Options{}
			if shared {
				o.Replays = gateway.DeviceReplays(store)
			}
			auth := deviceauth.New(storeKeys(store), o)
			srv := httptest.NewServer(auth.Middleware(rejectStatus)(whoSigned))
			defer srv.Close()
			var backend int
			if err := x.Get(&backend, `SELECT pg_backend_pid()`); err != nil {
				b.Fatal(err)
			}
			body := []byte(`{"query":"mutation { heartbeat }"}`)
			send := func() {
				hr, _ := http.NewRequest(http.MethodPost, srv.URL+"/graphql", strings.NewReader(string(body)))
				hr.Header.Set(attest.SignatureHeader, attest.SignRequest(priv, device, "POST", "/graphql", time.Now(), body))
				res, err := http.DefaultClient.Do(hr)
				if err != nil || res.StatusCode != http.StatusOK {
					b.Fatalf("%v %v", err, res)
				}
				res.Body.Close()
			}
			send() // the keys cached, the connection open
			self, pg := cpuTicks(b, os.Getpid()), cpuTicks(b, backend)
			b.ResetTimer()
			for range b.N {
				send()
			}
			b.StopTimer()
			const tick = float64(time.Second/100) / float64(time.Microsecond) // USER_HZ = 100
			b.ReportMetric(float64(cpuTicks(b, os.Getpid())-self)*tick/float64(b.N), "gw-cpu-µs/op")
			b.ReportMetric(float64(cpuTicks(b, backend)-pg)*tick/float64(b.N), "pg-cpu-µs/op")
		})
	}
}

// cpuTicks returns utime+stime of process pid in clock ticks (/proc/pid/stat fields 14, 15).
func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}
