package resolvers

import (
	"context"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vikstrous/dataloadgen"

	"github.com/gpugate/gpugate/db"
)

type loadersKey struct{}

// loaders batch the per-row lookups of one operation, so a page of 100 devices costs one GPU
// query, not 100. Each loader is made when the operation first needs it (ensure): most
// operations select none of these fields and make none.
type loaders struct {
	gpus         *dataloadgen.Loader[string, []db.GPU]
	credentials  *dataloadgen.Loader[string, []db.DeviceCredential]
	attestations *dataloadgen.Loader[string, []db.Attestation]
	addresses    *dataloadgen.Loader[string, []db.SourceAddress]

	gpusOnce, credentialsOnce, attestationsOnce, addressesOnce sync.Once
}

// loaderOptions: a batch is at most a page, gathered for at most a millisecond.
var loaderOptions = []dataloadgen.Option{dataloadgen.WithBatchCapacity(db.MaxPageSize), dataloadgen.WithWait(time.Millisecond)}

// ensure makes the loader that batches fetch, unless made already. It reports false for a fetch
// no loader batches (its caller then fetches alone).
func (l *loaders) ensure(fetch any) bool {
	switch f := fetch.(type) {
	case func(context.Context, []string) (map[string][]db.GPU, error):
		l.gpusOnce.Do(func() { l.gpus = dataloadgen.NewMappedLoader(f, loaderOptions...) })
	case func(context.Context, []string) (map[string][]db.DeviceCredential, error):
		l.credentialsOnce.Do(func() { l.credentials = dataloadgen.NewMappedLoader(f, loaderOptions...) })
	case func(context.Context, []string) (map[string][]db.Attestation, error):
		l.attestationsOnce.Do(func() { l.attestations = dataloadgen.NewMappedLoader(f, loaderOptions...) })
	case func(context.Context, []string) (map[string][]db.SourceAddress, error):
		l.addressesOnce.Do(func() { l.addresses = dataloadgen.NewMappedLoader(f, loaderOptions...) })
	default:
		return false
	}
	return true
}

// Loaders is an operation middleware that gives each operation its own dataloaders (results are
// cached only for that operation), made on first use.
func (r *Resolver) Loaders(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	return next(context.WithValue(ctx, loadersKey{}, &loaders{}))
}

func loadersFrom(ctx context.Context) *loaders {
	l, _ := ctx.Value(loadersKey{}).(*loaders)
	return l
}
