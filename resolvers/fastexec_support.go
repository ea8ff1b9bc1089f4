package resolvers

import (
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
)

// These export the resolvers' mappings to gateway/fastexec, the compiled executor of the public
// explorer reads (docs/benchmark.md, "The compiled executor for public reads"), so that it answers
// exactly what the resolvers answer without a copy of their logic.

// DeviceLevel is Device.verificationLevel, as its resolver maps it.
func DeviceLevel(d *db.Device) model.VerificationLevel { return deviceLevel(d) }

// GPULevel is GPU.verificationLevel, as its resolver maps it.
func GPULevel(g *db.GPU) model.VerificationLevel { return gpuLevel(g) }

// FilterByLevel sets the verificationLevel of a DeviceFilter as the input field's resolver does
// (nil: no level filter). It returns the resolver's error (none today).
func FilterByLevel(f *db.DeviceFilter, l *model.VerificationLevel) error { return filterByLevel(f, l) }
