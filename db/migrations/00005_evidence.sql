-- +goose Up
-- Evidence limits and retention (docs/security.md, "Evidence"): a hash of every proof submission
-- so a retried proof returns its original verdict, the indexes the purge job scans, and the
-- source addresses of each device's signed requests (owner-only; admins review churn).
ALTER TABLE attestations ADD COLUMN proof_hash bytea;
-- A retried submission is matched to its first verdict by challenge and hash.
CREATE INDEX attestations_challenge ON attestations (challenge_id, device_id) WHERE challenge_id IS NOT NULL;
-- The retention purge scans old rows by age.
CREATE INDEX attestations_created ON attestations (created_at);
CREATE INDEX enrollment_tokens_expires ON enrollment_tokens (expires_at);

-- Source addresses of signed worker requests, bounded per device by the writer and by age by
-- the purge job.
CREATE TABLE device_addresses (
    device_id     uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    address       inet NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, address)
);
CREATE INDEX device_addresses_last_seen ON device_addresses (last_seen_at);

-- Findings for an admin to review that do not change a verdict (ADDRESS_CHURN).
CREATE TABLE device_review_findings (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_id  uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    reason     text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_review_findings_device ON device_review_findings (device_id, created_at DESC);

-- +goose Down
DROP TABLE device_review_findings;
DROP TABLE device_addresses;
DROP INDEX enrollment_tokens_expires;
DROP INDEX attestations_created;
DROP INDEX attestations_challenge;
ALTER TABLE attestations DROP COLUMN proof_hash;
