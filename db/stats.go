package db

import (
	"context"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

type statsCache struct {
	mu    sync.Mutex
	value NetworkStats
	ok    bool
}

// statsQuery computes every total in one scan with grouping sets; the grouping bitmask says
// which set a row belongs to (0 = grand total). Removed devices count nowhere. GPUs count by
// their own level from the devices row alone: a GPU is ATTESTED (attested_gpus of its device)
// or at its device's level (the rest, unattested).
const statsQuery = `SELECT
	GROUPING(status, gpu_model, region, verification, verification_level) AS grp,
	COALESCE(status, '') AS status, COALESCE(gpu_model, '') AS gpu_model,
	COALESCE(region, '') AS region, COALESCE(verification, '') AS verification,
	COALESCE(verification_level, '') AS verification_level,
	count(*) AS devices, COALESCE(sum(gpu_count), 0) AS gpus,
	COALESCE(sum(LEAST(attested_gpus, gpu_count)), 0) AS attested
	FROM devices WHERE removed_at IS NULL
	GROUP BY GROUPING SETS ((), (status), (gpu_model), (region), (verification), (verification_level))
	ORDER BY grp, devices DESC, status, gpu_model, region, verification, verification_level`

// Grouping bitmasks: bit 4 is status ... bit 0 is verification_level; a set bit means "not grouped".
const (
	grpTotal        = 0b11111
	grpStatus       = 0b01111
	grpModel        = 0b10111
	grpRegion       = 0b11011
	grpVerification = 0b11101
	grpLevel        = 0b11110
)

// NetworkStats returns network totals, reusing a result younger than the configured TTL so a
// burst of explorer traffic costs one scan; concurrent misses share one query.
func (d *DB) NetworkStats(ctx context.Context) (NetworkStats, error) {
	if d.statsTTL > 0 {
		d.stats.mu.Lock()
		v, ok := d.stats.value, d.stats.ok && time.Since(d.stats.value.ComputedAt) < d.statsTTL
		d.stats.mu.Unlock()
		if ok {
			return v, nil
		}
	}
	ch := d.flight.DoChan("stats", func() (any, error) {
		// Detached from the first caller's cancellation so one impatient client cannot fail the
		// others waiting on the same flight; bounded by its own deadline.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s, err := d.computeStats(qctx)
		if err != nil {
			return NetworkStats{}, err
		}
		d.stats.mu.Lock()
		d.stats.value, d.stats.ok = s, true
		d.stats.mu.Unlock()
		return s, nil
	})
	select {
	case <-ctx.Done():
		return NetworkStats{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return NetworkStats{}, r.Err
		}
		return r.Val.(NetworkStats), nil
	}
}

func (d *DB) computeStats(ctx context.Context) (NetworkStats, error) {
	var rows []struct {
		Grp          int    `db:"grp"`
		Status       string `db:"status"`
		GPUModel     string `db:"gpu_model"`
		Region       string `db:"region"`
		Verification string `db:"verification"`
		Level        string `db:"verification_level"`
		Devices      int    `db:"devices"`
		GPUs         int    `db:"gpus"`
		Attested     int    `db:"attested"`
	}
	if err := sqlx.SelectContext(ctx, d.reader(ctx), &rows, statsQuery); err != nil {
		return NetworkStats{}, translate("network stats", err)
	}
	s := NetworkStats{
		ByStatus: []StatusCount{}, ByGPUModel: []GpuModelCount{}, ByRegion: []RegionCount{},
		ByVerification: []VerificationCount{}, ComputedAt: time.Now().UTC(),
	}
	byLevel := map[Level]*LevelCount{}
	attested := 0
	for _, r := range rows {
		switch r.Grp {
		case grpTotal:
			s.Devices, s.GPUs = r.Devices, r.GPUs
		case grpStatus:
			s.ByStatus = append(s.ByStatus, StatusCount{DeviceStatus(r.Status), r.Devices, r.GPUs})
		case grpModel:
			s.ByGPUModel = append(s.ByGPUModel, GpuModelCount{r.GPUModel, r.Devices, r.GPUs})
		case grpRegion:
			s.ByRegion = append(s.ByRegion, RegionCount{r.Region, r.Devices, r.GPUs})
		case grpVerification:
			s.ByVerification = append(s.ByVerification, VerificationCount{VerificationState(r.Verification), r.Devices, r.GPUs})
		case grpLevel:
			byLevel[Level(r.Level)] = &LevelCount{Level: Level(r.Level), Devices: r.Devices, GPUs: r.GPUs - r.Attested}
			attested += r.Attested
		}
	}
	if attested > 0 {
		if byLevel[LevelAttested] == nil {
			byLevel[LevelAttested] = &LevelCount{Level: LevelAttested}
		}
		byLevel[LevelAttested].GPUs += attested
	}
	s.ByLevel = []LevelCount{}
	for _, l := range AllLevels {
		if c := byLevel[l]; c != nil {
			s.ByLevel = append(s.ByLevel, *c)
		}
	}
	return s, nil
}
