package db

import (
	"fmt"
	"io"
	"strconv"
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
	Verification VerificationState `db:"verification"`
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
}

// Reasons returns the reason codes of a flagged proof.
func (a Attestation) Reasons() []string {
	if a.ReasonList == nil {
		return []string{}
	}
	return a.ReasonList
}

// AttestationVerdict is whether a proof passed.
type AttestationVerdict string

// Attestation verdicts.
const (
	VerdictPassed  AttestationVerdict = "PASSED"
	VerdictFlagged AttestationVerdict = "FLAGGED"
)

var allVerdicts = []AttestationVerdict{VerdictPassed, VerdictFlagged}

// UnmarshalGQL implements graphql.Unmarshaler; it fails on any value not in the enum.
func (v *AttestationVerdict) UnmarshalGQL(x any) error { return unmarshalEnum(v, x, allVerdicts) }

// MarshalGQL implements graphql.Marshaler.
func (v AttestationVerdict) MarshalGQL(w io.Writer) { marshalEnum(w, v) }

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
}

// PCIDeviceID formats the PCI device id the way nvidia-smi does (0x2330).
func (g GPU) PCIDeviceID() string { return fmt.Sprintf("0x%04X", g.PCIID) }

// DeviceStatus is whether a device's worker is alive, or the owner paused it.
type DeviceStatus string

// Device statuses.
const (
	StatusUp     DeviceStatus = "UP"
	StatusDown   DeviceStatus = "DOWN"
	StatusPaused DeviceStatus = "PAUSED"
	// StatusQuarantined: an admin took the device out of the network.
	StatusQuarantined DeviceStatus = "QUARANTINED"
)

// AllDeviceStatuses lists every DeviceStatus in presentation order.
var AllDeviceStatuses = []DeviceStatus{StatusUp, StatusDown, StatusPaused, StatusQuarantined}

// UnmarshalGQL implements graphql.Unmarshaler; it fails on any value not in the enum.
func (s *DeviceStatus) UnmarshalGQL(v any) error { return unmarshalEnum(s, v, AllDeviceStatuses) }

// MarshalGQL implements graphql.Marshaler.
func (s DeviceStatus) MarshalGQL(w io.Writer) { marshalEnum(w, s) }

// VerificationState is the public outcome of a device's latest proof.
type VerificationState string

// Verification states.
const (
	VerificationPending  VerificationState = "PENDING"
	VerificationVerified VerificationState = "VERIFIED"
	VerificationFlagged  VerificationState = "FLAGGED"
)

// AllVerificationStates lists every VerificationState in presentation order.
var AllVerificationStates = []VerificationState{VerificationPending, VerificationVerified, VerificationFlagged}

// UnmarshalGQL implements graphql.Unmarshaler; it fails on any value not in the enum.
func (s *VerificationState) UnmarshalGQL(v any) error {
	return unmarshalEnum(s, v, AllVerificationStates)
}

// MarshalGQL implements graphql.Marshaler.
func (s VerificationState) MarshalGQL(w io.Writer) { marshalEnum(w, s) }

// DeviceOrderField is a column devices may be ordered by.
type DeviceOrderField string

// Device order fields.
const (
	OrderCreatedAt DeviceOrderField = "CREATED_AT"
	OrderName      DeviceOrderField = "NAME"
)

var allOrderFields = []DeviceOrderField{OrderCreatedAt, OrderName}

// UnmarshalGQL implements graphql.Unmarshaler; it fails on any value not in the enum.
func (f *DeviceOrderField) UnmarshalGQL(v any) error { return unmarshalEnum(f, v, allOrderFields) }

// MarshalGQL implements graphql.Marshaler.
func (f DeviceOrderField) MarshalGQL(w io.Writer) { marshalEnum(w, f) }

// OrderDirection is ascending or descending.
type OrderDirection string

// Order directions.
const (
	Asc  OrderDirection = "ASC"
	Desc OrderDirection = "DESC"
)

var allDirections = []OrderDirection{Asc, Desc}

// UnmarshalGQL implements graphql.Unmarshaler; it fails on any value not in the enum.
func (d *OrderDirection) UnmarshalGQL(v any) error { return unmarshalEnum(d, v, allDirections) }

// MarshalGQL implements graphql.Marshaler.
func (d OrderDirection) MarshalGQL(w io.Writer) { marshalEnum(w, d) }

// DeviceFilter holds equality filters combined with AND; nil fields do not filter.
type DeviceFilter struct {
	Status       *DeviceStatus      `json:"status"`
	GPUModel     *string            `json:"gpuModel"`
	Region       *string            `json:"region"`
	Verification *VerificationState `json:"verification"`
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
	ComputedAt     time.Time
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

func unmarshalEnum[T ~string](dst *T, v any, valid []T) error {
	s, ok := v.(string)
	if !ok {
		return Invalidf("enum value must be a string, got %T", v)
	}
	for _, c := range valid {
		if string(c) == s {
			*dst = c
			return nil
		}
	}
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return Invalidf("%q is not a valid value (one of %v)", s, valid)
}

func marshalEnum[T ~string](w io.Writer, v T) {
	_, _ = io.WriteString(w, strconv.Quote(string(v)))
}
