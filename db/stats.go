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
// which set a row belongs to (0 = grand total). Removed devices count nowhere.
const statsQuery = `SELECT
	GROUPING(status, gpu_model, region, verification) AS grp,
	COALESCE(status, '') AS status, COALESCE(gpu_model, '') AS gpu_model,
	COALESCE(region, '') AS region, COALESCE(verification, '') AS verification,
	count(*) AS devices, COALESCE(sum(gpu_count), 0) AS gpus
	FROM devices WHERE removed_at IS NULL
	GROUP BY GROUPING SETS ((), (status), (gpu_model), (region), (verification))
	ORDER BY grp, devices DESC, status, gpu_model, region, verification`

// Grouping bitmasks: bit 3 is status ... bit 0 is verification; a set bit means "not grouped".
const (
	grpTotal        = 0b1111
	grpStatus       = 0b0111
	grpModel        = 0b1011
	grpRegion       = 0b1101
	grpVerification = 0b1110
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
		Devices      int    `db:"devices"`
		GPUs         int    `db:"gpus"`
	}
	if err := sqlx.SelectContext(ctx, d.x, &rows, statsQuery); err != nil {
		return NetworkStats{}, translate("network stats", err)
	}
	s := NetworkStats{
		ByStatus: []StatusCount{}, ByGPUModel: []GpuModelCount{}, ByRegion: []RegionCount{},
		ByVerification: []VerificationCount{}, ComputedAt: time.Now().UTC(),
	}
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
		}
	}
	return s, nil
}
