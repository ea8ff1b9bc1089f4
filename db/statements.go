package db

// ExplorerStatements returns the SQL text of the anonymous explorer's hot reads, exactly as
// ListDevices and Device run them, for bench/benchtool to run under pgbench next to the gateway:
//
//   - page: devices filtered by status, newest first, without a cursor ($1 status, $2 limit);
//   - deep: the same after a cursor ($1 status, $2 created_at, $3 id, $4 limit);
//   - byID: one device by ID ($1).
func ExplorerStatements() (page, deep, byID string) {
	o := DeviceOrder{Field: OrderCreatedAt, Direction: Desc}
	return preparedLists[listKey{o, byStatus, false, true}], preparedLists[listKey{o, byStatus, true, true}], devicePublicQuery
}
