package cli

import (
	"context"
	"fmt"

	"github.com/gpugate/gpugate/db"
)

// MigrateMain is `gpugate migrate`: apply every pending embedded migration and exit.
type MigrateMain struct {
	oneShot
}

// ParseFlags reads the database flags; it returns flag.ErrHelp after --help.
func (m *MigrateMain) ParseFlags(args []string) error {
	f := newFlags("migrate", "Apply every pending embedded migration and exit.")
	m.dbf = addDBFlags(f)
	return f.parse(args)
}

// Run applies the pending migrations and prints which; it returns the database's error.
func (m *MigrateMain) Run(ctx context.Context) error {
	d, err := m.open(ctx, "info")
	if err != nil {
		return err
	}
	var applied []int64
	if err := d.asOwner(ctx, func(owner *db.DB) (err error) { applied, err = db.Migrate(ctx, owner.SQL().DB); return err }); err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Println("migrations: already current")
		return nil
	}
	fmt.Printf("migrations applied: %v\n", applied)
	return nil
}
