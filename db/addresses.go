package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// MaxAddressesPerDevice bounds the source-address history kept per device: a new address
// beyond it replaces the least recently seen one.
const MaxAddressesPerDevice = 32

// ReasonAddressChurn is the review finding recorded when a device's signed requests come from
// unusually many addresses (see AddressChurn). It never changes a verdict nor blocks a request.
const ReasonAddressChurn = "ADDRESS_CHURN"

// AddressChurn defines "unusually often": more than Limit distinct networks within Window. An
// IPv6 address counts by its /64 (privacy addresses rotate inside one), an IPv4 address by
// itself.
type AddressChurn struct {
	Limit  int           // default 6
	Window time.Duration // default 24 h
}

// DefaultAddressChurn returns the churn rule's defaults.
func DefaultAddressChurn() AddressChurn { return AddressChurn{Limit: 6, Window: 24 * time.Hour} }

// WithDefaults fills zero fields from DefaultAddressChurn and keeps Limit below the history
// bound, without which the count could never exceed it.
func (c AddressChurn) WithDefaults() AddressChurn {
	d := DefaultAddressChurn()
	if c.Limit <= 0 {
		c.Limit = d.Limit
	}
	c.Limit = min(c.Limit, MaxAddressesPerDevice-1)
	if c.Window <= 0 {
		c.Window = d.Window
	}
	return c
}

// SourceAddress is one address a device's signed requests came from.
type SourceAddress struct {
	DeviceID    string    `db:"device_id"`
	Address     string    `db:"address"`
	FirstSeenAt time.Time `db:"first_seen_at"`
	LastSeenAt  time.Time `db:"last_seen_at"`
}

// ReviewFinding is a finding for an admin to review that changes no verdict.
type ReviewFinding struct {
	Reason    string    `db:"reason"`
	Detail    string    `db:"detail"`
	CreatedAt time.Time `db:"created_at"`
}

// AddressChurnFinding reports that a device crossed the churn rule.
type AddressChurnFinding struct {
	Distinct int // distinct networks within the window
}

// RecordAddress records that a signed request of the device came from addr (an IP, with or
// without a port), refreshing its last_seen_at. When addr is new for the device it also trims the
// history to MaxAddressesPerDevice and applies the churn rule: it returns a non-nil finding, and
// stores it (at most once per window), when the device crossed it. An unparsable addr is ignored.
// It returns a translated database error on failure.
func (d *DB) RecordAddress(ctx context.Context, deviceID, addr string, churn AddressChurn) (*AddressChurnFinding, error) {
	ip := parseIP(addr)
	if ip == "" {
		return nil, nil
	}
	churn = churn.WithDefaults()
	var out *AddressChurnFinding
	err := d.lossTolerant(ctx, func(tx *sqlx.Tx) error {
		var inserted bool
		// A removed device records nothing (its key may linger in another replica's cache).
		err := tx.GetContext(ctx, &inserted, `INSERT INTO device_addresses (device_id, address)
			SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $1 AND removed_at IS NULL)
			ON CONFLICT (device_id, address) DO UPDATE SET last_seen_at = now()
			RETURNING xmax = 0`, deviceID, ip)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if !inserted {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_addresses WHERE device_id = $1 AND address IN (
			SELECT address FROM device_addresses WHERE device_id = $1
			ORDER BY last_seen_at DESC, address OFFSET $2)`, deviceID, MaxAddressesPerDevice); err != nil {
			return err
		}
		var distinct int
		if err := tx.GetContext(ctx, &distinct, `SELECT count(DISTINCT CASE WHEN family(address) = 6
				THEN network(set_masklen(address, 64)) ELSE network(address) END)
			FROM device_addresses WHERE device_id = $1 AND last_seen_at > now() - make_interval(secs => $2)`,
			deviceID, churn.Window.Seconds()); err != nil {
			return err
		}
		if distinct <= churn.Limit {
			return nil
		}
		out = &AddressChurnFinding{Distinct: distinct}
		_, err = tx.ExecContext(ctx, `INSERT INTO device_review_findings (device_id, reason, detail)
			SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM device_review_findings
				WHERE device_id = $1 AND reason = $2 AND created_at > now() - make_interval(secs => $4))`,
			deviceID, ReasonAddressChurn,
			fmt.Sprintf("signed requests came from %d distinct networks within %s (limit %d)", distinct, churn.Window, churn.Limit),
			churn.Window.Seconds())
		return err
	})
	if err != nil {
		return nil, translate("record address", err)
	}
	return out, nil
}

// parseIP returns the canonical text of the IP in addr ("host:port" or a bare IP), or "".
func parseIP(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return ""
	}
	return ip.String()
}

// AddressesByDevice returns each device's source addresses, most recently seen first.
func (d *DB) AddressesByDevice(ctx context.Context, ids []string) (map[string][]SourceAddress, error) {
	var rows []SourceAddress
	err := sqlx.SelectContext(ctx, d.x, &rows, `SELECT device_id, host(address) AS address, first_seen_at, last_seen_at
		FROM device_addresses WHERE device_id = ANY($1::uuid[]) ORDER BY last_seen_at DESC, address`, pq.Array(ids))
	if err != nil {
		return nil, translate("list addresses", err)
	}
	out := make(map[string][]SourceAddress, len(ids))
	for _, r := range rows {
		out[r.DeviceID] = append(out[r.DeviceID], r)
	}
	return out, nil
}

// DeviceAddressReport is what an admin reviews about a device's source addresses.
type DeviceAddressReport struct {
	DeviceID  string
	Addresses []SourceAddress
	Findings  []ReviewFinding
}

// AddressReport returns the device's source addresses and review findings, newest first. It
// returns ErrNotFound for an unknown device.
func (d *DB) AddressReport(ctx context.Context, deviceID string) (DeviceAddressReport, error) {
	out := DeviceAddressReport{DeviceID: deviceID}
	if _, err := d.DeviceOwner(ctx, deviceID); err != nil {
		return out, err
	}
	m, err := d.AddressesByDevice(ctx, []string{deviceID})
	if err != nil {
		return out, err
	}
	out.Addresses = m[deviceID]
	err = sqlx.SelectContext(ctx, d.x, &out.Findings, `SELECT reason, detail, created_at FROM device_review_findings
		WHERE device_id = $1 ORDER BY created_at DESC LIMIT 100`, deviceID)
	return out, translate("review findings", err)
}
