package db

// PreparedList is one statement of preparedLists, for the plan test (reads_plans_test.go).
type PreparedList struct {
	Order         DeviceOrder
	Filter        string // "" or the filter's name
	After, Public bool
	SQL           string
}

// PreparedLists returns every prepared listing statement.
func PreparedLists() []PreparedList {
	names := map[listFilter]string{byStatus: "status", byModel: "gpuModel", byRegion: "region",
		byVerification: "verification", byLevel: "verificationLevel"}
	var out []PreparedList
	for k, q := range preparedLists {
		out = append(out, PreparedList{k.order, names[k.filter], k.after, k.public, q})
	}
	return out
}

// CursorKey returns the keyset key of dev in order o, as a cursor holds it.
func CursorKey(o DeviceOrder, dev Device) string {
	switch o.Field {
	case OrderCreatedAt:
		return dev.CreatedAt.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
	case OrderVerificationLevel:
		return levelKey(dev.DeviceLevel.Rank(), dev.CreatedAt)
	}
	return dev.Name
}

// The statements of GPUsByDevice and Device.
const (
	GPUsQuery         = gpusQuery
	DevicePublicQuery = devicePublicQuery
)
