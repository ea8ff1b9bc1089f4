-- +goose Up
-- Verification levels (docs/attestation.md, "Verification levels"). A device's level, and each
-- GPU's own, replace the three-valued verification state: VERIFIED splits into SELF_REPORTED
-- (consistent report and valid work) and ATTESTED (every GPU's confidential-computing evidence
-- verified). The old column stays, kept consistent by every writer, for the deprecated API.
ALTER TABLE devices
    ADD COLUMN verification_level text NOT NULL DEFAULT 'PENDING'
        CHECK (verification_level IN ('PENDING', 'SELF_REPORTED', 'ATTESTED', 'FLAGGED')),
    -- How many of the device's GPUs are ATTESTED (its latest passing proof): networkStats counts
    -- GPUs by their own level from this one scan of devices, never from gpus.
    ADD COLUMN attested_gpus integer NOT NULL DEFAULT 0 CHECK (attested_gpus >= 0);
-- Existing rows: a device whose latest proof passed showed VERIFIED, which is SELF_REPORTED (no
-- hardware evidence was ever checked before this version).
UPDATE devices SET verification_level = CASE verification WHEN 'VERIFIED' THEN 'SELF_REPORTED' ELSE verification END
WHERE verification <> 'PENDING';
-- Strength rank for ordering (FLAGGED < PENDING < SELF_REPORTED < ATTESTED) and for the level
-- filter: one keyset index serves the order, the filter and both together.
ALTER TABLE devices ADD COLUMN verification_rank smallint GENERATED ALWAYS AS (
    CASE verification_level WHEN 'FLAGGED' THEN 0 WHEN 'PENDING' THEN 1 WHEN 'SELF_REPORTED' THEN 2 ELSE 3 END) STORED;
CREATE INDEX devices_level_created ON devices (verification_rank, created_at, id);

ALTER TABLE gpus ADD COLUMN verification_level text NOT NULL DEFAULT 'PENDING'
    CHECK (verification_level IN ('PENDING', 'SELF_REPORTED', 'ATTESTED', 'FLAGGED'));
-- GPUs follow their device (none is ATTESTED yet).
UPDATE gpus g SET verification_level = d.verification_level
FROM devices d WHERE d.id = g.device_id AND d.verification_level <> 'PENDING';

-- The level each proof gave, and how each GPU was judged in it (facts only, never the raw
-- evidence: index, uuid, level, reasons, root, what was checked, versions, certificate serials).
ALTER TABLE attestations
    ADD COLUMN level text CHECK (level IN ('PENDING', 'SELF_REPORTED', 'ATTESTED', 'FLAGGED')),
    ADD COLUMN gpu_evidence jsonb;
-- Earlier verdicts: a passed proof was SELF_REPORTED (nothing else existed). A row written
-- without a level reads the same way (Attestation.Level).
UPDATE attestations SET level = CASE verdict WHEN 'PASSED' THEN 'SELF_REPORTED' ELSE 'FLAGGED' END;

-- Hardware identities (the stable per-GPU identity of a verified certificate chain) and the GPU
-- UUID each first attested as. One real GPU must not vouch for another UUID (CC_HARDWARE_REUSED)
-- and a UUID must not come back with other hardware (CC_HARDWARE_CHANGED). The binding names the
-- UUID, not the device: which device holds a UUID is the GPU claim's business (gpus), so a claim
-- moved by its rules takes its hardware along.
CREATE TABLE gpu_hardware (
    hardware_id       text PRIMARY KEY CHECK (char_length(hardware_id) BETWEEN 1 AND 256),
    gpu_uuid          text NOT NULL,
    first_device_id   uuid REFERENCES devices (id) ON DELETE SET NULL,
    first_attested_at timestamptz NOT NULL DEFAULT now(),
    last_attested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gpu_hardware_uuid ON gpu_hardware (gpu_uuid);

-- +goose Down
DROP TABLE gpu_hardware;
ALTER TABLE attestations DROP COLUMN gpu_evidence, DROP COLUMN level;
ALTER TABLE gpus DROP COLUMN verification_level;
DROP INDEX devices_level_created;
ALTER TABLE devices DROP COLUMN verification_rank, DROP COLUMN attested_gpus, DROP COLUMN verification_level;
