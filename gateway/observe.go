package gateway

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/graph/model"
	"github.com/gpugate/gpugate/metrics"
)

// Request metrics (docs/operations.md, "Metrics"). The HTTP middleware observe puts a reqInfo in
// the request's context; the executor fills in the operation (the root field, never a name the
// client chose) and the code of the response; observe counts the request when its last byte is
// written. Requests refused before the executor (too large, overloaded, bad token) carry the code
// writeError gave them.

type reqInfoKey struct{}

type reqInfo struct {
	mu   sync.Mutex
	op   string // a root field name or a metrics.Op* value
	typ  string // query, mutation
	code string // "" until an error code is known
}

func (i *reqInfo) set(op, typ string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.op, i.typ = op, typ
}

func (i *reqInfo) setCode(code string, override bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if override || i.code == "" {
		i.code = code
	}
}

func infoFrom(ctx context.Context) *reqInfo {
	i, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return i
}

// noteErrorCode records the code of an error answered outside the executor (writeError).
func noteErrorCode(ctx context.Context, code string) {
	if i := infoFrom(ctx); i != nil {
		i.setCode(code, false)
	}
}

// observe counts every request to next in m (a nil m: next unchanged).
func observe(m *metrics.Metrics, next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{op: metrics.OpNone}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info)))
		info.mu.Lock()
		op, typ, code := info.op, info.typ, info.code
		info.mu.Unlock()
		m.ObserveRequest(op, typ, code, time.Since(start))
	})
}

// operationLabel returns the metrics label of an operation: its one distinct root field (by
// name, never alias), _introspection when it selects only introspection, _multiple otherwise.
func operationLabel(op *ast.OperationDefinition) string {
	if op == nil {
		return metrics.OpNone
	}
	names := rootFields(op.SelectionSet, map[string]bool{}, nil)
	label := ""
	for _, n := range names {
		if strings.HasPrefix(n, "__") {
			continue
		}
		if label != "" && label != n {
			return metrics.OpMultiple
		}
		label = n
	}
	if label == "" {
		return metrics.OpIntrospection
	}
	return label
}

// observeOperation is the outermost operation middleware: it names the request's operation and
// records the code of the response the operation middleware produced (an OVERLOADED answer of
// the heavy lane included).
func observeOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	info := infoFrom(ctx)
	if info == nil {
		return next(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	info.set(operationLabel(oc.Operation), string(oc.Operation.Operation))
	handler := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		resp := handler(ctx)
		if resp != nil {
			info.setCode(responseCode(resp), true)
		}
		return resp
	}
}

// observeResponse is the outermost response middleware: it sees the final answer of every
// request the executor handled, those refused before any operation ran (parse, validation,
// limits) included.
func observeResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if info := infoFrom(ctx); info != nil && resp != nil {
		info.setCode(responseCode(resp), true)
	}
	return resp
}

// responseCode is CodeOK for a response without errors, else its first error's code
// ("INTERNAL" when it has none; metrics normalises and caps the values).
func responseCode(resp *graphql.Response) string {
	if len(resp.Errors) == 0 {
		return metrics.CodeOK
	}
	if c, ok := resp.Errors[0].Extensions["code"].(string); ok && c != "" {
		return c
	}
	return CodeInternal
}

// observeProofs is a field middleware counting each judged proof by verdict and level, as the
// client is told them. A submitProof that returned an error is no verdict (its code is counted
// with the request). Observing the resolved field keeps the count out of the worker protocol.
func observeProofs(m *metrics.Metrics) graphql.FieldMiddleware {
	return func(ctx context.Context, next graphql.Resolver) (any, error) {
		fc := graphql.GetFieldContext(ctx)
		if fc == nil || fc.Object != "Mutation" || fc.Field.Name != "submitProof" {
			return next(ctx)
		}
		res, err := next(ctx)
		if p, ok := res.(*model.ProofResult); ok && err == nil && p != nil {
			m.ObserveProof(string(p.Verdict), string(p.Level))
		}
		return res, err
	}
}

// rootFieldNames returns the names of the schema's query and mutation fields: the operation
// label values metrics allows.
func rootFieldNames(s *ast.Schema) []string {
	var out []string
	for _, def := range []*ast.Definition{s.Query, s.Mutation, s.Subscription} {
		if def == nil {
			continue
		}
		for _, f := range def.Fields {
			if !strings.HasPrefix(f.Name, "__") {
				out = append(out, f.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// watchLanes exports the admission lanes' occupancy, read when scraped.
func watchLanes(m *metrics.Metrics, lanes map[string]*admission) {
	for name, a := range lanes {
		m.WatchLane(name, metrics.Lane{
			InFlight: func() int { return len(a.slots) },
			Queued:   func() int { return len(a.queue) },
			Slots:    cap(a.slots), Queue: cap(a.queue),
		})
	}
}
