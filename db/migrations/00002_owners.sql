-- +goose Up
-- Owners: OIDC identities linked to users, legacy account ids, private device fields, and the
-- credential/attestation tables the worker protocol fills.
ALTER TABLE users ADD COLUMN legacy_id text UNIQUE;
CREATE INDEX users_email_lower ON users (lower(email));

-- One row per (issuer, subject): several identity providers may point at one user.
CREATE TABLE user_identities (
    issuer       text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 512),
    subject      text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email        text,
    linked_by    text NOT NULL CHECK (linked_by IN ('login', 'email', 'mapping', 'dev')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

ALTER TABLE devices
    ADD COLUMN hostname          text NOT NULL DEFAULT '',
    ADD COLUMN ip_address        inet,
    ADD COLUMN labels            text[] NOT NULL DEFAULT '{}',
    ADD COLUMN enrolled_at       timestamptz,
    ADD COLUMN paused            boolean NOT NULL DEFAULT false,
    ADD COLUMN quarantined_at    timestamptz,
    ADD COLUMN quarantine_reason text NOT NULL DEFAULT '';
ALTER TABLE devices DROP CONSTRAINT devices_status_check;
ALTER TABLE devices ADD CONSTRAINT devices_status_check
    CHECK (status IN ('UP', 'DOWN', 'PAUSED', 'QUARANTINED'));
UPDATE devices SET paused = true WHERE status = 'PAUSED';
UPDATE devices SET enrolled_at = created_at;

-- Per-device public keys (the worker's Ed25519 key); only public material is stored.
CREATE TABLE device_credentials (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_id    uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    public_key   bytea NOT NULL,
    fingerprint  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX device_credentials_device ON device_credentials (device_id);

-- The verdict of each proof a device submitted.
CREATE TABLE attestations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    verdict     text NOT NULL CHECK (verdict IN ('PASSED', 'FLAGGED')),
    reasons     text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attestations_device_created ON attestations (device_id, created_at DESC);

-- +goose Down
DROP TABLE attestations;
DROP TABLE device_credentials;
ALTER TABLE devices DROP CONSTRAINT devices_status_check;
UPDATE devices SET status = 'DOWN' WHERE status = 'QUARANTINED';
ALTER TABLE devices ADD CONSTRAINT devices_status_check CHECK (status IN ('UP', 'DOWN', 'PAUSED'));
ALTER TABLE devices DROP COLUMN hostname, DROP COLUMN ip_address, DROP COLUMN labels,
    DROP COLUMN enrolled_at, DROP COLUMN paused, DROP COLUMN quarantined_at, DROP COLUMN quarantine_reason;
DROP TABLE user_identities;
DROP INDEX users_email_lower;
ALTER TABLE users DROP COLUMN legacy_id;
