package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/userimport"
)

func runUsers(args []string) error {
	if len(args) == 0 || args[0] != "import" {
		return errors.New("usage: gpugate users import --issuer URL (--legacy-csv F | --legacy-table T) (--identities-csv F | --mapping-csv F)")
	}
	f := newFlags("users import", "Link legacy accounts to OIDC identities, by verified email (--identities-csv, the IdP's user export)\n"+
		"or by an explicit mapping (--mapping-csv). Idempotent and resumable: run it again after an interruption.\n"+
		"Never merges two accounts: conflicts are reported, not resolved. See docs/user-import.md.")
	dbf := addDBFlags(f)
	issuer := f.String("issuer", "GPUGATE_IMPORT_ISSUER", "", "issuer URL of the identities, exactly as in their tokens")
	legacyCSV := f.String("legacy-csv", "GPUGATE_IMPORT_LEGACY_CSV", "", "CSV of legacy accounts: legacy_id,email[,display_name]")
	legacyTable := f.String("legacy-table", "GPUGATE_IMPORT_LEGACY_TABLE", "", "table of legacy accounts in the same database: [schema.]table")
	identities := f.String("identities-csv", "GPUGATE_IMPORT_IDENTITIES_CSV", "", "the IdP's user export: subject,email,email_verified")
	mapping := f.String("mapping-csv", "GPUGATE_IMPORT_MAPPING_CSV", "", "explicit links: legacy_id,subject")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	o := userimport.Options{Issuer: *issuer, LegacyTable: *legacyTable, Progress: userimport.NewProgressBar(os.Stderr)}
	for _, in := range []struct {
		path string
		dst  *io.Reader
	}{{*legacyCSV, &o.LegacyCSV}, {*identities, &o.IdentitiesCSV}, {*mapping, &o.MappingCSV}} {
		if in.path == "" {
			continue
		}
		file, err := os.Open(in.path)
		if err != nil {
			return err
		}
		defer file.Close()
		*in.dst = file
	}
	return withDatabase(dbf, "warn", func(ctx context.Context, d *database) error {
		if _, err := db.Migrate(ctx, d.store.SQL().DB); err != nil {
			return err
		}
		sum, err := userimport.Run(ctx, d.store.SQL(), o)
		fmt.Print(sum)
		if err != nil {
			return err
		}
		return nil
	})
}
