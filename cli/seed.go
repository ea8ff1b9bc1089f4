package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/gpugate/gpugate/db"
)

// SeedMain is `gpugate seed`: load deterministic demo data into an empty database and exit.
type SeedMain struct {
	oneShot
	devices *int
}

// ParseFlags reads the database flags and --devices; it returns flag.ErrHelp after --help.
func (m *SeedMain) ParseFlags(args []string) error {
	f := newFlags("seed", "Load deterministic demo data (users, devices, GPUs) into an empty database and exit.")
	m.dbf = addDBFlags(f)
	m.devices = f.Int("devices", "GPUGATE_SEED", 3000, "number of demo devices")
	return f.parse(args)
}

// Run migrates the database and seeds it unless it already has devices; it returns the
// database's error.
func (m *SeedMain) Run(ctx context.Context) error {
	d, err := m.open(ctx, "info")
	if err != nil {
		return err
	}
	var start time.Time
	var seeded bool
	err = d.asOwner(ctx, func(owner *db.DB) error {
		if _, err := db.Migrate(ctx, owner.SQL().DB); err != nil {
			return err
		}
		start = time.Now()
		seeded, err = owner.Seed(ctx, *m.devices)
		return err
	})
	if err != nil {
		return err
	}
	if !seeded {
		fmt.Println("seed: the database already has devices; nothing loaded")
		return nil
	}
	fmt.Printf("seed: %d devices loaded in %s\n", *m.devices, time.Since(start).Round(time.Millisecond))
	return nil
}
