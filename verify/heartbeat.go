package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/deviceauth"
)

// MaxHeartbeatGPUs is how many GPU readings one heartbeat may carry.
const MaxHeartbeatGPUs = 64

// Reading is one GPU's reading in a heartbeat (the fields of the GPU reading input); it is
// stored as JSON, so the tags are the stored field names.
type Reading struct {
	UUID               string `json:"uuid"`
	UtilizationPercent *int   `json:"utilizationPercent,omitempty"`
	TemperatureC       *int   `json:"temperatureC,omitempty"`
	MemoryUsedMiB      *int   `json:"memoryUsedMiB,omitempty"`
	PowerWatts         *int   `json:"powerWatts,omitempty"`
}

// Ack is what a heartbeat returns: the device's status and when to send the next one.
type Ack struct {
	Status db.DeviceStatus
	Next   time.Duration
}

// Heartbeat records a heartbeat of the device that signed the request, through the coalescer.
// It returns a db.ErrInvalid error for too many or out-of-range readings, the deviceWrite
// errors, or the store's.
func (s *Service) Heartbeat(ctx context.Context, gpus []Reading) (*Ack, error) {
	if len(gpus) > MaxHeartbeatGPUs {
		return nil, db.Invalidf("gpus: at most %d readings", MaxHeartbeatGPUs)
	}
	for _, g := range gpus {
		if _, err := db.CleanText("gpus.uuid", g.UUID, 96); err != nil {
			return nil, err
		}
		if len(g.UUID) > 96 || !inRange(g.UtilizationPercent, 0, 100) || !inRange(g.TemperatureC, -50, 200) ||
			!inRange(g.MemoryUsedMiB, 0, 1<<24) || !inRange(g.PowerWatts, 0, 100_000) {
			return nil, db.Invalidf("gpus: a reading is out of range (uuid <= 96 bytes, utilization 0..100, temperature -50..200)")
		}
	}
	readings, err := json.Marshal(gpus)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	var st db.DeviceStatus
	err = s.deviceWrite(ctx, "heartbeat", func(ctx context.Context, p deviceauth.Principal) error {
		st, err = s.heartbeats.Record(ctx, p.DeviceID, readings)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Ack{Status: st, Next: s.cfg.HeartbeatEvery}, nil
}

func inRange(v *int, lo, hi int) bool { return v == nil || *v >= lo && *v <= hi }
