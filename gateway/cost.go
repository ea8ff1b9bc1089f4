package gateway

import (
	"encoding/json"
	"strings"

	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
)

// Cost model (docs/security.md, "Documents and execution", Cost). Every selected field costs 1: __typename,
// aliases and fields inside fragments included, fragments expanded where they are spread. A list
// of objects multiplies the cost of its selection by its length: the page size of its connection
// (`first`, from a literal or a variable) for connection edges, else the most elements the list
// can hold. Lists of scalars cost 1 (their elements are written, not resolved). Each fragment is
// measured once per page size, so the walk is linear in the document however fragments chain,
// and the arithmetic saturates instead of overflowing. The count is an upper bound: a field
// selected twice under one response key (the same fragment spread twice) counts twice although
// the executor merges it. Introspection subtrees are counted exactly over the static schema
// (introspectionCoster).

// costCap is where the arithmetic saturates: far above any limit, far below overflow.
const costCap = 1 << 40

// listBounds are the most elements a list field without `first` returns, from the rules that
// fill it.
var listBounds = map[string]int64{
	"Device.gpus":                attest.MaxSnapshotGPUs, // a snapshot holds at most 64 GPUs
	"DevicePrivate.attestations": 50,                     // AttestationsByDevice returns the latest 50
	// Credentials are not capped by a rule; a device has one key, two during a rotation. Ten
	// covers an owner who rotates without revoking; more only costs that owner's own request.
	"DevicePrivate.credentials":   10,
	"NetworkStats.byStatus":       4, // DeviceStatus values
	"NetworkStats.byVerification": 3, // VerificationState values
	// How each GPU was judged in a proof: one per snapshot GPU (verify.judgeEvidence).
	"Attestation.gpus":                 attest.MaxSnapshotGPUs,
	"ProofResult.gpus":                 attest.MaxSnapshotGPUs,
	"NetworkStats.byVerificationLevel": 4, // VerificationLevel values
	// Distinct models and regions are not capped by a rule; these totals come from one cached
	// aggregate, so a generous estimate only guards their field selections.
	"NetworkStats.byGpuModel": 64,
	"NetworkStats.byRegion":   64,
}

// defaultListBound is the length assumed for a list of objects with no known bound.
const defaultListBound = db.MaxPageSize

type coster struct {
	schema *ast.Schema
	vars   map[string]any
	frags  map[fragKey]int64
	intro  *introspectionCoster
}

type fragKey struct {
	name string
	page int64
}

// operationCost returns the cost of op; introspection subtrees are counted by walking the static
// schema and stop at budget (the result is then budget+1 or more).
func operationCost(schema *ast.Schema, op *ast.OperationDefinition, vars map[string]any, budget int64) int64 {
	c := &coster{schema: schema, vars: vars, frags: map[fragKey]int64{}}
	c.intro = &introspectionCoster{schema: schema, vars: vars, budget: budget, steps: 64 * max(budget, 1000)}
	return c.selection(op.SelectionSet, 0)
}

// selection sums the cost of a selection set; page is the `first` of the connection whose
// fields these are (0 outside a connection).
func (c *coster) selection(set ast.SelectionSet, page int64) int64 {
	var total int64
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			total = satAdd(total, c.field(s, page))
		case *ast.InlineFragment:
			total = satAdd(total, c.selection(s.SelectionSet, page))
		case *ast.FragmentSpread:
			if s.Definition == nil {
				continue
			}
			k := fragKey{s.Name, page}
			v, ok := c.frags[k]
			if !ok {
				c.frags[k] = 0 // validation forbids cycles; this only guards the walk
				v = c.selection(s.Definition.SelectionSet, page)
				c.frags[k] = v
			}
			total = satAdd(total, v)
		}
	}
	return total
}

func (c *coster) field(f *ast.Field, page int64) int64 {
	switch f.Name {
	case "__typename":
		return 1
	case "__schema", "__type":
		return satAdd(1, c.intro.root(f))
	}
	if f.Definition == nil || len(f.SelectionSet) == 0 {
		return 1
	}
	childPage := int64(0)
	if f.Definition.Arguments.ForName("first") != nil {
		childPage = c.first(f)
	}
	children := c.selection(f.SelectionSet, childPage)
	if f.Definition.Type.Elem == nil { // not a list
		return satAdd(1, children)
	}
	n := int64(defaultListBound)
	if page > 0 {
		n = page
	} else if b, ok := listBounds[f.ObjectDefinition.Name+"."+f.Name]; ok {
		n = b
	}
	return satAdd(1, satMul(n, children))
}

// first returns the page size a connection field asks for, clamped to 1..db.MaxPageSize (the
// resolver refuses anything outside; an unreadable value counts as the largest page).
func (c *coster) first(f *ast.Field) int64 {
	arg := f.Arguments.ForName("first")
	if arg == nil || arg.Value == nil {
		return db.MaxPageSize
	}
	v, err := arg.Value.Value(c.vars)
	if err != nil {
		return db.MaxPageSize
	}
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case float64:
		n = int64(x)
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return db.MaxPageSize
		}
		n = i
	default:
		return db.MaxPageSize
	}
	return min(max(n, 1), db.MaxPageSize)
}

func satAdd(a, b int64) int64 { return min(a+b, costCap) } // both operands are at most costCap

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > costCap/b {
		return costCap
	}
	return min(a*b, costCap)
}

// introspectionCoster counts the fields an introspection subtree resolves, by walking the static
// schema exactly as the executor would (every __Type, __Field, ... it would visit, fields of
// deprecated members included). The walk is exact rather than estimated because introspection
// types are recursive (__Field.type.fields.type...) and their lists' lengths vary a lot: a
// bound-times-bound estimate would refuse GraphiQL's own introspection query. The walk stops as
// soon as the count passes budget, and every step (fragment expansions included) is bounded by
// steps, so measuring an enormous introspection document is itself cheap.
type introspectionCoster struct {
	schema *ast.Schema
	vars   map[string]any
	budget int64
	steps  int64
	cost   int64
}

// introspection object kinds
type introKind int

const (
	kSchema introKind = iota
	kType
	kField
	kInputValue
	kEnumValue
	kDirective
)

// typeRef is an introspection __Type: a reference (non-null, list or named) or a definition.
type typeRef struct {
	ref *ast.Type       // nil when the type is a bare definition (__schema.types)
	def *ast.Definition // the named type's definition, nil when unknown
}

func (t typeRef) named() *ast.Definition {
	if t.ref != nil && (t.ref.NonNull || t.ref.Elem != nil) {
		return nil // a wrapper has no fields, members or name of its own
	}
	return t.def
}

func (ic *introspectionCoster) exhausted() bool { return ic.cost > ic.budget || ic.steps <= 0 }

// root returns the cost of the subtree of __schema or __type (the root field itself excluded).
func (ic *introspectionCoster) root(f *ast.Field) int64 {
	before := ic.cost
	if ic.exhausted() {
		return costCap
	}
	switch f.Name {
	case "__schema":
		ic.walk(kSchema, nil, f.SelectionSet)
	case "__type":
		if arg := f.Arguments.ForName("name"); arg != nil && arg.Value != nil {
			if v, err := arg.Value.Value(ic.vars); err == nil {
				if name, ok := v.(string); ok {
					if def := ic.schema.Types[name]; def != nil {
						ic.walk(kType, typeRef{def: def}, f.SelectionSet)
					}
				}
			}
		}
	}
	if ic.exhausted() {
		return costCap
	}
	return ic.cost - before
}

// walk counts the fields of set resolved on obj (of kind k).
func (ic *introspectionCoster) walk(k introKind, obj any, set ast.SelectionSet) {
	for _, sel := range set {
		ic.steps--
		if ic.exhausted() {
			return
		}
		switch s := sel.(type) {
		case *ast.InlineFragment:
			ic.walk(k, obj, s.SelectionSet)
			continue
		case *ast.FragmentSpread:
			if s.Definition != nil {
				ic.walk(k, obj, s.Definition.SelectionSet)
			}
			continue
		case *ast.Field:
			ic.cost++
			ic.children(k, obj, s)
		}
	}
}

// children walks the objects field f of obj resolves to.
func (ic *introspectionCoster) children(k introKind, obj any, f *ast.Field) {
	if len(f.SelectionSet) == 0 {
		return
	}
	s := ic.schema
	types := func(defs ...*ast.Definition) {
		for _, d := range defs {
			ic.walk(kType, typeRef{def: d}, f.SelectionSet)
		}
	}
	switch k {
	case kSchema:
		switch f.Name {
		case "types":
			for _, d := range s.Types {
				types(d)
			}
		case "queryType":
			types(s.Query)
		case "mutationType":
			if s.Mutation != nil {
				types(s.Mutation)
			}
		case "subscriptionType":
			if s.Subscription != nil {
				types(s.Subscription)
			}
		case "directives":
			for _, d := range s.Directives {
				ic.walk(kDirective, d, f.SelectionSet)
			}
		}
	case kType:
		t := obj.(typeRef)
		def := t.named()
		switch f.Name {
		case "ofType":
			if t.ref != nil && t.ref.NonNull {
				inner := *t.ref
				inner.NonNull = false
				ic.walk(kType, typeRef{ref: &inner, def: t.def}, f.SelectionSet)
			} else if t.ref != nil && t.ref.Elem != nil {
				ic.walk(kType, typeRef{ref: t.ref.Elem, def: s.Types[t.ref.Elem.Name()]}, f.SelectionSet)
			}
		case "fields":
			if def != nil && (def.Kind == ast.Object || def.Kind == ast.Interface) {
				for _, fd := range def.Fields {
					if !strings.HasPrefix(fd.Name, "__") {
						ic.walk(kField, fd, f.SelectionSet)
					}
				}
			}
		case "inputFields":
			if def != nil && def.Kind == ast.InputObject {
				for _, fd := range def.Fields {
					ic.walk(kInputValue, fd, f.SelectionSet)
				}
			}
		case "enumValues":
			if def != nil && def.Kind == ast.Enum {
				for range def.EnumValues {
					ic.walk(kEnumValue, nil, f.SelectionSet)
				}
			}
		case "interfaces":
			if def != nil && def.Kind == ast.Object {
				for _, name := range def.Interfaces {
					types(s.Types[name])
				}
			}
		case "possibleTypes":
			if def != nil && (def.Kind == ast.Interface || def.Kind == ast.Union) {
				types(s.GetPossibleTypes(def)...)
			}
		}
	case kField, kInputValue:
		var args ast.ArgumentDefinitionList
		var typ *ast.Type
		if fd, ok := obj.(*ast.FieldDefinition); ok {
			args, typ = fd.Arguments, fd.Type
		}
		switch f.Name {
		case "args":
			for _, a := range args {
				ic.walk(kInputValue, &ast.FieldDefinition{Name: a.Name, Type: a.Type}, f.SelectionSet)
			}
		case "type":
			if typ != nil {
				ic.walk(kType, typeRef{ref: typ, def: s.Types[typ.Name()]}, f.SelectionSet)
			}
		}
	case kDirective:
		if f.Name == "args" {
			for _, a := range obj.(*ast.DirectiveDefinition).Arguments {
				ic.walk(kInputValue, &ast.FieldDefinition{Name: a.Name, Type: a.Type}, f.SelectionSet)
			}
		}
	}
}
