package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/gqlerror"
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
		if oc := graphql.GetOperationContext(ctx); oc != nil {
			if c := oc.Stats.GetExtension(costExtension); c != nil {
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
		if !a.acquire(r.Context()) {
			a.refuse(w, r)
			return
		}
		defer func() { <-a.slots }()
		next.ServeHTTP(w, r)
	})
}

// acquire takes a slot, waiting in the queue if there is room in it; it returns false when the
// queue is full, the wait ran out or the request ended while waiting.
func (a *admission) acquire(ctx context.Context) bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case a.queue <- struct{}{}:
	default:
		return false
	}
	defer func() { <-a.queue }()
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (a *admission) refuse(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(a.wait.Round(time.Second)/time.Second))))
	writeError(w, r, http.StatusServiceUnavailable, CodeOverloaded, "the gateway is busy: retry after a short pause")
}
