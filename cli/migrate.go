package cli

import (
	"context"
	"fmt"

	"github.com/gpugate/gpugate/db"
)

func runMigrate(args []string) error {
	f := newFlags("migrate", "Apply every pending embedded migration and exit.")
	dbf := addDBFlags(f)
	if err := f.parse(args); err != nil {
		return err
	}
	return withDatabase(dbf, "info", func(ctx context.Context, d *database) error {
		applied, err := db.Migrate(ctx, d.store.SQL().DB)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Println("migrations: already current")
			return nil
		}
		fmt.Printf("migrations applied: %v\n", applied)
		return nil
	})
}
