package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gpugate/gpugate/attest"
)

// errStopped is returned for every field resolved after the request's context ended (deadline
// passed or client gone): the executor then stops resolving, so a request past its deadline stops
// using CPU, not only SQL.
var errStopped = errors.New("execution stopped")

// stopWhenDone is a field middleware. Every field gqlgen resolves passes through it (resolver
// fields, struct fields and introspection fields alike; only __typename is written without a
// resolver, and the cost limit bounds how many of those an operation may select).
func stopWhenDone(ctx context.Context, next graphql.Resolver) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errStopped, err)
	}
	return next(ctx)
}

// timeoutResponse is an operation middleware: gqlgen answers an operation whose context ended
// before its response was built with no response at all (the transport writes a bare "null"); a
// request past its deadline gets one TIMEOUT error instead.
func timeoutResponse(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	handler := next(ctx)
	first := true
	return func(ctx context.Context) *graphql.Response {
		resp := handler(ctx)
		if resp == nil && first && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			resp = timeoutError()
		}
		first = false
		return resp
	}
}

func timeoutError() *graphql.Response {
	err := gqlerror.Errorf("the request exceeded its time limit")
	errcode.Set(err, CodeTimeout)
	return &graphql.Response{Errors: gqlerror.List{err}}
}

// finishResponse is a response middleware: it reports the operation's cost in
// extensions.cost, replaces the partial answer of an operation that ran out of time by one
// TIMEOUT error (not one per unresolved field), and replaces a response larger than maxBytes by
// one RESPONSE_TOO_LARGE error, so a client never gets a truncated JSON body.
func finishResponse(maxBytes int64) graphql.ResponseMiddleware {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		resp := next(ctx)
		if resp == nil {
			return resp
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return timeoutError()
		}
		if size := int64(len(resp.Data)); size > maxBytes {
			err := gqlerror.Errorf("the response would be %d bytes; the limit is %d: select fewer fields or a smaller page", size, maxBytes)
			errcode.Set(err, CodeResponseTooLarge)
			return &graphql.Response{Errors: gqlerror.List{err}}
		}
		// No operation context on errors dispatched before parsing (a body that is not JSON), and
		// GetOperationContext panics without one.
		if graphql.HasOperationContext(ctx) {
			if c := graphql.GetOperationContext(ctx).Stats.GetExtension(costExtension); c != nil {
				if resp.Extensions == nil {
					resp.Extensions = map[string]any{}
				}
				resp.Extensions[costExtension] = c
			}
		}
		return resp
	}
}

// admission bounds the operations executing at once in this process: up to slots run, up to
// queue more wait at most wait for a slot, and the rest are refused at once with OVERLOADED (HTTP
// 503, Retry-After), so a burst of expensive requests makes callers retry instead of making
// every request slow. Health endpoints do not pass through it.
type admission struct {
	slots chan struct{}
	queue chan struct{}
	wait  time.Duration
}

func newAdmission(slots, queue int, wait time.Duration) *admission {
	return &admission{slots: make(chan struct{}, slots), queue: make(chan struct{}, queue), wait: wait}
}

func (a *admission) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acquire(r.Context(), a.slots, a.queue, a.wait) {
			w.Header().Set("Retry-After", a.retryAfter())
			writeError(w, r, http.StatusServiceUnavailable, CodeOverloaded, overloadedMessage)
			return
		}
		defer func() { <-a.slots }()
		t := &ticket{}
		next.ServeHTTP(&overloadWriter{ResponseWriter: w, t: t, retryAfter: a.retryAfter()},
			r.WithContext(context.WithValue(r.Context(), ticketKey{}, t)))
	})
}

// lanes admits requests that carry a worker signature through workers and every other request
// through general. The choice is made before the signature is checked (so checking signatures is
// bounded too); a forged signature header only competes in the worker lane and is refused there.
func lanes(general, workers *admission) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		g, w := general.middleware(next), workers.middleware(next)
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if r.Header.Get(attest.SignatureHeader) != "" {
				w.ServeHTTP(rw, r)
				return
			}
			g.ServeHTTP(rw, r)
		})
	}
}

const overloadedMessage = "the gateway is busy: retry after a short pause"

func (a *admission) retryAfter() string {
	return strconv.Itoa(max(1, int(a.wait.Round(time.Second)/time.Second)))
}

// acquire takes a slot, waiting in the queue if there is room in it; it returns false when the
// queue is full, the wait ran out or the request ended while waiting.
func acquire(ctx context.Context, slots, queue chan struct{}, wait time.Duration) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	select {
	case queue <- struct{}{}:
	default:
		return false
	}
	defer func() { <-queue }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// ticket lets the executor, which only learns an operation's cost after parsing, refuse it as
// OVERLOADED with the HTTP status the admission middleware gives (gqlgen writes 200 itself).
type ticket struct{ overloaded atomic.Bool }

type ticketKey struct{}

// overloadWriter turns the response of an operation the executor refused as overloaded into an
// HTTP 503 with Retry-After. The flag is set before gqlgen writes anything.
type overloadWriter struct {
	http.ResponseWriter
	t          *ticket
	retryAfter string
	wrote      bool
}

func (o *overloadWriter) WriteHeader(code int) {
	if !o.wrote && o.t.overloaded.Load() {
		o.Header().Set("Retry-After", o.retryAfter)
		code = http.StatusServiceUnavailable
	}
	o.wrote = true
	o.ResponseWriter.WriteHeader(code)
}

func (o *overloadWriter) Write(b []byte) (int, error) {
	if !o.wrote {
		o.WriteHeader(http.StatusOK)
	}
	return o.ResponseWriter.Write(b)
}

func (o *overloadWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// heavyLane bounds the expensive operations (cost at least cost) executing at once to slots,
// with as many waiting at most wait: a few callers sending the most expensive documents the
// limits accept occupy at most 2 × slots of the process's execution slots, and cheap operations
// keep the rest. Beyond that they get OVERLOADED (HTTP 503, Retry-After).
type heavyLane struct {
	cost         int64
	slots, queue chan struct{}
	wait         time.Duration
}

func newHeavyLane(cost int64, slots int, wait time.Duration) *heavyLane {
	return &heavyLane{cost: cost, slots: make(chan struct{}, slots), queue: make(chan struct{}, slots), wait: wait}
}

func (h *heavyLane) middleware(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	c, _ := oc.Stats.GetExtension(costExtension).(costReport)
	t, _ := ctx.Value(ticketKey{}).(*ticket)
	if c.Requested < h.cost || t == nil {
		return next(ctx)
	}
	if !acquire(ctx, h.slots, h.queue, h.wait) {
		t.overloaded.Store(true)
		err := gqlerror.Errorf("%s (the gateway runs at most %d operations costing %d or more at once)", overloadedMessage, cap(h.slots), h.cost)
		errcode.Set(err, CodeOverloaded)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{err}})
	}
	var once sync.Once
	release := func() { once.Do(func() { <-h.slots }) }
	handler := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		defer release()
		return handler(ctx)
	}
}
