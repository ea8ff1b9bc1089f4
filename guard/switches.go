package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/gpugate/gpugate/db"
)

// The kill switches (docs/operations.md, "Kill switches"): one per write class, stored in
// PostgreSQL (write_switches). Every replica keeps the switches in memory, so checking one
// costs no query; it learns a change through LISTEN/NOTIFY (the change and its NOTIFY commit
// together) within a second, and re-reads them every few seconds and after every reconnect in
// case a notification was lost.

// ErrDisabled is matched (errors.Is) by the error of a write refused because an operator
// disabled its class.
var ErrDisabled = errors.New("writes disabled")

// DisabledError refuses a write whose class is switched off; its message, shown to the
// client, carries the operator's reason.
type DisabledError struct {
	Class  Class
	Reason string
}

func (e *DisabledError) Error() string {
	return fmt.Sprintf("%s writes are disabled by an operator: %s", e.Class, e.Reason)
}

// Unwrap lets errors.Is match ErrDisabled.
func (e *DisabledError) Unwrap() error { return ErrDisabled }

// DefaultSwitchReread is how often the switches are re-read when the listener may have missed a
// notification (and, without Run, how old the in-memory copy may get).
const DefaultSwitchReread = 5 * time.Second

// Switches is one replica's view of the kill switches. It is safe for concurrent use.
type Switches struct {
	store  *db.DB
	log    *slog.Logger
	reread time.Duration

	state   atomic.Pointer[switchState]
	mu      sync.Mutex // serializes reloads and sets, so an older read never replaces a newer
	loading atomic.Bool
	running atomic.Bool
}

type switchState struct {
	byClass map[Class]db.SwitchRow
	at      time.Time
}

// NewSwitches returns the switches stored in store; reread <= 0 means DefaultSwitchReread.
// Without Run, a check re-reads them in the background once they are older than reread.
func NewSwitches(store *db.DB, log *slog.Logger, reread time.Duration) *Switches {
	if log == nil {
		log = slog.Default()
	}
	if reread <= 0 {
		reread = DefaultSwitchReread
	}
	return &Switches{store: store, log: log, reread: reread}
}

// Check returns nil when writes of class may go (or class is none), or a *DisabledError. It
// reads no database except before the first successful read (at most 2 s; a failing database
// lets the write through, which then meets the same database).
func (s *Switches) Check(ctx context.Context, class Class) error {
	if s == nil || class == "" {
		return nil
	}
	st := s.state.Load()
	if st == nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.Reload(rctx)
		cancel()
		if err != nil {
			s.log.WarnContext(ctx, "reading the kill switches", "err", err)
			return nil
		}
		st = s.state.Load()
	} else if !s.running.Load() && time.Since(st.at) > s.reread && s.loading.CompareAndSwap(false, true) {
		// #nosec G118 -- the re-read is shared by every caller and must finish even when the
		// request that started it ends: its own 5-second timeout bounds it
		go func() {
			defer s.loading.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Reload(ctx); err != nil {
				s.log.Warn("re-reading the kill switches", "err", err)
			}
		}()
	}
	if sw, ok := st.byClass[class]; ok && !sw.Enabled {
		return &DisabledError{Class: class, Reason: sw.Reason}
	}
	return nil
}

// Reload reads the switches from the database; it returns the store's error (the switches in
// memory stay as they were).
func (s *Switches) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rows, err := s.store.WriteSwitches(ctx)
	if err != nil {
		return err
	}
	m := make(map[Class]db.SwitchRow, len(rows))
	for _, r := range rows {
		m[Class(r.Class)] = r
	}
	s.state.Store(&switchState{byClass: m, at: time.Now()})
	return nil
}

// Disable switches writes of class off on every replica, recording reason (1..200 characters)
// and by (who: "user:<id>", "cli:<os user>", "alert:<rule>"). It returns a db.ErrInvalid error
// for an unknown class or a bad reason, or the store's error.
func (s *Switches) Disable(ctx context.Context, class Class, reason, by string) error {
	_, err := s.Set(ctx, class, false, reason, by)
	return err
}

// Enable switches writes of class back on everywhere; errors as Disable.
func (s *Switches) Enable(ctx context.Context, class Class, by string) error {
	_, err := s.Set(ctx, class, true, "", by)
	return err
}

// Set stores the switch of class and applies it on this replica at once; the others learn it
// through the notification. It returns the stored switch, a db.ErrInvalid error for an unknown
// class or (disabling) a reason that is not 1..200 characters, or the store's error.
func (s *Switches) Set(ctx context.Context, class Class, enabled bool, reason, by string) (db.SwitchRow, error) {
	if !slices.Contains(Classes(), class) {
		return db.SwitchRow{}, db.Invalidf("unknown write class %q", class)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sw, err := s.store.SetWriteSwitch(ctx, string(class), enabled, reason, by)
	if err != nil {
		return db.SwitchRow{}, err
	}
	m := map[Class]db.SwitchRow{}
	if st := s.state.Load(); st != nil {
		for k, v := range st.byClass {
			m[k] = v
		}
	}
	m[class] = sw
	s.state.Store(&switchState{byClass: m, at: time.Now()})
	s.log.LogAttrs(ctx, slog.LevelWarn, "kill switch changed", slog.String("class", string(class)),
		slog.Bool("enabled", enabled), slog.String("reason", sw.Reason), slog.String("by", sw.ChangedBy))
	return sw, nil
}

// List reads the switches from the database (refreshing this replica's copy) and returns one
// per class, in the schema's order; a class never switched is enabled with a zero ChangedAt.
// It returns the store's error.
func (s *Switches) List(ctx context.Context) ([]db.SwitchRow, error) {
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	st := s.state.Load()
	out := make([]db.SwitchRow, 0, len(Classes()))
	for _, c := range Classes() {
		sw, ok := st.byClass[c]
		if !ok {
			sw = db.SwitchRow{Class: string(c), Enabled: true}
		}
		out = append(out, sw)
	}
	return out, nil
}

// Run keeps the switches current until ctx ends: it LISTENs on db.SwitchChannel through a
// lib/pq listener on dsn (reconnecting by itself), re-reads the switches on every notification
// and every (re)connection, and every reread in case the listener is down. It returns when ctx
// ends.
func (s *Switches) Run(ctx context.Context, dsn string) {
	s.running.Store(true)
	defer s.running.Store(false)
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	l := pq.NewListener(dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnected, pq.ListenerEventReconnected:
			poke()
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			s.log.Warn("kill switch listener disconnected; re-reading the switches every "+s.reread.String(), "err", err)
		}
	})
	defer l.Close()
	go func() { // blocks until the first connection; Close ends it
		if err := l.Listen(db.SwitchChannel); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) && ctx.Err() == nil {
			s.log.Warn("kill switch listener", "err", err)
		}
	}()
	tick := time.NewTicker(s.reread)
	defer tick.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.Notify: // a change, or nil after a reconnection: either way, read them
		case <-wake:
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.Reload(rctx); err != nil && ctx.Err() == nil {
			s.log.Warn("re-reading the kill switches", "err", err)
		}
		cancel()
	}
}

// Disabled returns the classes whose writes are refused now, as this replica last read them
// (nothing before the first read). It reads no database, so a metrics scrape may call it.
func (s *Switches) Disabled() []Class {
	if s == nil {
		return nil
	}
	st := s.state.Load()
	if st == nil {
		return nil
	}
	var out []Class
	for _, c := range Classes() {
		if sw, ok := st.byClass[c]; ok && !sw.Enabled {
			out = append(out, c)
		}
	}
	return out
}
