package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/userimport"
)

// UsersImportMain is `gpugate users import`: link legacy accounts to OIDC identities.
type UsersImportMain struct {
	oneShot
	issuer, legacyCSV, legacyTable, identities, mapping *string
	files                                               []*os.File
}

// ParseFlags reads the import's flags after the word "import"; it returns flag.ErrHelp after
// --help and a usage error without it.
func (m *UsersImportMain) ParseFlags(args []string) error {
	if len(args) > 0 && isHelp(args[0]) { // gpugate users --help, gpugate help users
		args = []string{"import", "--help"}
	}
	if len(args) == 0 || args[0] != "import" {
		return errors.New("usage: gpugate users import --issuer URL (--legacy-csv F | --legacy-table T) (--identities-csv F | --mapping-csv F)")
	}
	f := newFlags("users import", "Link legacy accounts to OIDC identities, by verified email (--identities-csv, the IdP's user export)\n"+
		"or by an explicit mapping (--mapping-csv). Idempotent and resumable: run it again after an interruption.\n"+
		"Never merges two accounts: conflicts are reported, not resolved. See docs/user-import.md.")
	m.dbf = addDBFlags(f)
	m.issuer = f.String("issuer", "GPUGATE_IMPORT_ISSUER", "", "issuer URL of the identities, exactly as in their tokens")
	m.legacyCSV = f.String("legacy-csv", "GPUGATE_IMPORT_LEGACY_CSV", "", "CSV of legacy accounts: legacy_id,email[,display_name]")
	m.legacyTable = f.String("legacy-table", "GPUGATE_IMPORT_LEGACY_TABLE", "", "table of legacy accounts in the same database: [schema.]table")
	m.identities = f.String("identities-csv", "GPUGATE_IMPORT_IDENTITIES_CSV", "", "the IdP's user export: subject,email,email_verified")
	m.mapping = f.String("mapping-csv", "GPUGATE_IMPORT_MAPPING_CSV", "", "explicit links: legacy_id,subject")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	// Say what is missing before anything is opened: without DATABASE_URL, opening the
	// database creates and starts a PostgreSQL cluster.
	check := userimport.Options{Issuer: *m.issuer, LegacyTable: *m.legacyTable}
	given := func(path string) io.Reader {
		if path == "" {
			return nil
		}
		return strings.NewReader("")
	}
	check.LegacyCSV, check.IdentitiesCSV, check.MappingCSV = given(*m.legacyCSV), given(*m.identities), given(*m.mapping)
	if err := check.Validate(); err != nil {
		return fmt.Errorf("%w (see gpugate users import --help)", err)
	}
	return nil
}

// Run opens the input files and the database and imports, printing the summary; it returns
// the first error of opening a file, the database or the import.
func (m *UsersImportMain) Run(ctx context.Context) error {
	o := userimport.Options{Issuer: *m.issuer, LegacyTable: *m.legacyTable, Progress: userimport.NewProgressBar(os.Stderr)}
	for _, in := range []struct {
		path string
		dst  *io.Reader
	}{{*m.legacyCSV, &o.LegacyCSV}, {*m.identities, &o.IdentitiesCSV}, {*m.mapping, &o.MappingCSV}} {
		if in.path == "" {
			continue
		}
		file, err := os.Open(in.path)
		if err != nil {
			return err
		}
		m.files = append(m.files, file)
		*in.dst = file
	}
	d, err := m.open(ctx, "warn")
	if err != nil {
		return err
	}
	return d.asOwner(ctx, func(owner *db.DB) error {
		if _, err := db.Migrate(ctx, owner.SQL().DB); err != nil {
			return err
		}
		sum, err := userimport.Run(ctx, owner.SQL(), o)
		fmt.Print(sum)
		return err
	})
}

// Close closes the input files and the database; it returns nil.
func (m *UsersImportMain) Close() error {
	for _, f := range m.files {
		_ = f.Close()
	}
	return m.oneShot.Close()
}
