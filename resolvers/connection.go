package resolvers

import (
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
)

func toConnection(p db.Page) *model.DeviceConnection {
	c := &model.DeviceConnection{
		Edges:    make([]model.DeviceEdge, len(p.Devices)),
		PageInfo: &model.PageInfo{HasNextPage: p.HasNext},
	}
	for i := range p.Devices {
		c.Edges[i] = model.DeviceEdge{Cursor: p.Cursors[i], Node: &p.Devices[i]}
	}
	if n := len(p.Cursors); n > 0 {
		c.PageInfo.EndCursor = &p.Cursors[n-1]
	}
	return c
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
