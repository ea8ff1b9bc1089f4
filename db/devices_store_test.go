package db_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
)

func TestParseDeviceID(t *testing.T) {
	t.Parallel()
	got, err := db.ParseDeviceID("6A88C0DE-0000-4000-8000-00000000000A")
	if err != nil || got != "6a88c0de-0000-4000-8000-00000000000a" {
		t.Fatalf("ParseDeviceID = %q, %v", got, err)
	}
	for _, bad := range []string{"", "6a88", "not-a-uuid", strings.Repeat("a", 65), "{6a88c0de-0000-4000-8000-00000000000a}x"} {
		if _, err := db.ParseDeviceID(bad); !errors.Is(err, db.ErrInvalid) {
			t.Fatalf("ParseDeviceID(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestDeviceHidesRemovedAndUnknown(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 2)
	dev := f.row(d.ID)
	if dev.OwnerID != owner || dev.Status != db.StatusDown || dev.Verification != db.VerificationPending ||
		dev.GPUCount != 2 || dev.GPUModel != "NVIDIA H100 SXM5 80GB" || dev.Region != "eu-west" ||
		dev.Hostname != "node-1.internal" || dev.IPAddress == nil || *dev.IPAddress != "192.0.2.10" || dev.EnrolledAt == nil {
		t.Fatalf("enrolled device = %+v", dev)
	}
	_, err := f.store.Device(f.ctx, "00000000-0000-4000-8000-000000000000")
	wantKind(t, "unknown device", err, db.ErrNotFound)
	if err := f.store.RemoveDevice(f.ctx, d.ID, owner); err != nil {
		t.Fatal(err)
	}
	_, err = f.store.Device(f.ctx, d.ID)
	wantKind(t, "removed device", err, db.ErrNotFound)
}

// Every order and filter, paged in small pages, yields exactly the rows SQL orders the same way,
// each once, with HasNext false only on the last page; removed devices are in no page.
func TestListDevicesPagesMatchSQL(t *testing.T) {
	f := newFixture(t)
	if _, err := f.store.Seed(f.ctx, 60); err != nil {
		t.Fatal(err)
	}
	// Ties on the order key, broken by ID: ten devices share a name and a creation time.
	f.exec(`UPDATE devices SET name = 'twin', created_at = '2025-06-01T00:00:00Z'
		WHERE id IN (SELECT id FROM devices ORDER BY id LIMIT 10)`)
	removed := scalar[string](f, `SELECT id::text FROM devices ORDER BY id DESC LIMIT 1`)
	f.exec(`UPDATE devices SET removed_at = now() WHERE id = $1`, removed)
	up, region := db.StatusUp, "eu-west"
	owner := scalar[string](f, `SELECT owner_id::text FROM devices d WHERE removed_at IS NULL
		GROUP BY owner_id ORDER BY count(*) DESC, owner_id LIMIT 1`)
	orders := map[db.DeviceOrder]string{
		{Field: db.OrderCreatedAt, Direction: db.Desc}: "created_at DESC, id DESC",
		{Field: db.OrderCreatedAt, Direction: db.Asc}:  "created_at ASC, id ASC",
		{Field: db.OrderName, Direction: db.Desc}:      "name DESC, id DESC",
		{Field: db.OrderName, Direction: db.Asc}:       "name ASC, id ASC",
	}
	filters := []struct {
		name   string
		filter db.DeviceFilter
		where  string
		owner  string
	}{
		{"none", db.DeviceFilter{}, "true", ""},
		{"status", db.DeviceFilter{Status: &up}, "status = 'UP'", ""},
		{"status+region", db.DeviceFilter{Status: &up, Region: &region}, "status = 'UP' AND region = 'eu-west'", ""},
		{"owner", db.DeviceFilter{}, "owner_id = '" + owner + "'", owner},
	}
	for order, sqlOrder := range orders {
		for _, fl := range filters {
			var want []string
			if err := f.x.SelectContext(f.ctx, &want, `SELECT id::text FROM devices WHERE removed_at IS NULL AND `+fl.where+` ORDER BY `+sqlOrder); err != nil {
				t.Fatal(err)
			}
			var got []string
			after := ""
			for page := 0; ; page++ {
				p := db.ListParams{First: 7, After: after, Filter: fl.filter, Order: order}
				var res db.Page
				var err error
				if fl.owner != "" {
					res, err = f.store.ListOwnedDevices(f.ctx, fl.owner, p)
				} else {
					res, err = f.store.ListDevices(f.ctx, p)
				}
				if err != nil {
					t.Fatalf("%s/%s page %d: %v", order, fl.name, page, err)
				}
				if len(res.Devices) > 7 {
					t.Fatalf("%s/%s: %d devices", order, fl.name, len(res.Devices))
				}
				for _, d := range res.Devices {
					got = append(got, d.ID)
				}
				if !res.HasNext {
					break
				}
				after = *res.EndCursor()
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s filter %s: paged %d ids, SQL %d; first difference at %d", order, fl.name, len(got), len(want), firstDiff(got, want))
			}
			if slices.Contains(got, removed) {
				t.Fatalf("%s/%s lists a removed device", order, fl.name)
			}
		}
	}
	// The zero order is DefaultOrder (newest first).
	def, err := f.store.ListDevices(f.ctx, db.ListParams{First: 3})
	if err != nil {
		t.Fatal(err)
	}
	newest := scalar[string](f, `SELECT id::text FROM devices WHERE removed_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 1`)
	if def.Devices[0].ID != newest {
		t.Fatalf("default order starts with %s, want the newest %s", def.Devices[0].ID, newest)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestListDevicesRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("x", 129)
	byName := db.DeviceOrder{Field: db.OrderName, Direction: db.Asc}
	for name, p := range map[string]db.ListParams{
		"first 0":                {First: 0},
		"first 101":              {First: db.MaxPageSize + 1},
		"unknown order":          {First: 1, Order: db.DeviceOrder{Field: "ID", Direction: db.Asc}},
		"long model":             {First: 1, Filter: db.DeviceFilter{GPUModel: &long}},
		"long region":            {First: 1, Filter: db.DeviceFilter{Region: ptr(strings.Repeat("r", 65))}},
		"invalid utf8 region":    {First: 1, Filter: db.DeviceFilter{Region: ptr("\xff")}},
		"garbage cursor":         {First: 1, After: "!!!"},
		"json but not a cursor":  {First: 1, After: "eyJ2IjoyfQ"},
		"oversized cursor":       {First: 1, After: strings.Repeat("A", 600)},
		"cursor of another sort": {First: 1, After: cursorFor(t, f, byName)},
	} {
		_, err := f.store.ListDevices(f.ctx, p)
		wantKind(t, name, err, db.ErrInvalid)
	}
	// An unknown status value from a caller that bypassed the enum parser matches nothing.
	bogus := db.DeviceStatus("BOGUS")
	res, err := f.store.ListDevices(f.ctx, db.ListParams{First: 5, Filter: db.DeviceFilter{Status: &bogus}})
	if err != nil || len(res.Devices) != 0 {
		t.Fatalf("unknown status: %d devices, %v", len(res.Devices), err)
	}
}

// cursorFor returns a cursor issued by a listing in order (over one enrolled device).
func cursorFor(t *testing.T, f *fixture, order db.DeviceOrder) string {
	t.Helper()
	owner := f.user("cursor")
	f.enrollGPUs(owner, 1)
	res, err := f.store.ListDevices(f.ctx, db.ListParams{First: 1, Order: order})
	if err != nil || len(res.Devices) == 0 {
		t.Fatalf("listing for a cursor: %v", err)
	}
	return res.Cursor(0)
}

func TestSearchDevices(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	names := []string{"Alpha_rig", "alphabet", "beta", "100%_gpu"}
	ids := map[string]string{}
	for _, n := range names {
		pub, _ := newKey(t)
		id, _, err := f.store.Enroll(f.ctx, db.Enrollment{Token: f.token(owner), PublicKey: pub, Name: n, Region: "r",
			Snapshot: snapshot(gpuUUID())})
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = id
	}
	gone := ids["beta"]
	search := func(q string, first int, after string) ([]string, db.Page) {
		t.Helper()
		p, err := f.store.SearchDevices(f.ctx, q, first, after)
		if err != nil {
			t.Fatalf("search %q: %v", q, err)
		}
		var out []string
		for _, d := range p.Devices {
			out = append(out, d.Name)
		}
		return out, p
	}
	if got, _ := search("ALPHA", 10, ""); !slices.Equal(got, []string{"Alpha_rig", "alphabet"}) {
		t.Fatalf("case-insensitive name search: %v", got)
	}
	// LIKE metacharacters are literal.
	if got, _ := search("a_r", 10, ""); !slices.Equal(got, []string{"Alpha_rig"}) {
		t.Fatalf("search a_r: %v (underscore must be literal)", got)
	}
	if got, _ := search("0%_", 10, ""); !slices.Equal(got, []string{"100%_gpu"}) {
		t.Fatalf("search 0%%_: %v", got)
	}
	// By ID prefix, hyphens optional and any case.
	prefix := strings.ToUpper(strings.ReplaceAll(gone, "-", "")[:10])
	if got, _ := search(prefix, 10, ""); !slices.Contains(got, "beta") {
		t.Fatalf("ID prefix %s: %v", prefix, got)
	}
	if got, _ := search(gone, 10, ""); !slices.Equal(got, []string{"beta"}) {
		t.Fatalf("full ID: %v", got)
	}
	// Pages in name order.
	first, p := search("alph", 1, "")
	if !slices.Equal(first, []string{"Alpha_rig"}) || !p.HasNext {
		t.Fatalf("page 1: %v hasNext=%v", first, p.HasNext)
	}
	second, p := search("alph", 1, p.Cursor(0))
	if !slices.Equal(second, []string{"alphabet"}) || p.HasNext {
		t.Fatalf("page 2: %v hasNext=%v", second, p.HasNext)
	}
	// Removed devices are not found.
	if err := f.store.RemoveDevice(f.ctx, gone, owner); err != nil {
		t.Fatal(err)
	}
	if got, _ := search(gone, 10, ""); len(got) != 0 {
		t.Fatalf("a removed device is found by ID: %v", got)
	}
	for name, q := range map[string]string{
		"too short":    "ab",
		"empty":        "   ",
		"too long":     strings.Repeat("a", db.MaxSearchLen+1),
		"invalid utf8": "ab\xff",
	} {
		_, err := f.store.SearchDevices(f.ctx, q, 10, "")
		wantKind(t, name, err, db.ErrInvalid)
	}
	_, err := f.store.SearchDevices(f.ctx, "alph", 0, "")
	wantKind(t, "first 0", err, db.ErrInvalid)
	listCursor := cursorFor(t, f, db.DefaultOrder)
	_, err = f.store.SearchDevices(f.ctx, "alph", 1, listCursor)
	wantKind(t, "a listing's cursor", err, db.ErrInvalid)
}

func TestGPUsByDevice(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	snap := snapshot(gpuUUID(), gpuUUID(), gpuUUID())
	snap.GPUs[1].Serial = "1650123456789"
	d := f.enroll(owner, snap)
	unknown := "00000000-0000-4000-8000-000000000000"
	m, err := f.store.GPUsByDevice(f.ctx, []string{d.ID, unknown})
	if err != nil {
		t.Fatal(err)
	}
	if got := m[unknown]; got == nil || len(got) != 0 {
		t.Fatalf("unknown device: %#v, want an empty, non-nil list", got)
	}
	gpus := m[d.ID]
	if len(gpus) != 3 {
		t.Fatalf("%d GPUs", len(gpus))
	}
	for i, g := range gpus {
		if g.Index != i || g.UUID != snap.GPUs[i].UUID || g.Model != "NVIDIA H100 SXM5 80GB" || g.PCIDeviceID() != "0x2330" ||
			g.MemoryMiB != 80<<10 || g.Architecture != "Hopper" || g.ComputeCapability != "9.0" {
			t.Fatalf("GPU %d = %+v", i, g)
		}
	}
	if serial := scalar[string](f, `SELECT serial FROM gpus WHERE uuid = $1`, snap.GPUs[1].UUID); serial != "1650123456789" {
		t.Fatalf("serial stored as %q", serial)
	}
	// An unidentified GPU keeps its reported name, marked.
	odd := snapshot(gpuUUID())
	odd.GPUs[0].PCIDeviceID, odd.GPUs[0].Name = 0x1234, "Totally Real GPU"
	o := f.enroll(owner, odd)
	if dev := f.row(o.ID); dev.GPUModel != "Totally Real GPU (unverified)" || db.ModelName(odd.GPUs[0]) != dev.GPUModel {
		t.Fatalf("unidentified model shown as %q", dev.GPUModel)
	}
	if got := db.ModelName(snap.GPUs[0]); got != "NVIDIA H100 SXM5 80GB" {
		t.Fatalf("ModelName of an H100 = %q: the reference row's name, not the reported one", got)
	}
	_, _, err = f.store.EnrollmentSnapshot(f.ctx, unknown)
	wantKind(t, "enrollment snapshot of an unknown device", err, db.ErrNotFound)
}

func TestOwnerWrites(t *testing.T) {
	f := newFixture(t)
	owner, other := f.user("owner"), f.user("other")
	d := f.enrollGPUs(owner, 1)
	unknown := "00000000-0000-4000-8000-000000000000"

	name := "  Cafe\u0301 "
	dev, err := f.store.UpdateDevice(f.ctx, d.ID, owner, db.UpdateDeviceInput{Name: &name, Labels: []string{"b", " a ", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Name != "Caf\u00e9" {
		t.Fatalf("name %q", dev.Name)
	}
	if !slices.Equal([]string(dev.LabelList), []string{"b", "a"}) {
		t.Fatalf("labels %q, want cleaned and deduplicated in order", dev.LabelList)
	}
	// nil fields keep their value; an empty list clears the labels.
	dev, err = f.store.UpdateDevice(f.ctx, d.ID, owner, db.UpdateDeviceInput{Labels: []string{}})
	if err != nil || dev.Name != "Caf\u00e9" || len(dev.LabelList) != 0 {
		t.Fatalf("clear labels: %+v, %v", dev, err)
	}
	tooMany := make([]string, db.MaxLabels+1)
	for i := range tooMany {
		tooMany[i] = string(rune('a' + i))
	}
	for what, in := range map[string]db.UpdateDeviceInput{
		"empty name":      {Name: ptr(" ")},
		"long name":       {Name: ptr(strings.Repeat("n", db.MaxNameLen+1))},
		"control in name": {Name: ptr("a\x00b")},
		"too many labels": {Labels: tooMany},
		"long label":      {Labels: []string{strings.Repeat("l", db.MaxLabelLen+1)}},
	} {
		_, err := f.store.UpdateDevice(f.ctx, d.ID, owner, in)
		wantKind(t, what, err, db.ErrInvalid)
	}
	_, err = f.store.UpdateDevice(f.ctx, unknown, owner, db.UpdateDeviceInput{Name: ptr("x")})
	wantKind(t, "update unknown", err, db.ErrNotFound)
	_, err = f.store.UpdateDevice(f.ctx, d.ID, other, db.UpdateDeviceInput{Name: ptr("x")})
	wantKind(t, "update another's", err, db.ErrForbidden)

	// Pause / resume: the status follows the flag and the last heartbeat.
	if dev, err = f.store.SetPaused(f.ctx, d.ID, owner, true); err != nil || dev.Status != db.StatusPaused || !dev.Paused {
		t.Fatalf("pause: %s paused=%v %v", dev.Status, dev.Paused, err)
	}
	if st, err := f.store.Heartbeat(f.ctx, d.ID, []byte(`{}`)); err != nil || st != db.StatusPaused {
		t.Fatalf("heartbeat of a paused device: %s, %v", st, err)
	}
	if dev, err = f.store.SetPaused(f.ctx, d.ID, owner, false); err != nil || dev.Status != db.StatusUp {
		t.Fatalf("resume after a fresh heartbeat: %s, %v; want UP", dev.Status, err)
	}
	f.exec(`UPDATE devices SET last_seen_at = now() - interval '1 hour' WHERE id = $1`, d.ID)
	f.store.SetPaused(f.ctx, d.ID, owner, true)
	if dev, err = f.store.SetPaused(f.ctx, d.ID, owner, false); err != nil || dev.Status != db.StatusDown {
		t.Fatalf("resume after silence: %s, %v; want DOWN", dev.Status, err)
	}
	_, err = f.store.SetPaused(f.ctx, unknown, owner, true)
	wantKind(t, "pause unknown", err, db.ErrNotFound)

	// Quarantine wins over pause and heartbeats until released.
	if _, err := f.store.SetQuarantine(f.ctx, true, d.ID, true, "bad"); err != nil {
		t.Fatal(err)
	}
	if dev, err = f.store.SetPaused(f.ctx, d.ID, owner, true); err != nil || dev.Status != db.StatusQuarantined {
		t.Fatalf("pause while quarantined: %s, %v", dev.Status, err)
	}
}

func TestRemoveDevice(t *testing.T) {
	f := newFixture(t)
	owner, other := f.user("owner"), f.user("other")
	d := f.enrollGPUs(owner, 2)
	extra, _ := newKey(t)
	if _, err := f.store.AddDeviceKey(f.ctx, d.ID, owner, extra); err != nil {
		t.Fatal(err)
	}
	open := f.challenge(d.ID)
	f.store.Heartbeat(f.ctx, d.ID, []byte(`{}`))

	wantKind(t, "remove another's", f.store.RemoveDevice(f.ctx, d.ID, other), db.ErrForbidden)
	if err := f.store.RemoveDevice(f.ctx, d.ID, owner); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "remove twice", f.store.RemoveDevice(f.ctx, d.ID, owner), db.ErrNotFound)
	wantKind(t, "remove unknown", f.store.RemoveDevice(f.ctx, "00000000-0000-4000-8000-000000000000", owner), db.ErrNotFound)

	if keys, err := f.store.DeviceKeys(f.ctx, d.ID); err != nil || len(keys) != 0 {
		t.Fatalf("a removed device still has %d keys (%v)", len(keys), err)
	}
	if n := scalar[int](f, `SELECT count(*) FROM device_credentials WHERE device_id = $1 AND revoked_at IS NULL`, d.ID); n != 0 {
		t.Fatalf("%d credentials of the removed device are not revoked", n)
	}
	if _, reason, err := f.store.OpenChallenge(f.ctx, d.ID, open.ID); err != nil || reason != attest.ReasonChallengeExpired {
		t.Fatalf("its open challenge: reason %q, %v; want CHALLENGE_EXPIRED", reason, err)
	}
	// Status DOWN, and what must outlive the device stays: GPU claims, credentials, snapshot.
	if st := scalar[string](f, `SELECT status FROM devices WHERE id = $1`, d.ID); st != "DOWN" {
		t.Fatalf("removed device status %s", st)
	}
	for _, g := range d.Snapshot.GPUs {
		if h := f.holder(g.UUID); h != d.ID {
			t.Fatalf("GPU %s claim moved to %q on removal", g.UUID, h)
		}
	}
	if _, ok, err := f.store.EnrollmentSnapshot(f.ctx, d.ID); err != nil || !ok {
		t.Fatalf("enrollment snapshot after removal: %v %v", ok, err)
	}
	// Owner operations on it answer NOT_FOUND.
	_, err := f.store.DeviceOwner(f.ctx, d.ID)
	wantKind(t, "owner of a removed device", err, db.ErrNotFound)
	_, err = f.store.UpdateDevice(f.ctx, d.ID, owner, db.UpdateDeviceInput{Name: ptr("x")})
	wantKind(t, "update removed", err, db.ErrNotFound)
	_, err = f.store.AddDeviceKey(f.ctx, d.ID, owner, extra)
	wantKind(t, "add key to removed", err, db.ErrNotFound)
	// Its key cannot enroll again.
	_, _, err = f.store.Enroll(f.ctx, db.Enrollment{Token: f.token(owner), PublicKey: d.Pub, Region: "r", Snapshot: snapshot(gpuUUID())})
	wantKind(t, "re-enroll a removed device's key", err, db.ErrConflict)
}

func TestSetQuarantine(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	_, err := f.store.SetQuarantine(f.ctx, false, d.ID, true, "x")
	wantKind(t, "without admin", err, db.ErrForbidden)
	_, err = f.store.SetQuarantine(f.ctx, true, "00000000-0000-4000-8000-000000000000", true, "x")
	wantKind(t, "unknown", err, db.ErrNotFound)
	_, err = f.store.SetQuarantine(f.ctx, true, d.ID, true, strings.Repeat("r", db.MaxReasonLen+1))
	wantKind(t, "long reason", err, db.ErrInvalid)

	dev, err := f.store.SetQuarantine(f.ctx, true, d.ID, true, " counterfeit ")
	if err != nil || dev.Status != db.StatusQuarantined || dev.QuarantinedAt == nil || dev.QuarantineReason != "counterfeit" {
		t.Fatalf("quarantine: %+v, %v", dev, err)
	}
	if p := dev.Private(); p.QuarantineReason == nil || *p.QuarantineReason != "counterfeit" {
		t.Fatalf("private view: %+v", p)
	}
	first := *dev.QuarantinedAt
	dev, _ = f.store.SetQuarantine(f.ctx, true, d.ID, true, "again")
	if !dev.QuarantinedAt.Equal(first) || dev.QuarantineReason != "again" {
		t.Fatalf("re-quarantine moved the time (%v -> %v) or kept the old reason %q", first, dev.QuarantinedAt, dev.QuarantineReason)
	}
	if st, err := f.store.Heartbeat(f.ctx, d.ID, []byte(`{}`)); err != nil || st != db.StatusQuarantined {
		t.Fatalf("heartbeat while quarantined: %s, %v", st, err)
	}
	// Release: back to what the flags and heartbeat say (a fresh heartbeat: UP).
	dev, err = f.store.SetQuarantine(f.ctx, true, d.ID, false, "")
	if err != nil || dev.Status != db.StatusUp || dev.QuarantinedAt != nil || dev.QuarantineReason != "" {
		t.Fatalf("release: %+v, %v", dev, err)
	}
	if dev.Private().QuarantineReason != nil {
		t.Fatal("released device still shows a quarantine reason")
	}
	// A removed device can be quarantined (its GPU identities follow it).
	if err := f.store.RemoveDevice(f.ctx, d.ID, owner); err != nil {
		t.Fatal(err)
	}
	if dev, err = f.store.SetQuarantine(f.ctx, true, d.ID, true, "after removal"); err != nil || dev.Status != db.StatusQuarantined {
		t.Fatalf("quarantine a removed device: %s, %v", dev.Status, err)
	}
}

func TestCredentialsAndAttestationsByDevice(t *testing.T) {
	f := newFixture(t)
	owner := f.user("owner")
	d := f.enrollGPUs(owner, 1)
	second, _ := newKey(t)
	c2, err := f.store.AddDeviceKey(f.ctx, d.ID, owner, second)
	if err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE device_credentials SET created_at = created_at - interval '1 minute' WHERE id = $1`, d.Credential)
	unknown := "00000000-0000-4000-8000-000000000000"
	creds, err := f.store.CredentialsByDevice(f.ctx, []string{d.ID, unknown})
	if err != nil {
		t.Fatal(err)
	}
	if got := creds[d.ID]; len(got) != 2 || got[0].ID != c2.ID || got[1].ID != d.Credential || got[1].Fingerprint != db.Fingerprint(d.Pub) {
		t.Fatalf("credentials newest first: %+v", got)
	}
	if got := creds[unknown]; got == nil || len(got) != 0 {
		t.Fatalf("unknown device credentials: %#v", got)
	}
	// 55 verdicts: the latest 50, newest first.
	f.exec(`INSERT INTO attestations (device_id, verdict, reasons, created_at)
		SELECT $1, CASE WHEN i % 2 = 0 THEN 'PASSED' ELSE 'FLAGGED' END, ARRAY['R' || i], now() - make_interval(secs => i)
		FROM generate_series(1, 55) AS i`, d.ID)
	atts, err := f.store.AttestationsByDevice(f.ctx, []string{d.ID, unknown})
	if err != nil {
		t.Fatal(err)
	}
	got := atts[d.ID]
	if len(got) != 50 || got[0].Reasons()[0] != "R1" || got[49].Reasons()[0] != "R50" || got[0].Verdict != db.VerdictFlagged {
		t.Fatalf("attestations: %d, first %+v", len(got), got[0])
	}
	if atts[unknown] == nil || len(atts[unknown]) != 0 {
		t.Fatalf("unknown device attestations: %#v", atts[unknown])
	}
	if (db.Attestation{}).Reasons() == nil {
		t.Fatal("Reasons of none must be an empty list")
	}
}
