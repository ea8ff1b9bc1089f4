package db

// ListQuery exposes the listing statement of an order to the plan test (levels_explain_test.go).
func ListQuery(o DeviceOrder) string { return listQueries[o] }
