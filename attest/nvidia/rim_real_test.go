package nvidia

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

// rimTime is inside the sample RIM's signing chain validity (its L4 signer: 2023-06-23..2025-06-22).
var rimTime = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

// TestRealNVIDIARIM loads NVIDIA's own signed sample RIM under the pinned RIM root: the XML
// signature (C14N 1.1, ECDSA-SHA384 r‖s) and chain verify, and the values are indexed.
func TestRealNVIDIARIM(t *testing.T) {
	b, err := LoadRIMBundle("testdata/rims", fixedClock(rimTime))
	if err != nil {
		t.Fatal(err)
	}
	rs := b.vbios["96.00.5e.00.01"]
	if len(rs) != 1 || len(b.driver) != 0 {
		t.Fatalf("indexed %v / %v", b.vbios, b.driver)
	}
	r := rs[0]
	// Active: 0..6 and 8..12; index 12 has four alternatives; 7 and 13.. are inactive.
	want := []int{0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12}
	got := make([]int, 0, len(r.refs))
	for i := range r.refs {
		got = append(got, i)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) || len(r.refs[12]) != 4 || len(r.refs[3][0]) != 48 {
		t.Fatalf("indices %v, alternatives of 12: %d", got, len(r.refs[12]))
	}
	// Outside the signer's validity the RIM is refused.
	for _, at := range []time.Time{time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC), time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC)} {
		if _, err := LoadRIMBundle("testdata/rims", fixedClock(at)); !errors.Is(err, ErrRIM) {
			t.Errorf("at %v: %v", at, err)
		}
	}
	// Any changed reference value is refused.
	data, err := os.ReadFile("testdata/rims/1010_0200_882_96005E0001_PROD.swidtag")
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{"c3f65ef79a19c029", `index="7" active="False"`, `colloquialVersion="96.00.5E.00.01"`} {
		i := bytes.Index(data, []byte(old))
		if i < 0 {
			t.Fatalf("%q not in the RIM", old)
		}
		bad := slices.Clone(data)
		bad[i+len(old)-2] ^= 0x01
		if _, err := LoadRIMBundle(writeDir(t, map[string][]byte{"r.swidtag": bad}), fixedClock(rimTime)); !errors.Is(err, ErrRIM) {
			t.Errorf("%q changed: %v", old, err)
		}
	}
	// The fixture report has another VBIOS (96.00.9f.00.01): nothing to compare, and said so.
	ev, nonce := loadFixture(t)
	res := New(Options{Now: fixedClock(fixtureTime), RIMs: b}).Verify(context.Background(), ev, nonce)
	if !res.OK() || res.MeasurementsChecked {
		t.Fatalf("%+v", res)
	}
}
