package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest"
)

// withUUIDs is snap with fresh UUIDs (derived from seed) but the same serials: a serial-only clone.
func withUUIDs(snap attest.Snapshot, seed byte) attest.Snapshot {
	out := snap
	out.GPUs = append([]attest.GPU(nil), snap.GPUs...)
	for i := range out.GPUs {
		out.GPUs[i].UUID = fmt.Sprintf("GPU-%02x%06x-2222-4333-8444-%012x", seed, i, i)
	}
	return out
}

// A serial is a GPU identity like a UUID: a later device reporting a serial another device holds
// claims nothing, so the earlier holder is never flagged by a newcomer (not even a removed one's
// successor), and a removed host's serials cannot be squatted.
func TestSerialCloneClaimsNothing(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	host := h100Host(60)
	genuine := o.enrolledWorker(t, "alice", host)
	if p := genuine.prove(t, host); p.Verification != "VERIFIED" {
		t.Fatalf("genuine: %+v", p)
	}
	clone := o.enrolledWorker(t, "bob", withUUIDs(host, 61))
	if d := o.public(t, clone.deviceID); d.GpuCount != 0 {
		t.Fatalf("the serial clone holds %d GPUs", d.GpuCount)
	}
	if p := clone.prove(t, withUUIDs(host, 61)); p.Verification != "FLAGGED" || !hasReason(p, attest.ReasonSerialOnAnotherDevice) {
		t.Fatalf("clone: %+v", p)
	}
	if p := genuine.prove(t, host); p.Verification != "VERIFIED" {
		t.Fatalf("the genuine host is flagged by a later serial clone: %+v", p)
	}

	// Squatting by serial: the host is removed, the clone enrolls again, the host comes back.
	o.remove(t, "alice", genuine.deviceID)
	squat := o.enrolledWorker(t, "bob", withUUIDs(host, 62))
	if d := o.public(t, squat.deviceID); d.GpuCount != 0 {
		t.Fatalf("the squatter holds %d of the removed host's serials", d.GpuCount)
	}
	back := o.enrolledWorker(t, "alice", host)
	if p := back.prove(t, host); p.Verdict != "PASSED" || p.Verification != "VERIFIED" {
		t.Fatalf("the genuine host after re-enrolling: %+v", p)
	}
	if d := o.public(t, back.deviceID); d.GpuCount != 8 {
		t.Fatalf("the genuine host re-enrolled with %d GPUs", d.GpuCount)
	}
}

// An owner who removes a device before the admin acts and re-enrolls the same GPUs does not escape
// the quarantine the admin then puts on the removed device: it follows the GPU identities to the
// device that took them over.
func TestQuarantineOfARemovedDeviceFollowsItsSuccessor(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	adm := o.user("admin", "ADMIN")
	host := h100Host(63)
	x := o.enrolledWorker(t, "alice", host)
	x.prove(t, host)
	o.remove(t, "alice", x.deviceID)
	y := o.enrolledWorker(t, "alice", host)
	if p := y.prove(t, host); p.Verification != "VERIFIED" {
		t.Fatalf("successor: %+v", p)
	}
	o.as(adm, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "counterfeit") { status } }`,
		map[string]any{"id": x.deviceID}).Decode(t, &struct{}{})
	if d := o.public(t, y.deviceID); d.Status != "QUARANTINED" {
		t.Fatalf("the successor holding the quarantined GPUs: %+v", d)
	}
	// A third device of the same owner with the same GPUs is quarantined too.
	z := o.enrolledWorker(t, "alice", host)
	if d := o.public(t, z.deviceID); d.Status != "QUARANTINED" {
		t.Fatalf("another re-enrollment: %+v", d)
	}
}

// respelled is snap with each GPU UUID respelled (upper-case hex, lower-case prefix, padded) and
// no serials: the same GPUs, written so that a string comparison misses them.
func respelled(snap attest.Snapshot) attest.Snapshot {
	out := snap
	out.GPUs = append([]attest.GPU(nil), snap.GPUs...)
	for i := range out.GPUs {
		out.GPUs[i].UUID = " gpu-" + strings.ToUpper(strings.TrimPrefix(out.GPUs[i].UUID, "GPU-"))
		out.GPUs[i].Serial = ""
	}
	return out
}

// A GPU UUID is compared in NVML's canonical spelling: respelling the UUIDs of a quarantined or
// removed host neither escapes the quarantine nor takes the removed host's GPUs.
func TestRespelledUUIDsAreTheSameGPUs(t *testing.T) {
	t.Parallel()
	o := newWorkerOwners(t)
	adm := o.user("admin", "ADMIN")
	host := h100Host(64)
	x := o.enrolledWorker(t, "alice", host)
	o.remove(t, "alice", x.deviceID)
	squat := o.enrolledWorker(t, "bob", respelled(host))
	if d := o.public(t, squat.deviceID); d.GpuCount != 0 {
		t.Fatalf("respelled UUIDs took %d of a removed host's GPUs", d.GpuCount)
	}

	q := newWorker(o)
	other := h100Host(65)
	q.enroll(t, o.enrollmentToken(t, "carol"), other)
	o.as(adm, `mutation($id: ID!) { quarantineDevice(id: $id, reason: "counterfeit") { status } }`,
		map[string]any{"id": q.deviceID}).Decode(t, &struct{}{})
	o.remove(t, "carol", q.deviceID)
	evader := o.enrolledWorker(t, "carol", respelled(other))
	if d := o.public(t, evader.deviceID); d.Status != "QUARANTINED" {
		t.Fatalf("respelled quarantined GPUs escaped the quarantine: %+v", d)
	}
}
