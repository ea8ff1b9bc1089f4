package fastexec

import (
	"bytes"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// The writers below produce what gqlgen's FieldSet and Array marshalling produces: objects as
// {"key":value,...} in collected order, lists as [a,b], no whitespace, every scalar written by the
// marshaler the generated code uses for it (graphql.MarshalString, MarshalInt, MarshalInt64,
// MarshalBoolean, MarshalTime, MarshalID, the enums' MarshalGQL). A non-null field whose marshaler
// gives null makes gqlgen report an error: write returns false there and the operation goes to
// gqlgen's executor.

// marshalled returns what m writes.
func marshalled(m graphql.Marshaler) []byte {
	var b bytes.Buffer
	m.MarshalGQL(&b)
	return b.Bytes()
}

// write writes the operation's data; false when gqlgen would answer with an error.
func (p *plan) write(buf *bytes.Buffer) bool {
	buf.WriteByte('{')
	for i := range p.root.fields {
		f := &p.root.fields[i]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(p.root.typename)
		case kDevice:
			if !p.device(buf, f.sub, &f.root.device) {
				return false
			}
		case kDevices, kSearch:
			if !p.connection(buf, f.sub, &f.root.page) {
				return false
			}
		default:
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

func (p *plan) connection(buf *bytes.Buffer, o *object, page *db.Page) bool {
	buf.WriteByte('{')
	for i := range o.fields {
		f := &o.fields[i]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(o.typename)
		case kEdges:
			buf.WriteByte('[')
			for j := range page.Devices {
				if j > 0 {
					buf.WriteByte(',')
				}
				if !p.edge(buf, f.sub, page, j) {
					return false
				}
			}
			buf.WriteByte(']')
		case kPageInfo:
			pageInfo(buf, f.sub, page)
		default:
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

func (p *plan) edge(buf *bytes.Buffer, o *object, page *db.Page, i int) bool {
	buf.WriteByte('{')
	for k := range o.fields {
		f := &o.fields[k]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(o.typename)
		case kCursor: // built only when selected (db.Page builds cursors lazily)
			graphql.MarshalString(page.Cursor(i)).MarshalGQL(buf)
		case kNode:
			if !p.device(buf, f.sub, &page.Devices[i]) {
				return false
			}
		default:
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

func pageInfo(buf *bytes.Buffer, o *object, page *db.Page) {
	buf.WriteByte('{')
	for i := range o.fields {
		f := &o.fields[i]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(o.typename)
		case kHasNext:
			graphql.MarshalBoolean(page.HasNext).MarshalGQL(buf)
		case kEndCursor:
			if c := page.EndCursor(); c != nil {
				graphql.MarshalString(*c).MarshalGQL(buf)
			} else {
				graphql.Null.MarshalGQL(buf)
			}
		}
	}
	buf.WriteByte('}')
}

func (p *plan) device(buf *bytes.Buffer, o *object, d *db.Device) bool {
	buf.WriteByte('{')
	for i := range o.fields {
		f := &o.fields[i]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(o.typename)
		case kID:
			graphql.MarshalID(d.ID).MarshalGQL(buf)
		case kName:
			graphql.MarshalString(d.Name).MarshalGQL(buf)
		case kStatus:
			statuses.write(buf, d.Status)
		case kRegion:
			graphql.MarshalString(d.Region).MarshalGQL(buf)
		case kVerification:
			states.write(buf, d.Verification)
		case kLevel:
			levels.write(buf, resolvers.DeviceLevel(d))
		case kGPUModel:
			graphql.MarshalString(d.GPUModel).MarshalGQL(buf)
		case kGPUCount:
			graphql.MarshalInt(d.GPUCount).MarshalGQL(buf)
		case kLastSeenAt: // nullable: marshalOTime2ᚖtimeᚐTime
			if d.LastSeenAt == nil {
				graphql.Null.MarshalGQL(buf)
			} else {
				graphql.MarshalTime(*d.LastSeenAt).MarshalGQL(buf)
			}
		case kCreatedAt:
			if !nonNullTime(buf, d.CreatedAt) {
				return false
			}
		case kGPUs:
			gpus := p.gpus[d.ID]
			buf.WriteByte('[')
			for j := range gpus {
				if j > 0 {
					buf.WriteByte(',')
				}
				gpu(buf, f.sub, &gpus[j])
			}
			buf.WriteByte(']')
		default:
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

func gpu(buf *bytes.Buffer, o *object, g *db.GPU) {
	buf.WriteByte('{')
	for i := range o.fields {
		f := &o.fields[i]
		buf.Write(f.prefix)
		switch f.kind {
		case kTypename:
			buf.Write(o.typename)
		case kIndex:
			graphql.MarshalInt(g.Index).MarshalGQL(buf)
		case kUUID:
			graphql.MarshalString(g.UUID).MarshalGQL(buf)
		case kModel:
			graphql.MarshalString(g.Model).MarshalGQL(buf)
		case kPCIDeviceID:
			graphql.MarshalString(g.PCIDeviceID()).MarshalGQL(buf)
		case kMemoryMiB:
			graphql.MarshalInt64(g.MemoryMiB).MarshalGQL(buf)
		case kArchitecture:
			graphql.MarshalString(g.Architecture).MarshalGQL(buf)
		case kComputeCapability:
			graphql.MarshalString(g.ComputeCapability).MarshalGQL(buf)
		case kGPULevel:
			levels.write(buf, resolvers.GPULevel(g))
		}
	}
	buf.WriteByte('}')
}

// nonNullTime writes a Time! value; false where gqlgen's marshalNTime2timeᚐTime reports an
// invalid null (the zero time).
func nonNullTime(buf *bytes.Buffer, t time.Time) bool {
	m := graphql.MarshalTime(t)
	if m == graphql.Null {
		return false
	}
	m.MarshalGQL(buf)
	return true
}

// enum holds each known value of an enum as its own MarshalGQL writes it, computed once, so a
// page does not quote the same few strings hundreds of times. A value not in the table is
// marshalled by its MarshalGQL.
type enum[T interface {
	~string
	graphql.Marshaler
}] map[T][]byte

func newEnum[T interface {
	~string
	graphql.Marshaler
}](values []T) enum[T] {
	e := enum[T]{}
	for _, v := range values {
		e[v] = marshalled(v)
	}
	return e
}

func (e enum[T]) write(buf *bytes.Buffer, v T) {
	if b, ok := e[v]; ok {
		buf.Write(b)
		return
	}
	v.MarshalGQL(buf)
}

var (
	statuses = newEnum(db.AllDeviceStatuses)
	states   = newEnum(db.AllVerificationStates)
	levels   = newEnum(model.AllVerificationLevel)
)
