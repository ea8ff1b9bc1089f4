package gateway

import (
	"context"
	"slices"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// limits rejects documents that are too deep, too aliased, too wide at the root, carry too
// many directives or cost too much (cost.go), before any resolver runs. Fragments are expanded (a
// fragment spread ten times counts ten times) with each fragment measured once, so a chain of
// fragments cannot make the check itself expensive. The cost of an accepted operation is kept in
// the operation's stats and reported in the response's extensions.cost.
type limits struct {
	cfg    Config
	schema *ast.Schema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = &limits{}

// costExtension names the operation's cost in extensions.
const costExtension = "cost"

// operationCost is extensions.cost of a served response.
type costReport struct {
	Requested int64 `json:"requested"`
	Limit     int   `json:"limit"`
}

func (*limits) ExtensionName() string { return "Limits" }
func (l *limits) Validate(s graphql.ExecutableSchema) error {
	l.schema = s.Schema()
	return nil
}
func (l *limits) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if n := countDirectives(oc.Doc); n > l.cfg.MaxDirectives {
		return limitError("the document uses %d directives; the limit is %d", n, l.cfg.MaxDirectives)
	}
	roots := rootFields(oc.Operation.SelectionSet, map[string]bool{}, nil)
	if !l.cfg.Introspection && (slices.Contains(roots, "__schema") || slices.Contains(roots, "__type")) {
		err := gqlerror.Errorf("introspection is disabled on this gateway")
		errcode.Set(err, CodeIntrospectionDisabled)
		return err
	}
	if n := len(roots) - count(roots, "__typename"); n > l.cfg.MaxRootFields {
		return limitError("the operation selects %d root fields; the limit is %d", n, l.cfg.MaxRootFields)
	}
	m := measurer{frags: map[string]measure{}, cap: 1 << 30}
	root := m.selection(oc.Operation.SelectionSet)
	if root.depth > l.cfg.MaxDepth {
		return limitError("the operation is %d levels deep; the limit is %d", root.depth, l.cfg.MaxDepth)
	}
	if root.aliases > l.cfg.MaxAliases {
		return limitError("the operation uses %d aliases; the limit is %d", root.aliases, l.cfg.MaxAliases)
	}
	limit := int64(l.cfg.MaxCost)
	cost := operationCost(l.schema, oc.Operation, oc.Variables, limit)
	if cost > limit {
		if cost >= costCap {
			return limitError("the operation costs more than %d; the limit is %d", limit, limit)
		}
		return limitError("the operation costs %d; the limit is %d", cost, limit)
	}
	if n := widestSelection(oc.Doc); n > int64(l.cfg.MaxSelectionFields) {
		if n >= costCap {
			return limitError("a selection set selects more than %d fields; the limit is %d", l.cfg.MaxSelectionFields, l.cfg.MaxSelectionFields)
		}
		return limitError("a selection set selects %d fields; the limit is %d", n, l.cfg.MaxSelectionFields)
	}
	oc.Stats.SetExtension(costExtension, costReport{Requested: cost, Limit: l.cfg.MaxCost})
	return nil
}

func limitError(format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	errcode.Set(err, CodeLimit)
	return err
}

type measure struct{ depth, aliases int }

type measurer struct {
	frags map[string]measure
	cap   int
}

// selection measures a selection set: depth counts fields (introspection subtrees, served from
// the static schema, are not counted), aliases count fields whose alias differs from their name.
func (m *measurer) selection(set ast.SelectionSet) measure {
	var out measure
	for _, sel := range set {
		var sub measure
		switch s := sel.(type) {
		case *ast.Field:
			if strings.HasPrefix(s.Name, "__") {
				continue
			}
			sub = m.selection(s.SelectionSet)
			sub.depth++
			if s.Alias != "" && s.Alias != s.Name {
				sub.aliases++
			}
		case *ast.InlineFragment:
			sub = m.selection(s.SelectionSet)
		case *ast.FragmentSpread:
			sub = m.fragment(s)
		}
		out.depth = max(out.depth, sub.depth)
		out.aliases = min(m.cap, out.aliases+sub.aliases)
	}
	return out
}

func (m *measurer) fragment(s *ast.FragmentSpread) measure {
	if s.Definition == nil {
		return measure{}
	}
	if v, ok := m.frags[s.Name]; ok {
		return v
	}
	m.frags[s.Name] = measure{} // validation forbids cycles; this only guards the walk
	v := m.selection(s.Definition.SelectionSet)
	m.frags[s.Name] = v
	return v
}

// rootFields appends the names of an operation's root field selections, fragments included
// (each fragment once).
func rootFields(set ast.SelectionSet, seen map[string]bool, names []string) []string {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			names = append(names, s.Name)
		case *ast.InlineFragment:
			names = rootFields(s.SelectionSet, seen, names)
		case *ast.FragmentSpread:
			if s.Definition != nil && !seen[s.Name] {
				seen[s.Name] = true
				names = rootFields(s.Definition.SelectionSet, seen, names)
			}
		}
	}
	return names
}

func count(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

func countDirectives(doc *ast.QueryDocument) int {
	n := 0
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				n += len(s.Directives)
				walk(s.SelectionSet)
			case *ast.InlineFragment:
				n += len(s.Directives)
				walk(s.SelectionSet)
			case *ast.FragmentSpread:
				n += len(s.Directives)
			}
		}
	}
	for _, op := range doc.Operations {
		n += len(op.Directives)
		for _, v := range op.VariableDefinitions {
			n += len(v.Directives)
		}
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		n += len(f.Directives)
		walk(f.SelectionSet)
	}
	return n
}

// widestSelection returns the most fields any one selection set of doc selects, counting the
// fields that inline fragments and fragment spreads bring into it (each fragment counted once per
// spread, measured once). gqlgen collects a selection set's fields with a linear search per field,
// so one selection set of n fields costs n²/2 string comparisons for every object it is resolved
// on: 4,900 aliased __typename at the root cost ~100 ms of CPU per request whatever the cost
// limit says, which the width limit keeps to a few milliseconds.
func widestSelection(doc *ast.QueryDocument) int64 {
	memo := map[string]int64{}
	var level func(ast.SelectionSet) int64
	level = func(set ast.SelectionSet) int64 {
		var n int64
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				n = satAdd(n, 1)
			case *ast.InlineFragment:
				n = satAdd(n, level(s.SelectionSet))
			case *ast.FragmentSpread:
				if s.Definition == nil {
					continue
				}
				v, ok := memo[s.Name]
				if !ok {
					memo[s.Name] = 0 // validation forbids cycles; this only guards the walk
					v = level(s.Definition.SelectionSet)
					memo[s.Name] = v
				}
				n = satAdd(n, v)
			}
		}
		return n
	}
	var widest int64
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		widest = max(widest, level(set))
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				if len(s.SelectionSet) > 0 {
					walk(s.SelectionSet)
				}
			case *ast.InlineFragment:
				walk(s.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		walk(f.SelectionSet)
	}
	return widest
}
