package gateway_test

import (
	"log/slog"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/gateway"
	"github.com/gpugate/gpugate/graph"
	"github.com/gpugate/gpugate/internal/testutil"
)

// newEnvOn starts a second gateway, with another configuration, on base's database.
func newEnvOn(t *testing.T, base *env, cfg gateway.Config) *env {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	srv := httptest.NewServer(gateway.New(cfg, base.db, slog.New(slog.NewTextHandler(logs, nil))))
	t.Cleanup(srv.Close)
	e := *base
	e.t, e.url, e.log = t, srv.URL, logs
	return &e
}

// introspectionQuery is what GraphiQL sends.
const introspectionQuery = `query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name } } } } } } }
}`

// authDirectives are the schema directives that decide who may read a field. A field carrying one
// is where anonymous reachability stops.
var authDirectives = []string{"authenticated", "owner", "hasRole", "device"}

// userIdentifier matches field and type names that are, or lead to, a user.
var userIdentifier = regexp.MustCompile(`(?i)user|owner|account|e-?mail|subject|identity|principal|login|wallet|viewer|profile`)

type schemaField struct {
	name, typ string // typ is the named (unwrapped) type
	authed    bool
}

type schemaGraph map[string][]schemaField // object/interface type -> fields; other kinds map to nil

// publicUserPaths returns every path from Query, through fields without an auth directive, to a
// field or type whose name identifies a user.
func publicUserPaths(g schemaGraph) []string {
	var bad []string
	type item struct{ typ, path string }
	seen := map[string]bool{"Query": true}
	queue := []item{{"Query", "Query"}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		for _, f := range g[it.typ] {
			if f.authed || strings.HasPrefix(f.name, "__") {
				continue
			}
			path := it.path + "." + f.name
			if userIdentifier.MatchString(f.name) || userIdentifier.MatchString(f.typ) {
				bad = append(bad, path+": "+f.typ)
				continue
			}
			if !seen[f.typ] {
				seen[f.typ] = true
				queue = append(queue, item{f.typ, path})
			}
		}
	}
	return bad
}

func astGraph(s *ast.Schema) schemaGraph {
	g := schemaGraph{}
	for name, def := range s.Types {
		if strings.HasPrefix(name, "__") {
			continue
		}
		var fields []schemaField
		for _, f := range def.Fields {
			authed := slices.ContainsFunc(f.Directives, func(d *ast.Directive) bool {
				return slices.Contains(authDirectives, d.Name)
			})
			fields = append(fields, schemaField{f.Name, f.Type.Name(), authed})
		}
		// Union members and interface implementations are reachable through the abstract type.
		for _, p := range s.PossibleTypes[name] {
			if def.Kind != ast.Object {
				fields = append(fields, schemaField{"<as " + p.Name + ">", p.Name, false})
			}
		}
		g[name] = fields
	}
	return g
}

type introType struct {
	Kind   string
	Name   string
	Fields []struct {
		Name string
		Type introRef
	}
	PossibleTypes []introRef
}

type introRef struct {
	Kind   string
	Name   *string
	OfType *introRef
}

func (r introRef) named() string {
	for r.Name == nil && r.OfType != nil {
		r = *r.OfType
	}
	if r.Name == nil {
		return ""
	}
	return *r.Name
}

// liveGraph builds the graph from the running gateway's introspection; which fields carry auth
// directives (introspection does not show applied directives) comes from the executable schema
// the gateway serves.
func liveGraph(t *testing.T, e *env) schemaGraph {
	var out struct {
		Schema struct{ Types []introType } `json:"__schema"`
	}
	e.post(introspectionQuery, nil).Decode(t, &out)
	served := graph.NewExecutableSchema(graph.Config{}).Schema()
	g := schemaGraph{}
	for _, typ := range out.Schema.Types {
		if strings.HasPrefix(typ.Name, "__") {
			continue
		}
		def := served.Types[typ.Name]
		if def == nil {
			t.Fatalf("introspection shows type %s the executable schema lacks", typ.Name)
		}
		var fields []schemaField
		for _, f := range typ.Fields {
			fd := def.Fields.ForName(f.Name)
			if fd == nil {
				t.Fatalf("introspection shows %s.%s the executable schema lacks", typ.Name, f.Name)
			}
			authed := slices.ContainsFunc(fd.Directives, func(d *ast.Directive) bool {
				return slices.Contains(authDirectives, d.Name)
			})
			fields = append(fields, schemaField{f.Name, f.Type.named(), authed})
		}
		for _, p := range typ.PossibleTypes {
			fields = append(fields, schemaField{"<as " + p.named() + ">", p.named(), false})
		}
		g[typ.Name] = fields
	}
	return g
}

func TestNoPublicPathReachesAUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0, gateway.Config{Introspection: true})
	g := liveGraph(t, e)
	if len(g["Query"]) == 0 || len(g["Device"]) == 0 {
		t.Fatalf("introspection returned no Query/Device fields: %v", g)
	}
	if bad := publicUserPaths(g); len(bad) > 0 {
		t.Fatalf("public paths reach a user identifier:\n%s", strings.Join(bad, "\n"))
	}
}

// The check itself must be able to fail: on schemas that leak, it reports each leak, and it
// stops at fields guarded by an auth directive.
func TestSchemaCheckCatchesLeaks(t *testing.T) {
	t.Parallel()
	const base = `directive @authenticated on FIELD_DEFINITION
		directive @owner on FIELD_DEFINITION
		type User { id: ID! name: String }
		`
	cases := []struct {
		name, sdl string
		want      []string
	}{
		{"owner field on a public type",
			`type Query { device(id: ID!): Device } type Device { id: ID! owner: User }`,
			[]string{"Query.device.owner: User"}},
		{"scalar user id", `type Query { device: Device } type Device { id: ID! ownerId: ID }`,
			[]string{"Query.device.ownerId: ID"}},
		{"type leading to a user under another name",
			`type Query { device: Device } type Device { operator: Account } type Account { handle: String }`,
			[]string{"Query.device.operator: Account"}},
		{"through a union",
			`type Query { search: [Result] } union Result = Device | Account type Device { id: ID } type Account { id: ID }`,
			[]string{"Query.search.<as Account>: Account"}},
		{"guarded by a directive", `type Query { device: Device } type Device { id: ID! owner: User @owner }`, nil},
		{"viewer behind @authenticated", `type Query { viewer: User @authenticated }`, nil},
		{"viewer without a directive", `type Query { viewer: User }`, []string{"Query.viewer: User"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := gqlparser.LoadSchema(&ast.Source{Input: base + c.sdl})
			if err != nil {
				t.Fatal(err)
			}
			got := publicUserPaths(astGraph(s))
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}
