-- +goose Up
-- Workers: one-time enrollment tokens (hash only), proof-of-work challenges, the snapshot each
-- device enrolled with, heartbeats.
CREATE TABLE enrollment_tokens (
    token_hash bytea PRIMARY KEY,
    owner_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    device_id  uuid REFERENCES devices (id) ON DELETE SET NULL
);
CREATE INDEX enrollment_tokens_owner ON enrollment_tokens (owner_id);

CREATE TABLE challenges (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    nonce       bytea NOT NULL,
    difficulty  integer NOT NULL CHECK (difficulty BETWEEN 0 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz
);
CREATE INDEX challenges_device ON challenges (device_id);
CREATE INDEX challenges_expires ON challenges (expires_at);

ALTER TABLE devices
    ADD COLUMN enrollment_snapshot jsonb,
    ADD COLUMN heartbeat jsonb;
-- Heartbeats rewrite last_seen_at and heartbeat only: leave room for HOT updates.
ALTER TABLE devices SET (fillfactor = 85);
-- The down-marking job scans only devices that show UP.
CREATE INDEX devices_up_last_seen ON devices (last_seen_at) WHERE status = 'UP';

-- A GPU identity belongs to the device that enrolled it first.
ALTER TABLE gpus ADD COLUMN serial text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX gpus_uuid_unique ON gpus (uuid);
CREATE INDEX gpus_serial ON gpus (serial) WHERE serial <> '';

ALTER TABLE attestations
    ADD COLUMN challenge_id uuid,
    ADD COLUMN snapshot jsonb,
    ADD COLUMN cc_report jsonb;

-- +goose Down
ALTER TABLE attestations DROP COLUMN challenge_id, DROP COLUMN snapshot, DROP COLUMN cc_report;
DROP INDEX gpus_serial;
DROP INDEX gpus_uuid_unique;
ALTER TABLE gpus DROP COLUMN serial;
DROP INDEX devices_up_last_seen;
ALTER TABLE devices RESET (fillfactor);
ALTER TABLE devices DROP COLUMN enrollment_snapshot, DROP COLUMN heartbeat;
DROP TABLE challenges;
DROP TABLE enrollment_tokens;
