package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
)

// audited wraps the authentication middlewares' reject handler so that every request they
// refuse (a bad token, an invalid, stale or replayed device signature) is in the audit log
// before any resolver could record it (docs/operations.md, "Audit log"). Outages (the identity
// provider or the key lookup failing) are not the caller's doing and are not recorded.
func audited(g *guard.Guard, maxTokens int, reject func(http.ResponseWriter, *http.Request, error)) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if outcome, _ := guard.Classify(err); outcome == guard.Denied {
			wr := guard.Write{Op: operationOf(r, maxTokens), Actor: "anonymous"}
			// The device the signature claims to be, unverified: who is being impersonated.
			if s, perr := attest.ParseSignature(r.Header.Get(attest.SignatureHeader)); perr == nil {
				if id, ierr := db.ParseDeviceID(s.DeviceID); ierr == nil {
					wr.Target = id
				}
			}
			g.Refused(r.Context(), wr, err)
		}
		reject(w, r, err)
	}
}

// operationOf names a refused request's operation as the audit log does for executed ones: its
// first root field (e.g. updateDevice), or "graphql" when the document does not parse. The body
// is the one graphqlOnly already read (bounded); parsing is bounded by the token limit.
func operationOf(r *http.Request, maxTokens int) string {
	var p struct {
		Query         string `json:"query"`
		OperationName string `json:"operationName"`
	}
	if body, ok := r.Context().Value(bodyKey{}).([]byte); ok {
		_ = json.Unmarshal(body, &p)
	} else {
		q := r.URL.Query()
		p.Query, p.OperationName = q.Get("query"), q.Get("operationName")
	}
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: p.Query}, maxTokens)
	if err != nil {
		return "graphql"
	}
	for _, op := range doc.Operations {
		if p.OperationName != "" && op.Name != p.OperationName {
			continue
		}
		for _, sel := range op.SelectionSet {
			if f, ok := sel.(*ast.Field); ok {
				return f.Name
			}
		}
	}
	return "graphql"
}
