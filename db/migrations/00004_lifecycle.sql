-- +goose Up
-- Device lifecycle: removal is soft. A removed device disappears from every public and owner
-- view and its keys stop authenticating, but its GPU claims (gpus rows), attestations,
-- enrollment snapshot and credentials stay: the evidence, and the claims that stop another
-- account from taking the host's GPU identities. See docs/attestation.md, "GPU identities".
ALTER TABLE devices ADD COLUMN removed_at timestamptz;
-- Admins look removed devices up; the public never does.
CREATE INDEX devices_removed ON devices (removed_at) WHERE removed_at IS NOT NULL;

-- Every GPU UUID a device reported that another device held at the time: the conflicts an
-- admin resolves with reassignGpu. A row stays; the conflict is open while the claimant is not
-- removed and another device still holds the UUID.
CREATE TABLE gpu_claim_conflicts (
    uuid               text NOT NULL,
    claimant_device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (claimant_device_id, uuid)
);
CREATE INDEX gpu_claim_conflicts_created ON gpu_claim_conflicts (created_at DESC, uuid);
CREATE INDEX gpu_claim_conflicts_uuid ON gpu_claim_conflicts (uuid);

-- Every move of a GPU claim between devices, and by which rule: the audit trail of who held a
-- GPU identity when.
CREATE TABLE gpu_claim_transfers (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    uuid           text NOT NULL,
    from_device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    to_device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    rule           text NOT NULL CHECK (rule IN ('SAME_OWNER', 'ADMIN')),
    actor          text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gpu_claim_transfers_uuid ON gpu_claim_transfers (uuid, created_at);
CREATE INDEX gpu_claim_transfers_from ON gpu_claim_transfers (from_device_id);
CREATE INDEX gpu_claim_transfers_to ON gpu_claim_transfers (to_device_id);

-- +goose Down
DROP TABLE gpu_claim_transfers;
DROP TABLE gpu_claim_conflicts;
DROP INDEX devices_removed;
-- Down restores hard deletion's view of the world: removed devices go, with what cascades.
DELETE FROM devices WHERE removed_at IS NOT NULL;
ALTER TABLE devices DROP COLUMN removed_at;
