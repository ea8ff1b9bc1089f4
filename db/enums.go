package db

import (
	"io"
	"strconv"
)

// The GraphQL enums. Each is a string type whose values are the constants below, in
// presentation order in its list; its UnmarshalGQL accepts only those values (anything else is
// an ErrInvalid error naming them) and its MarshalGQL writes the value as a JSON string.
type (
	// AttestationVerdict is whether a proof passed.
	AttestationVerdict string
	// DeviceStatus is whether a device's worker is alive, or the owner paused it.
	DeviceStatus string
	// VerificationState is the public outcome of a device's latest proof.
	VerificationState string
	// DeviceOrderField is a column devices may be ordered by.
	DeviceOrderField string
	// OrderDirection is ascending or descending.
	OrderDirection string
)

// Attestation verdicts.
const (
	VerdictPassed  AttestationVerdict = "PASSED"
	VerdictFlagged AttestationVerdict = "FLAGGED"
)

// Device statuses.
const (
	StatusUp     DeviceStatus = "UP"
	StatusDown   DeviceStatus = "DOWN"
	StatusPaused DeviceStatus = "PAUSED"
	// StatusQuarantined: an admin took the device out of the network.
	StatusQuarantined DeviceStatus = "QUARANTINED"
)

// Verification states.
const (
	VerificationPending  VerificationState = "PENDING"
	VerificationVerified VerificationState = "VERIFIED"
	VerificationFlagged  VerificationState = "FLAGGED"
)

// Device order fields and directions.
const (
	OrderCreatedAt DeviceOrderField = "CREATED_AT"
	OrderName      DeviceOrderField = "NAME"

	Asc  OrderDirection = "ASC"
	Desc OrderDirection = "DESC"
)

var (
	allVerdicts = []AttestationVerdict{VerdictPassed, VerdictFlagged}
	// AllDeviceStatuses lists every DeviceStatus in presentation order.
	AllDeviceStatuses = []DeviceStatus{StatusUp, StatusDown, StatusPaused, StatusQuarantined}
	// AllVerificationStates lists every VerificationState in presentation order.
	AllVerificationStates = []VerificationState{VerificationPending, VerificationVerified, VerificationFlagged}
	allOrderFields        = []DeviceOrderField{OrderCreatedAt, OrderName}
	allDirections         = []OrderDirection{Asc, Desc}
)

// UnmarshalGQL implements graphql.Unmarshaler.
func (v *AttestationVerdict) UnmarshalGQL(x any) error { return unmarshalEnum(v, x, allVerdicts) }
func (v *DeviceStatus) UnmarshalGQL(x any) error       { return unmarshalEnum(v, x, AllDeviceStatuses) }
func (v *VerificationState) UnmarshalGQL(x any) error {
	return unmarshalEnum(v, x, AllVerificationStates)
}
func (v *DeviceOrderField) UnmarshalGQL(x any) error { return unmarshalEnum(v, x, allOrderFields) }
func (v *OrderDirection) UnmarshalGQL(x any) error   { return unmarshalEnum(v, x, allDirections) }

// MarshalGQL implements graphql.Marshaler.
func (v AttestationVerdict) MarshalGQL(w io.Writer) { marshalEnum(w, v) }
func (v DeviceStatus) MarshalGQL(w io.Writer)       { marshalEnum(w, v) }
func (v VerificationState) MarshalGQL(w io.Writer)  { marshalEnum(w, v) }
func (v DeviceOrderField) MarshalGQL(w io.Writer)   { marshalEnum(w, v) }
func (v OrderDirection) MarshalGQL(w io.Writer)     { marshalEnum(w, v) }

// unmarshalEnum sets *dst to v when v is one of valid; otherwise it returns an ErrInvalid error.
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
