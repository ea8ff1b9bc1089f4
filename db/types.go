package db

import (
	"fmt"
	"time"

	"github.com/lib/pq"
)

// Device is a GPU host. OwnerID is never exposed through the public schema.
type Device struct {
	ID           string            `db:"id"`
	OwnerID      string            `db:"owner_id"`
	Name         string            `db:"name"`
	Status       DeviceStatus      `db:"status"`
	Region       string            `db:"region"`
	Verification VerificationState `db:"verification"` // deprecated: DeviceLevel.State()
	DeviceLevel  Level             `db:"verification_level"`
	GPUModel     string            `db:"gpu_model"`
	GPUCount     int               `db:"gpu_count"`
	LastSeenAt   *time.Time        `db:"last_seen_at"`
	CreatedAt    time.Time         `db:"created_at"`
	UpdatedAt    time.Time         `db:"updated_at"`

	// Owner-only columns: the schema exposes them through Device.private alone.
	Hostname         string         `db:"hostname"`
	IPAddress        *string        `db:"ip_address"`
	LabelList        pq.StringArray `db:"labels"`
	EnrolledAt       *time.Time     `db:"enrolled_at"`
	Paused           bool           `db:"paused"`
	QuarantinedAt    *time.Time     `db:"quarantined_at"`
	QuarantineReason string         `db:"quarantine_reason"`
}

// Private returns the owner-only view of the device.
func (d *Device) Private() *DevicePrivate {
	p := &DevicePrivate{
		DeviceID: d.ID, Hostname: d.Hostname, IPAddress: d.IPAddress, Labels: []string(d.LabelList),
		EnrolledAt: d.EnrolledAt, Paused: d.Paused,
	}
	if p.Labels == nil {
		p.Labels = []string{}
	}
	if d.QuarantinedAt != nil {
		reason := d.QuarantineReason
		p.QuarantineReason = &reason
	}
	return p
}

// DevicePrivate is what only a device's owner sees.
type DevicePrivate struct {
	DeviceID         string
	Hostname         string
	IPAddress        *string
	Labels           []string
	EnrolledAt       *time.Time
	Paused           bool
	QuarantineReason *string
}

// DeviceCredential is a worker's public key registered for a device.
type DeviceCredential struct {
	ID          string     `db:"id"`
	DeviceID    string     `db:"device_id"`
	Fingerprint string     `db:"fingerprint"`
	CreatedAt   time.Time  `db:"created_at"`
	LastUsedAt  *time.Time `db:"last_used_at"`
	RevokedAt   *time.Time `db:"revoked_at"`
}

// Attestation is the verdict of one proof.
type Attestation struct {
	ID         string             `db:"id"`
	DeviceID   string             `db:"device_id"`
	Verdict    AttestationVerdict `db:"verdict"`
	ReasonList pq.StringArray     `db:"reasons"`
	CreatedAt  time.Time          `db:"created_at"`
	// ProofLevel is the level this proof gave the device; GPUFacts how each GPU was judged
	// (JSON of []GPUJudgement; NULL for proofs refused before judging). See db/ccevidence.go.
	ProofLevel *Level `db:"level"`
	GPUFacts   []byte `db:"gpu_evidence"`
}

// GivenLevel returns the level the proof gave the device; a row stored without one reads by its
// verdict (PASSED: SELF_REPORTED, FLAGGED: FLAGGED).
func (a Attestation) GivenLevel() Level {
	switch {
	case a.ProofLevel != nil:
		return *a.ProofLevel
	case a.Verdict == VerdictPassed:
		return LevelSelfReported
	}
	return LevelFlagged
}

// Reasons returns the reason codes of a flagged proof.
func (a Attestation) Reasons() []string {
	if a.ReasonList == nil {
		return []string{}
	}
	return a.ReasonList
}

// User is a person who owns devices. Its ID is shown to that user only.
type User struct {
	ID          string  `db:"id"`
	Email       *string `db:"email"`
	DisplayName string  `db:"display_name"`
}

// UpdateDeviceInput holds an owner's edits; nil fields keep their value.
type UpdateDeviceInput struct {
	Name   *string  `json:"name"`
	Labels []string `json:"labels"`
}

// GPU is one GPU of a device as reported by NVML.
type GPU struct {
	DeviceID          string `db:"device_id"`
	Index             int    `db:"idx"`
	UUID              string `db:"uuid"`
	Model             string `db:"model"`
	PCIID             int    `db:"pci_device_id"`
	MemoryMiB         int64  `db:"memory_mib"`
	Architecture      string `db:"architecture"`
	ComputeCapability string `db:"compute_capability"`
	// GPULevel is the GPU's own level: ATTESTED when its evidence verified in the device's
	// latest passing proof, otherwise the device's level.
	GPULevel Level `db:"verification_level"`
}

// PCIDeviceID formats the PCI device id the way nvidia-smi does (0x2330).
func (g GPU) PCIDeviceID() string { return fmt.Sprintf("0x%04X", g.PCIID) }

// DeviceFilter holds equality filters combined with AND; nil fields do not filter.
type DeviceFilter struct {
	Status       *DeviceStatus      `json:"status"`
	GPUModel     *string            `json:"gpuModel"`
	Region       *string            `json:"region"`
	Verification *VerificationState `json:"verification"` // deprecated: VERIFIED is SELF_REPORTED or ATTESTED
	// Level filters by verification level (set by the verificationLevel input field's resolver;
	// named apart so gqlgen's autobind leaves that field to it).
	Level *Level `json:"-"`
}

// DeviceOrder is one of the allow-listed orders; ties are broken by ID in the same direction.
type DeviceOrder struct {
	Field     DeviceOrderField `json:"field"`
	Direction OrderDirection   `json:"direction"`
}

// DefaultOrder is newest first.
var DefaultOrder = DeviceOrder{Field: OrderCreatedAt, Direction: Desc}

func (o DeviceOrder) String() string { return string(o.Field) + "_" + string(o.Direction) }

// NetworkStats are totals across the network.
type NetworkStats struct {
	Devices        int
	GPUs           int
	ByStatus       []StatusCount
	ByGPUModel     []GpuModelCount
	ByRegion       []RegionCount
	ByVerification []VerificationCount
	// ByLevel counts devices by their level and GPUs by each GPU's own level, in AllLevels
	// order, levels without devices or GPUs left out.
	ByLevel    []LevelCount
	ComputedAt time.Time
}

// StatusCount is the number of devices and GPUs with one status.
type StatusCount struct {
	Status  DeviceStatus
	Devices int
	GPUs    int
}

// GpuModelCount is the number of devices and GPUs of one GPU model.
type GpuModelCount struct {
	Model   string
	Devices int
	GPUs    int
}

// RegionCount is the number of devices and GPUs in one region.
type RegionCount struct {
	Region  string
	Devices int
	GPUs    int
}

// VerificationCount is the number of devices and GPUs in one verification state.
type VerificationCount struct {
	Verification VerificationState
	Devices      int
	GPUs         int
}

// LevelCount is the number of devices at one level, and of GPUs at that level (a GPU's own
// level: an ATTESTED GPU may sit in a SELF_REPORTED device).
type LevelCount struct {
	Level   Level
	Devices int
	GPUs    int
}
