package guard

// Class is a class of writes that one kill switch stops and one write-rate series counts (the
// schema's WriteClass). Admin moderation (quarantine, release, reassign) and the switches
// themselves belong to no class: they are how operators respond, so nothing stops them.
type Class string

// The write classes.
const (
	ClassDeviceMetadata Class = "DEVICE_METADATA" // updateDevice, pauseDevice, resumeDevice, removeDevice
	ClassEnrollment     Class = "ENROLLMENT"      // createEnrollmentToken, enrollDevice
	ClassProofs         Class = "PROOFS"          // requestChallenge, submitProof
	ClassHeartbeats     Class = "HEARTBEATS"      // heartbeat
	ClassDeviceKeys     Class = "DEVICE_KEYS"     // addDeviceKey, revokeDeviceKey
)

var opClass = map[string]Class{
	"updateDevice": ClassDeviceMetadata, "pauseDevice": ClassDeviceMetadata,
	"resumeDevice": ClassDeviceMetadata, "removeDevice": ClassDeviceMetadata,
	"createEnrollmentToken": ClassEnrollment, "enrollDevice": ClassEnrollment,
	"requestChallenge": ClassProofs, "submitProof": ClassProofs,
	"heartbeat":    ClassHeartbeats,
	"addDeviceKey": ClassDeviceKeys, "revokeDeviceKey": ClassDeviceKeys,
}

// ClassOf returns the class of the mutation op, or "" for a write in no class.
func ClassOf(op string) Class { return opClass[op] }

// Classes returns every class, in the schema's order.
func Classes() []Class {
	return []Class{ClassDeviceMetadata, ClassEnrollment, ClassProofs, ClassHeartbeats, ClassDeviceKeys}
}
