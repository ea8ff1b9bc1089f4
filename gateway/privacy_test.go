package gateway_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gpugate/gpugate/gateway/fastexec"
)

// minLeakLen is the shortest owner-only value the leak test looks for: shorter ones ("lab",
// "prod") occur in public text by chance and say nothing about a particular owner.
const minLeakLen = 6

// No public field's value contains an owner-only value of any device: not the hostname (nor its
// first label), the address, a label, a key fingerprint (nor its leading hex digits), the owner's
// ID, email or name. Public values are read anonymously over HTTP; owner-only values from the
// database, which holds them all. Enrolled devices (named and unnamed) and seeded ones alike.
// The listings and the search are answered by the compiled executor (gateway/fastexec), checked
// through its process-wide count (so the test does not run in parallel); Device.private, which
// the compiled executor leaves to gqlgen's executor, is read by gqlgen's.
func TestNoPublicFieldCarriesPrivateData(t *testing.T) {
	o := newWorkerOwners(t)
	alice := o.user("alice")
	for i, name := range []string{"", "", "render-farm-a"} {
		w := newWorker(o)
		in := w.enrollInput(o.enrollmentToken(t, "alice"), h100Host(byte(60+i)))
		in["in"].(map[string]any)["hostname"] = []string{"secret-dgx-node-17.corp.example", "bravo-host-22", "charlie-box-33.lab"}[i]
		if name != "" {
			in["in"].(map[string]any)["name"] = name
		}
		var out struct{ EnrollDevice struct{ DeviceID string } }
		w.signed(w.priv, "", time.Now(), body(enrollMutation, in), nil).Decode(t, &out)
		w.deviceID = out.EnrollDevice.DeviceID
		o.as(alice, `mutation($id: ID!) { updateDevice(id: $id, input: {labels: ["cage-0042-finance", "tenant-hush"]}) { id } }`,
			map[string]any{"id": w.deviceID}).Decode(t, &struct{}{})
		w.prove(t, h100Host(byte(60+i)))
	}

	// Every owner-only value, of every device.
	var private []string
	var rows []struct {
		Hostname string  `db:"hostname"`
		IP       *string `db:"ip"`
		Labels   string  `db:"labels"`
		Owner    string  `db:"owner_id"`
		Email    *string `db:"email"`
		Display  string  `db:"display_name"`
		Keys     string  `db:"keys"`
	}
	if err := o.x.Select(&rows, `SELECT d.hostname, host(d.ip_address) AS ip, array_to_string(d.labels, E'\n') AS labels,
		d.owner_id, u.email, u.display_name,
		coalesce((SELECT string_agg(fingerprint, E'\n') FROM device_credentials c WHERE c.device_id = d.id), '') AS keys
		FROM devices d JOIN users u ON u.id = d.owner_id`); err != nil {
		t.Fatal(err)
	}
	add := func(vs ...string) {
		for _, v := range vs {
			if len(v) >= minLeakLen {
				private = append(private, strings.ToLower(v))
			}
		}
	}
	for _, r := range rows {
		first, _, _ := strings.Cut(r.Hostname, ".")
		add(r.Hostname, first, r.Owner, r.Owner[:8], r.Display)
		add(strings.Split(r.Labels, "\n")...)
		if r.IP != nil {
			add(*r.IP)
		}
		if r.Email != nil {
			add(*r.Email)
		}
		for _, k := range strings.Split(r.Keys, "\n") {
			if k != "" {
				add(k, k[:8], k[:16])
			}
		}
	}
	if len(rows) != 43 || len(private) < 43*5 {
		t.Fatalf("%d devices, %d private values: the test does not see what it should", len(rows), len(private))
	}

	// Every public value: every field anonymous callers can read about devices and the network.
	var public []string
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				collect(x)
			}
		case []any:
			for _, x := range v {
				collect(x)
			}
		case string:
			public = append(public, strings.ToLower(v))
		}
	}
	const fields = `id name status region verification verificationLevel gpuModel gpuCount lastSeenAt createdAt
		gpus { index uuid model pciDeviceId memoryMiB architecture computeCapability }`
	served0, _ := fastexec.Stats()
	pages := 0
	var after *string
	for {
		pages++
		var page struct {
			Devices struct {
				Edges    []map[string]any
				PageInfo struct {
					HasNextPage bool
					EndCursor   *string
				}
			}
		}
		o.post(`query($after: String) { devices(first: 10, after: $after) { edges { cursor node { `+fields+` } }
			pageInfo { hasNextPage endCursor } } }`, map[string]any{"after": after}).Decode(t, &page)
		for _, e := range page.Devices.Edges {
			collect(e)
		}
		if !page.Devices.PageInfo.HasNextPage {
			break
		}
		after = page.Devices.PageInfo.EndCursor
	}
	var search map[string]any
	o.post(`{ searchDevices(query: "gpu-", first: 10) { edges { cursor node { `+fields+` } } } }`, nil).Decode(t, &search)
	collect(search)
	if served, _ := fastexec.Stats(); served-served0 != uint64(pages)+1 {
		t.Errorf("the compiled executor answered %d of the %d public reads", served-served0, pages+1)
	}
	var owned map[string]any // gqlgen's executor: null for anonymous callers
	o.post(`{ devices(first: 100) { edges { node { id private { hostname } } } } }`, nil).Decode(t, &owned)
	collect(owned)
	var stats map[string]any
	o.post(`{ networkStats { devices gpus byStatus { status devices } byGpuModel { model devices }
		byRegion { region devices } byVerification { verification devices } } }`, nil).Decode(t, &stats)
	collect(stats)
	if len(public) < 43*10 {
		t.Fatalf("only %d public values", len(public))
	}

	for _, pub := range public {
		for _, priv := range private {
			if strings.Contains(pub, priv) {
				js, _ := json.Marshal(pub)
				t.Errorf("public value %s contains the owner-only value %q", js, priv)
			}
		}
	}
}
