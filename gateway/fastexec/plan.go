package fastexec

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/resolvers"
)

// kind is what a selected field is: one constant per supported field of each type.
type kind uint8

const (
	kTypename kind = iota
	// Query
	kDevice
	kDevices
	kSearch
	// DeviceConnection
	kEdges
	kPageInfo
	// DeviceEdge
	kCursor
	kNode
	// PageInfo
	kHasNext
	kEndCursor
	// Device
	kID
	kName
	kStatus
	kRegion
	kVerification
	kLevel
	kGPUModel
	kGPUCount
	kLastSeenAt
	kCreatedAt
	kGPUs
	// GPU
	kIndex
	kUUID
	kModel
	kPCIDeviceID
	kMemoryMiB
	kArchitecture
	kComputeCapability
	kGPULevel
)

// objectType is a schema object type the compiled executor can write: the fields it supports
// and, for object-valued fields, the type of their value. A field not listed (Device.private
// among them: owner-only) makes the operation go to gqlgen's executor.
type objectType struct {
	name      string
	satisfies []string // CollectFields' type condition, as the generated code passes it
	fields    map[string]kind
	children  map[kind]*objectType
}

var (
	gpuType = &objectType{name: "GPU", fields: map[string]kind{
		"index": kIndex, "uuid": kUUID, "model": kModel, "pciDeviceId": kPCIDeviceID, "memoryMiB": kMemoryMiB,
		"architecture": kArchitecture, "computeCapability": kComputeCapability, "verificationLevel": kGPULevel,
	}}
	deviceType = &objectType{name: "Device", fields: map[string]kind{
		"id": kID, "name": kName, "status": kStatus, "region": kRegion, "verification": kVerification,
		"verificationLevel": kLevel, "gpuModel": kGPUModel, "gpuCount": kGPUCount, "lastSeenAt": kLastSeenAt,
		"createdAt": kCreatedAt, "gpus": kGPUs,
	}, children: map[kind]*objectType{kGPUs: gpuType}}
	edgeType = &objectType{name: "DeviceEdge", fields: map[string]kind{"cursor": kCursor, "node": kNode},
		children: map[kind]*objectType{kNode: deviceType}}
	pageInfoType   = &objectType{name: "PageInfo", fields: map[string]kind{"hasNextPage": kHasNext, "endCursor": kEndCursor}}
	connectionType = &objectType{name: "DeviceConnection", fields: map[string]kind{"edges": kEdges, "pageInfo": kPageInfo},
		children: map[kind]*objectType{kEdges: edgeType, kPageInfo: pageInfoType}}
	queryType = &objectType{name: "Query", fields: map[string]kind{"device": kDevice, "devices": kDevices, "searchDevices": kSearch},
		children: map[kind]*objectType{kDevice: deviceType, kDevices: connectionType, kSearch: connectionType}}
)

func init() {
	for _, t := range []*objectType{gpuType, deviceType, edgeType, pageInfoType, connectionType, queryType} {
		t.satisfies = []string{t.name}
	}
}

// object is the compiled selection of one object type: its fields in the order gqlgen collects
// them. Every node of one type under one field shares it.
type object struct {
	typename []byte // the type's name as __typename's value, marshalled
	fields   []field
	gpus     bool // some Device under this object selects gpus
}

// field is one collected field: the JSON text before its value ("alias": with the comma
// separating it from the previous one), what it is and, for an object value, its selection.
type field struct {
	prefix []byte
	kind   kind
	sub    *object
	root   *rootField // root fields only
}

// rootField holds a root field's arguments, converted as the generated code converts them, and
// the data read for it.
type rootField struct {
	id     string        // device
	list   db.ListParams // devices
	query  string        // searchDevices
	first  int           // searchDevices
	after  string        // searchDevices
	device db.Device     // device's result
	page   db.Page       // devices' or searchDevices' result
}

// plan is one operation, compiled.
type plan struct {
	root *object
	gpus map[string][]db.GPU
}

// compile returns the plan of the operation, or false when some field, directive or argument is
// not one the compiled executor supports (or collecting the fields panicked, which gqlgen's
// executor then reports).
func compile(oc *graphql.OperationContext) (p *plan, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p, ok = nil, false
		}
	}()
	root, ok := compileObject(oc, oc.Operation.SelectionSet, queryType)
	if !ok {
		return nil, false
	}
	return &plan{root: root}, true
}

func compileObject(oc *graphql.OperationContext, sel ast.SelectionSet, t *objectType) (*object, bool) {
	collected := graphql.CollectFields(oc, sel, t.satisfies)
	o := &object{typename: marshalled(graphql.MarshalString(t.name)), fields: make([]field, 0, len(collected))}
	for i := range collected {
		f := &collected[i]
		k, ok := supported(f, t)
		if !ok {
			return nil, false
		}
		for _, g := range collected[:i] {
			if g.Alias == f.Alias { // gqlgen writes the first only; never seen after validation
				return nil, false
			}
		}
		out := field{kind: k, prefix: prefix(f.Alias, i == 0)}
		if child := t.children[k]; child != nil {
			sub, ok := compileObject(oc, f.Selections, child)
			if !ok {
				return nil, false
			}
			out.sub = sub
			o.gpus = o.gpus || sub.gpus
		} else if len(f.Selections) > 0 {
			return nil, false
		}
		if k == kGPUs {
			o.gpus = true
		}
		if t == queryType && k != kTypename {
			r, ok := rootArgs(k, f.ArgumentMap(oc.Variables))
			if !ok {
				return nil, false
			}
			out.root = r
		}
		o.fields = append(o.fields, out)
	}
	return o, true
}

// supported returns the kind of a collected field of t, or false when the compiled executor does
// not serve it: an unknown field (introspection, private, ...), a field whose definition carries
// a directive other than @deprecated (authorization is the directives' alone), a field selected
// with a directive other than @skip/@include, or a deferred one.
func supported(f *graphql.CollectedField, t *objectType) (kind, bool) {
	if len(f.Deferrables) > 0 {
		return 0, false
	}
	for _, d := range f.Directives {
		if d.Name != "skip" && d.Name != "include" {
			return 0, false
		}
	}
	if f.Name == "__typename" {
		return kTypename, true
	}
	if f.ObjectDefinition == nil || f.ObjectDefinition.Name != t.name || f.Definition == nil {
		return 0, false
	}
	for _, d := range f.Definition.Directives {
		if d.Name != "deprecated" {
			return 0, false
		}
	}
	k, ok := t.fields[f.Name]
	return k, ok
}

// prefix is the JSON text before a field's value: a comma unless first, the response key, a colon.
func prefix(alias string, first bool) []byte {
	var b []byte
	if !first {
		b = append(b, ',')
	}
	b = append(b, marshalled(graphql.MarshalString(alias))...)
	return append(b, ':')
}

// rootArgs converts a root field's arguments as the generated field_Query_*_args functions do;
// false for any key, type or value they would not accept (gqlgen's executor then reports it).
func rootArgs(k kind, args map[string]any) (*rootField, bool) {
	r := &rootField{}
	switch k {
	case kDevice:
		if !onlyKeys(args, "id") {
			return nil, false
		}
		raw, err := graphql.UnmarshalID(args["id"])
		if err != nil {
			return nil, false
		}
		// Query.device's resolver: a malformed ID is an error, answered by gqlgen's executor.
		if r.id, err = db.ParseDeviceID(raw); err != nil {
			return nil, false
		}
	case kDevices:
		if !onlyKeys(args, "first", "after", "filter", "orderBy") {
			return nil, false
		}
		var ok bool
		if r.list.First, ok = intArg(args, "first"); !ok {
			return nil, false
		}
		if r.list.After, ok = optString(args, "after"); !ok {
			return nil, false
		}
		if r.list.Filter, ok = filterArg(args["filter"]); !ok {
			return nil, false
		}
		if r.list.Order, ok = orderArg(args["orderBy"]); !ok {
			return nil, false
		}
	case kSearch:
		if !onlyKeys(args, "query", "first", "after") {
			return nil, false
		}
		var ok bool
		var err error
		if v, present := args["query"]; present {
			if r.query, err = graphql.UnmarshalString(v); err != nil {
				return nil, false
			}
		}
		if r.first, ok = intArg(args, "first"); !ok {
			return nil, false
		}
		if r.after, ok = optString(args, "after"); !ok {
			return nil, false
		}
	default:
		return nil, false
	}
	return r, true
}

func onlyKeys(m map[string]any, keys ...string) bool {
	n := 0
	for _, k := range keys {
		if _, ok := m[k]; ok {
			n++
		}
	}
	return n == len(m)
}

// intArg is an Int! argument (absent: 0, as gqlgen's ProcessArgField gives the zero value).
func intArg(args map[string]any, name string) (int, bool) {
	v, present := args[name]
	if !present {
		return 0, true
	}
	n, err := graphql.UnmarshalInt(v)
	return n, err == nil
}

// optString is a String argument dereferenced as the resolvers do (absent or null: "").
func optString(args map[string]any, name string) (string, bool) {
	v := args[name]
	if v == nil {
		return "", true
	}
	s, err := graphql.UnmarshalString(v)
	return s, err == nil
}

// filterArg is unmarshalInputDeviceFilter followed by the resolvers' deref (null: no filter).
func filterArg(v any) (db.DeviceFilter, bool) {
	var f db.DeviceFilter
	if v == nil {
		return f, true
	}
	m, ok := v.(map[string]any)
	if !ok || !onlyKeys(m, "status", "gpuModel", "region", "verification", "verificationLevel") {
		return f, false
	}
	for k, v := range m {
		if v == nil { // an explicit null filters nothing, as an omitted field
			continue
		}
		var err error
		switch k {
		case "status":
			s := new(db.DeviceStatus)
			err = s.UnmarshalGQL(v)
			f.Status = s
		case "gpuModel":
			f.GPUModel, err = stringPtr(v)
		case "region":
			f.Region, err = stringPtr(v)
		case "verification":
			s := new(db.VerificationState)
			err = s.UnmarshalGQL(v)
			f.Verification = s
		case "verificationLevel":
			l := new(model.VerificationLevel)
			if err = l.UnmarshalGQL(v); err == nil {
				err = resolvers.FilterByLevel(&f, l)
			}
		}
		if err != nil {
			return f, false
		}
	}
	return f, true
}

func stringPtr(v any) (*string, error) {
	s, err := graphql.UnmarshalString(v)
	return &s, err
}

// orderArg is unmarshalInputDeviceOrder followed by the resolvers' deref (null: the default).
func orderArg(v any) (db.DeviceOrder, bool) {
	var o db.DeviceOrder
	if v == nil {
		return o, true
	}
	m, ok := v.(map[string]any)
	if !ok || !onlyKeys(m, "field", "direction") {
		return o, false
	}
	if f, present := m["field"]; present {
		if err := o.Field.UnmarshalGQL(f); err != nil {
			return o, false
		}
	}
	if d, present := m["direction"]; present {
		if err := o.Direction.UnmarshalGQL(d); err != nil {
			return o, false
		}
	}
	return o, true
}

// load reads every root field's data with the resolvers' db calls, then the GPUs of every device
// whose gpus are selected in one GPUsByDevice call (the resolvers' dataloader batches them the
// same way); false on any error.
func (p *plan) load(ctx context.Context, store *db.DB) bool {
	var ids []string
	for i := range p.root.fields {
		f := &p.root.fields[i]
		r := f.root
		var err error
		switch f.kind {
		case kTypename:
			continue
		case kDevice:
			r.device, err = store.Device(ctx, r.id)
			if err == nil && f.sub.gpus {
				ids = append(ids, r.device.ID)
			}
		case kDevices:
			r.page, err = store.ListDevices(ctx, r.list)
		case kSearch:
			r.page, err = store.SearchDevices(ctx, r.query, r.first, r.after)
		default:
			return false
		}
		if err != nil {
			return false
		}
		if f.kind != kDevice && f.sub.gpus {
			for j := range r.page.Devices {
				ids = append(ids, r.page.Devices[j].ID)
			}
		}
	}
	if len(ids) > 0 {
		gpus, err := store.GPUsByDevice(ctx, ids)
		if err != nil {
			return false
		}
		p.gpus = gpus
	}
	return true
}
