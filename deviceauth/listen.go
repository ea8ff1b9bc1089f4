package deviceauth

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/lib/pq"
)

// Listen keeps this replica's key cache in step with every other replica until ctx ends: it
// LISTENs on channel (db.DeviceKeysChannel: the database announces there, with the device ID,
// every key added, revoked or deleted and every device removed, in the changing transaction)
// through a lib/pq listener on dsn, which reconnects by itself, and drops the device's cached
// keys on each notification. On every (re)connection it flushes the whole cache, since
// notifications sent while it was away are lost. dsn needs a session of its own: a direct
// connection, not a transaction-mode pooler. It returns when ctx ends.
//
// The cache only decides which keys a signature is checked against: with a shared Replays store
// a revoked key is refused by the database on the next request whatever the cache holds, so
// the listener makes new keys work everywhere at once and stops checking signatures against
// dead keys.
func (a *Authenticator) Listen(ctx context.Context, dsn, channel string, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	l := pq.NewListener(dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnected, pq.ListenerEventReconnected:
			a.Flush()
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			log.Warn("device key listener disconnected; new keys reach this replica within the key cache's lifetime", "err", err)
		}
	})
	defer l.Close()
	go func() { // blocks until the first connection; Close ends it
		err := l.Listen(channel)
		if err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) && ctx.Err() == nil {
			log.Warn("device key listener", "err", err)
			return
		}
		a.Flush() // what changed between connecting and listening
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-l.Notify:
			if n == nil { // a reconnection: the event callback flushed
				continue
			}
			a.Revoke(n.Extra)
		}
	}
}
