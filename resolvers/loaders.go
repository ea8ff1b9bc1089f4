package resolvers

import (
	"context"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vikstrous/dataloadgen"

	"github.com/gpugate/gpugate/db"
)

type loadersKey struct{}

// loaders batch the per-row lookups of one operation, so a page of 100 devices costs one GPU
// query, not 100.
type loaders struct {
	gpus         *dataloadgen.Loader[string, []db.GPU]
	credentials  *dataloadgen.Loader[string, []db.DeviceCredential]
	attestations *dataloadgen.Loader[string, []db.Attestation]
	addresses    *dataloadgen.Loader[string, []db.SourceAddress]
}

// Loaders is an operation middleware that gives each operation its own dataloaders (results are
// cached only for that operation).
func (r *Resolver) Loaders(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	opts := []dataloadgen.Option{dataloadgen.WithBatchCapacity(db.MaxPageSize), dataloadgen.WithWait(time.Millisecond)}
	l := &loaders{
		gpus:         dataloadgen.NewMappedLoader(r.DB.GPUsByDevice, opts...),
		credentials:  dataloadgen.NewMappedLoader(r.DB.CredentialsByDevice, opts...),
		attestations: dataloadgen.NewMappedLoader(r.DB.AttestationsByDevice, opts...),
		addresses:    dataloadgen.NewMappedLoader(r.DB.AddressesByDevice, opts...),
	}
	return next(context.WithValue(ctx, loadersKey{}, l))
}

func loadersFrom(ctx context.Context) *loaders {
	l, _ := ctx.Value(loadersKey{}).(*loaders)
	return l
}
