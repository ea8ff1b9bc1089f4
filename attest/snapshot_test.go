package attest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestCanonicalIsStableUnderReordering(t *testing.T) {
	base := realH100()
	want := base.Canonical()
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		s := base
		s.GPUs = slices.Clone(base.GPUs)
		r.Shuffle(len(s.GPUs), func(i, j int) { s.GPUs[i], s.GPUs[j] = s.GPUs[j], s.GPUs[i] })
		if got := s.Canonical(); !bytes.Equal(got, want) {
			t.Fatalf("order changed the encoding")
		}
	}
}

func TestSorted(t *testing.T) {
	s := realH100()
	slices.Reverse(s.GPUs)
	sorted := s.Sorted()
	if sorted.Hash() != s.Hash() {
		t.Fatal("Sorted changed the hash")
	}
	if !slices.IsSortedFunc(sorted.GPUs, func(a, b GPU) int { return strings.Compare(a.UUID, b.UUID) }) {
		t.Fatal("GPUs not sorted")
	}
	if s.GPUs[0].UUID == sorted.GPUs[0].UUID {
		t.Fatal("Sorted modified its receiver or did nothing")
	}
	again := sorted.Sorted()
	if !reflect.DeepEqual(again, sorted) {
		t.Fatal("Sorted is not idempotent")
	}
}

func TestCanonicalIgnoresNilVersusEmpty(t *testing.T) {
	a := Snapshot{DriverVersion: "1", GPUs: nil}
	b := Snapshot{DriverVersion: "1", GPUs: []GPU{}}
	if a.Hash() != b.Hash() {
		t.Fatal("nil and empty slices hash differently")
	}
}

func TestCanonicalWithDuplicateUUIDsIsDeterministic(t *testing.T) {
	s := realH100()
	s.GPUs[3].UUID = s.GPUs[0].UUID
	want := s.Hash()
	slices.Reverse(s.GPUs)
	if s.Hash() != want {
		t.Fatal("GPUs sharing a UUID encode differently in another order")
	}
}

// fieldChanges changes one field at a time; every struct field of the snapshot must appear.
var fieldChanges = []struct {
	field string
	edit  func(*Snapshot)
}{
	{"Snapshot.DriverVersion", func(s *Snapshot) { s.DriverVersion += "1" }},
	{"Snapshot.NVMLVersion", func(s *Snapshot) { s.NVMLVersion += "1" }},
	{"Snapshot.CUDADriverVersion", func(s *Snapshot) { s.CUDADriverVersion++ }},
	{"Snapshot.GPUs", func(s *Snapshot) { s.GPUs = s.GPUs[1:] }},
	{"GPU.UUID", func(s *Snapshot) { s.GPUs[0].UUID = seededUUID("other") }},
	{"GPU.Name", func(s *Snapshot) { s.GPUs[0].Name += " " }},
	{"GPU.PCIDeviceID", func(s *Snapshot) { s.GPUs[0].PCIDeviceID = 0x2331 }},
	{"GPU.PCIVendorID", func(s *Snapshot) { s.GPUs[0].PCIVendorID = 0x1002 }},
	{"GPU.PCISubsystemID", func(s *Snapshot) { s.GPUs[0].PCISubsystemID++ }},
	{"GPU.BusID", func(s *Snapshot) { s.GPUs[0].BusID = "00000000:1C:00.0" }},
	{"GPU.MemoryTotalBytes", func(s *Snapshot) { s.GPUs[0].MemoryTotalBytes-- }},
	{"GPU.Architecture", func(s *Snapshot) { s.GPUs[0].Architecture = "Ampere" }},
	{"GPU.ComputeMajor", func(s *Snapshot) { s.GPUs[0].ComputeMajor = 8 }},
	{"GPU.ComputeMinor", func(s *Snapshot) { s.GPUs[0].ComputeMinor = 9 }},
	{"GPU.Serial", func(s *Snapshot) { s.GPUs[0].Serial = "" }},
	{"GPU.BoardPartNumber", func(s *Snapshot) { s.GPUs[0].BoardPartNumber = "x" }},
	{"GPU.VBIOSVersion", func(s *Snapshot) { s.GPUs[0].VBIOSVersion = "96.00.89.00.02" }},
	{"GPU.MaxSMClockMHz", func(s *Snapshot) { s.GPUs[0].MaxSMClockMHz++ }},
	{"GPU.MaxMemClockMHz", func(s *Snapshot) { s.GPUs[0].MaxMemClockMHz++ }},
	{"GPU.PowerLimitMilliwatts", func(s *Snapshot) { s.GPUs[0].PowerLimitMilliwatts-- }},
	{"GPU.ECCEnabled", func(s *Snapshot) { s.GPUs[0].ECCEnabled = ptr(false) }},
	{"GPU.ECCEnabled absent", func(s *Snapshot) { s.GPUs[0].ECCEnabled = nil }},
	{"GPU.MIGEnabled", func(s *Snapshot) { s.GPUs[0].MIGEnabled = ptr(true) }},
	{"GPU.MIGEnabled absent", func(s *Snapshot) { s.GPUs[0].MIGEnabled = nil }},
}

func cloneSnapshot(s Snapshot) Snapshot {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	var c Snapshot
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return c
}

func TestCanonicalChangesWithEveryField(t *testing.T) {
	base := realH100()
	want := base.Hash()
	for _, tc := range fieldChanges {
		t.Run(tc.field, func(t *testing.T) {
			s := cloneSnapshot(base)
			tc.edit(&s)
			if s.Hash() == want {
				t.Fatalf("changing %s left the hash unchanged", tc.field)
			}
		})
	}

	// Every field of every snapshot type is in the table, so a field added later without
	// being encoded fails here.
	covered := map[string]bool{}
	for _, tc := range fieldChanges {
		covered[strings.TrimSuffix(tc.field, " absent")] = true
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[Snapshot](), reflect.TypeFor[GPU]()} {
		for f := range typ.Fields() {
			if name := typ.Name() + "." + f.Name; !covered[name] {
				t.Errorf("%s has no entry in fieldChanges", name)
			}
		}
	}
}

func TestCanonicalHasNoFieldBoundaryAmbiguity(t *testing.T) {
	a := Snapshot{DriverVersion: "55", NVMLVersion: "0.1"}
	b := Snapshot{DriverVersion: "550", NVMLVersion: ".1"}
	if a.Hash() == b.Hash() {
		t.Fatal("moving bytes between adjacent fields kept the hash")
	}
	x := one(func(g *GPU) { g.Serial, g.BoardPartNumber = "ab", "c" })
	y := one(func(g *GPU) { g.Serial, g.BoardPartNumber = "a", "bc" })
	if x.Hash() == y.Hash() {
		t.Fatal("moving bytes between adjacent GPU fields kept the hash")
	}
}

// The worker hashes what NVML gave it; the server hashes what JSON delivered. They must agree
// whatever the JSON field order, and even for strings that are not valid UTF-8.
func TestCanonicalSurvivesJSON(t *testing.T) {
	s := realH100()
	s.GPUs[1].Name = "NVIDIA H100 \xff\xfe80GB" // invalid UTF-8: json.Marshal turns each byte into U+FFFD
	s.GPUs[2].BoardPartNumber = "\u2028<&>"
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSnapshot(js)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != s.Hash() {
		t.Fatal("hash changed through JSON")
	}

	// Same document with every object's keys in reverse order.
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		t.Fatal(err)
	}
	reversed := reverseKeys(generic)
	got, err = ParseSnapshot([]byte(reversed))
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != s.Hash() {
		t.Fatal("hash depends on JSON key order")
	}
}

func reverseKeys(v any) string {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		slices.Reverse(keys)
		var b strings.Builder
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			kj, _ := json.Marshal(k)
			b.Write(kj)
			b.WriteString(":")
			b.WriteString(reverseKeys(v[k]))
		}
		b.WriteString("}")
		return b.String()
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = reverseKeys(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		j, _ := json.Marshal(v)
		return string(j)
	}
}

// A pinned vector: the worker and the server are built separately, and a silent change of the
// encoding would fail every proof in the field. The value predates the removal of the snapshot's
// CC attestation field: snapshots without one hash as they always did.
func TestCanonicalVector(t *testing.T) {
	s := Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040,
		GPUs: []GPU{{UUID: seededUUID("v"), Name: "NVIDIA H100 80GB HBM3", PCIDeviceID: 0x2330, PCIVendorID: 0x10DE,
			MemoryTotalBytes: 80 << 30, Architecture: "Hopper", ComputeMajor: 9, MIGEnabled: ptr(false)}}}
	const want = "76e0204f8d84612cdc1d513698ed1e0e6e2431f2b2ed295750489b18c00b19e5"
	h := s.Hash()
	if got := hex.EncodeToString(h[:]); got != want {
		t.Errorf("snapshot hash = %s, want %s", got, want)
	}
}

func TestParseSnapshotRefusesMalformedInput(t *testing.T) {
	good, _ := json.Marshal(realH100())
	long := strings.Repeat("x", MaxFieldBytes+1)
	tests := []struct {
		name string
		json string
	}{
		{"not JSON", "{"},
		{"an array", "[]"},
		{"unknown field", `{"driverVersion":"1","extra":1}`},
		{"unknown GPU field", `{"gpus":[{"uuid":"GPU-x","fans":3}]}`},
		{"trailing data", string(good) + "{}"},
		{"wrong type", `{"cudaDriverVersion":"12040"}`},
		{"negative unsigned", `{"gpus":[{"memoryTotalBytes":-1}]}`},
		{"32-bit PCI id", `{"gpus":[{"pciDeviceId":590352606}]}`},
		{"field too long", `{"driverVersion":"` + long + `"}`},
		{"GPU field too long", `{"gpus":[{"name":"` + long + `"}]}`},
		{"NUL in a field", `{"driverVersion":"550\u0000"}`},
		{"NUL in a GPU field", `{"gpus":[{"serial":"1654\u0000"}]}`},
		{"compute capability out of range", `{"gpus":[{"computeMajor":-1}]}`},
		{"cuda out of range", `{"cudaDriverVersion":-5}`},
		{"too many GPUs", `{"gpus":[` + strings.Repeat(`{},`, MaxSnapshotGPUs) + `{}]}`},
		{"former attestation field", `{"driverVersion":"1","attestation":{"nonce":"","gpus":[]}}`},
		{"too large", `{"driverVersion":"` + strings.Repeat(" ", MaxSnapshotBytes) + `"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSnapshot([]byte(tc.json))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := ParseSnapshot(good); err != nil {
		t.Fatalf("genuine snapshot refused: %v", err)
	}
	// An explicit null is what an older worker never sent, but it carries no evidence.
	if _, err := ParseSnapshot([]byte(`{"driverVersion":"1","attestation":null}`)); err != nil {
		t.Fatalf("null attestation refused: %v", err)
	}
	_, err := ParseSnapshot([]byte(`{"attestation":{"nonce":"","gpus":[]}}`))
	if err == nil || !strings.Contains(err.Error(), "proof's evidence") {
		t.Fatalf("former attestation field: %v, want a message naming the proof's evidence", err)
	}
}

func FuzzCanonical(f *testing.F) {
	f.Add("NVIDIA H100 80GB HBM3", seededUUID("a"), "1653223011234", uint32(0x2330), uint64(80<<30), 9, int64(1))
	f.Add("\xff\xfe bad utf-8", "", "", uint32(0), uint64(0), 0, int64(2))
	f.Add("", "GPU-dup", "x", uint32(0xffff), uint64(1<<63), -1, int64(3))
	f.Fuzz(func(t *testing.T, name, uuid, serial string, pci uint32, mem uint64, cc int, seed int64) {
		s := realH100()
		s.GPUs[0].Name, s.GPUs[0].UUID, s.GPUs[0].Serial = name, uuid, serial
		s.GPUs[1].PCIDeviceID, s.GPUs[1].MemoryTotalBytes, s.GPUs[1].ComputeMinor = pci, mem, cc
		s.GPUs[2].UUID = uuid // possibly a duplicate
		s.NVMLVersion = name
		want := s.Hash()

		r := rand.New(rand.NewPCG(uint64(seed), 0))
		shuffled := s
		shuffled.GPUs = slices.Clone(s.GPUs)
		r.Shuffle(len(shuffled.GPUs), func(i, j int) { shuffled.GPUs[i], shuffled.GPUs[j] = shuffled.GPUs[j], shuffled.GPUs[i] })
		if shuffled.Hash() != want {
			t.Fatal("hash depends on GPU order")
		}

		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back Snapshot
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatal(err)
		}
		if back.Hash() != want {
			t.Fatal("hash changed through JSON")
		}
		_ = CheckSnapshot(back) // never panics, valid or not
	})
}
