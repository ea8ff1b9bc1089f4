// Package fastexec is a compiled executor for the public explorer reads: devices, device(id) and
// searchDevices with the public fields of devices, their GPUs, edges and page info
// (docs/benchmark.md, "The compiled executor for public reads").
//
// Wrap puts it in front of gqlgen's generated executable schema. gqlgen's handler calls Exec
// inside its operation and response middleware chains, after parsing, validation, variable
// coercion and every operation-context mutator (the gateway's limits), so all of these stay as
// they are; only the execution of an operation is replaced, and only when every field the
// operation selects, at every level, is one the compiled executor knows. It then reads the same
// db methods the resolvers call, with the arguments converted as the generated code converts them,
// and writes the response data with gqlgen's own marshalers, byte for byte what gqlgen's executor
// writes. Anything else — another field, a field carrying a directive other than @deprecated
// (authorization is decided by resolvers/directives.go alone), @defer, an argument it does not
// recognise, any error, a context that ended, a panic — goes to gqlgen's executor, which produces
// the canonical answer or error. Reads have no side effects, so running it after a failed attempt
// is safe.
package fastexec

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/gpugate/gpugate/db"
)

// Process-wide counts of query operations, for tests and diagnostics.
var served, delegated atomic.Uint64

// Stats returns how many query operations the compiled executor answered itself and how many it
// handed to gqlgen's executor since the process started.
func Stats() (servedOps, delegatedOps uint64) { return served.Load(), delegated.Load() }

// schema is gqlgen's executable schema with Exec replaced.
type schema struct {
	graphql.ExecutableSchema
	store *db.DB
}

// Wrap returns es with the compiled executor in front of its Exec; Schema and Complexity are es's.
func Wrap(es graphql.ExecutableSchema, store *db.DB) graphql.ExecutableSchema {
	return &schema{ExecutableSchema: es, store: store}
}

// Exec answers a query operation the compiled executor supports; every other operation, and every
// one it fails to answer, is es.Exec's.
func (s *schema) Exec(ctx context.Context) graphql.ResponseHandler {
	if !graphql.HasOperationContext(ctx) {
		return s.ExecutableSchema.Exec(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	if oc.Operation == nil || oc.Operation.Operation != ast.Query {
		return s.ExecutableSchema.Exec(ctx)
	}
	p, ok := compile(oc)
	if !ok {
		delegated.Add(1)
		return s.ExecutableSchema.Exec(ctx)
	}
	// Like the generated executor, the work is done by the first call of the handler (with the
	// context of the response middlewares); without @defer a second call returns nil.
	var fallback graphql.ResponseHandler
	first := true
	return func(ctx context.Context) *graphql.Response {
		if fallback != nil {
			return fallback(ctx)
		}
		if !first {
			return nil
		}
		first = false
		if data, ok := s.run(ctx, p); ok {
			served.Add(1)
			return &graphql.Response{Data: data}
		}
		delegated.Add(1)
		fallback = s.ExecutableSchema.Exec(ctx)
		return fallback(ctx)
	}
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer is the largest buffer returned to the pool (larger ones are rare: a 100-device
// page with 8 GPUs each is about 250 KiB).
const maxPooledBuffer = 1 << 20

// run reads the plan's data and writes the response's data; ok is false, and nothing is
// returned, on any error, a context that ended or a panic (the caller then delegates).
func (s *schema) run(ctx context.Context, p *plan) (data json.RawMessage, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			data, ok = nil, false
		}
	}()
	if ctx.Err() != nil || !p.load(ctx, s.store) || ctx.Err() != nil {
		return nil, false
	}
	buf := buffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			buffers.Put(buf)
		}
	}()
	if !p.write(buf) {
		return nil, false
	}
	// The response outlives this call (the transport encodes it later): copy it out of the pool.
	return bytes.Clone(buf.Bytes()), true
}
