package cli

import (
	"fmt"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/guard"
)

// limitFlags are the identity write limits and the kill switches' re-read interval
// (docs/operations.md, "Write limits" and "Kill switches").
type limitFlags struct {
	user, target   *string
	distinct       *int
	distinctWindow *time.Duration
	switchReread   *time.Duration
	limits         guard.LimitConfig // set by apply
}

func addLimitFlags(f *envFlags) limitFlags {
	d := guard.DefaultLimits()
	return limitFlags{
		user: f.String("user-write-rate", "GPUGATE_USER_WRITE_RATE", fmt.Sprintf("%d/%s", d.User.Burst, d.User.Every),
			"per user: all owner writes (device metadata, keys, enrollment tokens) as BURST/EVERY, or off"),
		target: f.String("device-write-rate", "GPUGATE_DEVICE_WRITE_RATE", fmt.Sprintf("%d/%s", d.Target.Burst, d.Target.Every),
			"per target device: users' writes on one device, whoever sends them, as BURST/EVERY, or off"),
		distinct: f.Int("distinct-devices-limit", "GPUGATE_DISTINCT_DEVICES_LIMIT", d.Distinct.Burst,
			"per user: different devices written within --distinct-devices-window (0 disables)"),
		distinctWindow: f.Duration("distinct-devices-window", "GPUGATE_DISTINCT_DEVICES_WINDOW", d.DistinctWindow,
			"the window of --distinct-devices-limit (at most 24h)"),
		switchReread: f.Duration("switch-reread", "GPUGATE_SWITCH_REREAD", guard.DefaultSwitchReread,
			"how often the kill switches are re-read besides LISTEN/NOTIFY (in case the listener dropped)"),
	}
}

// apply checks the flags and sets l.limits; it returns the first invalid flag.
func (l *limitFlags) apply() error {
	user, err := parseRate(*l.user)
	if err != nil {
		return fmt.Errorf("--user-write-rate: %w", err)
	}
	target, err := parseRate(*l.target)
	if err != nil {
		return fmt.Errorf("--device-write-rate: %w", err)
	}
	if *l.distinct < 0 {
		return fmt.Errorf("--distinct-devices-limit must not be negative")
	}
	if w := *l.distinctWindow; w <= 0 || w > db.MaxTouchWindow {
		return fmt.Errorf("--distinct-devices-window must be more than 0 and at most %s", db.MaxTouchWindow)
	}
	if *l.switchReread <= 0 {
		return fmt.Errorf("--switch-reread must be positive")
	}
	distinct := guard.Rate{Every: -1}
	if n := *l.distinct; n > 0 {
		distinct = guard.Rate{Burst: n, Every: *l.distinctWindow / time.Duration(n)}
	}
	l.limits = guard.LimitConfig{User: user, Target: target, Distinct: distinct, DistinctWindow: *l.distinctWindow}
	return nil
}
