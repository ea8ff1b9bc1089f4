package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/gpugate/gpugate/db"
)

func runSeed(args []string) error {
	f := newFlags("seed", "Load deterministic demo data (users, devices, GPUs) into an empty database and exit.")
	dbf := addDBFlags(f)
	n := f.Int("devices", "GPUGATE_SEED", 3000, "number of demo devices")
	if err := f.parse(args); err != nil {
		return err
	}
	return withDatabase(dbf, "info", func(ctx context.Context, d *database) error {
		if _, err := db.Migrate(ctx, d.store.SQL().DB); err != nil {
			return err
		}
		start := time.Now()
		seeded, err := d.store.Seed(ctx, *n)
		if err != nil {
			return err
		}
		if !seeded {
			fmt.Println("seed: the database already has devices; nothing loaded")
			return nil
		}
		fmt.Printf("seed: %d devices loaded in %s\n", *n, time.Since(start).Round(time.Millisecond))
		return nil
	})
}
