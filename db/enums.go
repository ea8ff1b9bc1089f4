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
	// Level is how strongly a device or one GPU is verified (the GraphQL VerificationLevel; the
	// Go name differs so gqlgen's autobind keeps its generated enum). See docs/attestation.md,
	// "Verification levels".
	Level string
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

// Verification levels, weakest first after FLAGGED (their rank order).
const (
	LevelFlagged      Level = "FLAGGED"
	LevelPending      Level = "PENDING"
	LevelSelfReported Level = "SELF_REPORTED"
	LevelAttested     Level = "ATTESTED"
)

// AllLevels lists every Level in rank order (FLAGGED < PENDING < SELF_REPORTED < ATTESTED).
var AllLevels = []Level{LevelFlagged, LevelPending, LevelSelfReported, LevelAttested}

// Rank is the level's strength for ordering (the devices.verification_rank column computes the
// same); -1 for an unknown value.
func (l Level) Rank() int {
	for i, v := range AllLevels {
		if v == l {
			return i
		}
	}
	return -1
}

// State is the deprecated three-valued state a level answers as: SELF_REPORTED and ATTESTED are
// VERIFIED.
func (l Level) State() VerificationState {
	switch l {
	case LevelSelfReported, LevelAttested:
		return VerificationVerified
	case LevelFlagged:
		return VerificationFlagged
	}
	return VerificationPending
}

// Device order fields and directions.
const (
	OrderCreatedAt DeviceOrderField = "CREATED_AT"
	OrderName      DeviceOrderField = "NAME"
	// OrderVerificationLevel orders by Level.Rank, ties by creation time then ID, all in the
	// order's direction.
	OrderVerificationLevel DeviceOrderField = "VERIFICATION_LEVEL"

	Asc  OrderDirection = "ASC"
	Desc OrderDirection = "DESC"
)

var (
	allVerdicts = []AttestationVerdict{VerdictPassed, VerdictFlagged}
	// AllDeviceStatuses lists every DeviceStatus in presentation order.
	AllDeviceStatuses = []DeviceStatus{StatusUp, StatusDown, StatusPaused, StatusQuarantined}
	// AllVerificationStates lists every VerificationState in presentation order.
	AllVerificationStates = []VerificationState{VerificationPending, VerificationVerified, VerificationFlagged}
	allOrderFields        = []DeviceOrderField{OrderCreatedAt, OrderName, OrderVerificationLevel}
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
