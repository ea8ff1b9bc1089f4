package cli

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// drainIdleGrace is how long, after SIGTERM, a keep-alive connection that is idle between two
// requests may still carry one more request before the server closes it. http.Server.Shutdown
// closes idle connections at once, and a client that sent its next request on one at that
// moment sees an EOF or a connection reset (a POST is not retried by clients): during the grace
// each such request is answered normally, with "Connection: close", so the client closes the
// connection itself and opens a new one, which the closed listener refuses cleanly
// (docs/resilience.md, "SIGTERM under load").
const drainIdleGrace = time.Second

// drainer tracks the server's open connections and, once draining, asks every client to close
// its connection after the answer it is about to get.
type drainer struct {
	draining atomic.Bool
	open     atomic.Int64
}

// connState is the http.Server's ConnState hook: it counts open connections.
func (d *drainer) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		d.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		d.open.Add(-1)
	}
}

// handler sets "Connection: close" on every answer whose header is written once the drain began,
// including answers of requests that started before it.
func (d *drainer) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&drainWriter{ResponseWriter: w, d: d}, r)
	})
}

// drain stops accepting connections (ln is closed: new connections are refused) and waits until
// every open connection was closed or drainIdleGrace passed or ctx ended, whichever comes first;
// the caller then calls Shutdown, which waits for the requests still running.
func (d *drainer) drain(ctx context.Context, ln net.Listener) {
	d.draining.Store(true)
	_ = ln.Close() // Serve returns; the connections it accepted keep being served
	grace := time.NewTimer(drainIdleGrace)
	defer grace.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for d.open.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-grace.C:
			return
		case <-tick.C:
		}
	}
}

type drainWriter struct {
	http.ResponseWriter
	d     *drainer
	wrote bool
}

func (w *drainWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		if w.d.draining.Load() {
			w.Header().Set("Connection", "close") // net/http closes the connection after this answer
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
