-- +goose Up
-- Stateless gateway replicas (docs/scale-out.md, "Stateless replicas").
--
-- 1. The replay window of signed device requests, shared by every replica. A verified request's
--    replay key (attest.Signed.ReplayKey) is inserted under the timestamp it was signed at; a
--    replay carries the same signature, hence the same timestamp and key, and conflicts. Rows
--    live in a ring of 16 partitions of one minute each, chosen by the signed minute modulo 16:
--    a replay lands in the partition of its original. gpugate_retire_replays() empties (TRUNCATE,
--    not DELETE: no dead rows, no vacuum at tens of thousands of inserts a second) the
--    partitions no minute within 5 minutes of the database clock maps to; a signature that old
--    is refused as stale anyway (the freshness window is 60 s). The ring is fixed: no partition
--    is ever created or dropped, so an insert can never miss its partition, the gateway needs no
--    DDL rights, and a replica that never runs the maintenance only lets the table grow (rows of
--    different minutes in one partition never conflict: the timestamp is in the key).
-- 2. Key changes announced to every replica: a trigger notifies gpugate_device_keys with the
--    device ID whenever a key is added, revoked or deleted or its device removed, in the
--    changing transaction, so every replica drops its cached keys of that device.

CREATE FUNCTION gpugate_replay_slot(signed_at timestamptz) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT mod(mod(floor(extract(epoch FROM signed_at) / 60)::bigint, 16) + 16, 16)::smallint $$;

CREATE TABLE device_replays (
    slot      smallint NOT NULL,   -- gpugate_replay_slot(signed_at)
    signed_at timestamptz NOT NULL, -- the signature's timestamp (whole seconds)
    key       bytea NOT NULL,       -- attest.Signed.ReplayKey: 32 bytes
    PRIMARY KEY (signed_at, key, slot)
) PARTITION BY LIST (slot);

-- +goose StatementBegin
DO $do$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF device_replays FOR VALUES IN (%s)',
            'device_replays_' || lpad(i::text, 2, '0'), i);
    END LOOP;
END
$do$;
-- +goose StatementEnd

-- gpugate_retire_replays empties the partitions no minute within 5 minutes of now() maps to and
-- returns how many it emptied (0 when another session is doing it right now). It runs with its
-- owner's rights (the gateway may not TRUNCATE) and decides from the database clock alone, so a
-- compromised gateway cannot empty a live partition through it. Several replicas may call it at
-- once: one takes the transaction-level advisory lock, the others return 0 at once. lock_timeout
-- bounds the wait for a partition's lock (nothing inserts into a retired partition, but a
-- replica with a clock minutes off might); the call then fails and the next one retries.
-- +goose StatementBegin
DO $do$
BEGIN
    EXECUTE format($f$
CREATE FUNCTION gpugate_retire_replays() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = %I, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    live smallint[];
    part text;
    empty boolean;
    n integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('gpugate_retire_replays')) THEN
        RETURN 0;
    END IF;
    -- One instant per minute from now - 5 min to now + 5 min: every minute of that span.
    SELECT array_agg(gpugate_replay_slot(t)) INTO live
    FROM generate_series(now() - interval '5 minutes', now() + interval '5 minutes', interval '1 minute') t;
    FOR i IN 0..15 LOOP
        CONTINUE WHEN i = ANY (live);
        part := 'device_replays_' || lpad(i::text, 2, '0');
        EXECUTE format('SELECT NOT EXISTS (SELECT FROM %%I)', part) INTO STRICT empty;
        CONTINUE WHEN empty;
        EXECUTE format('TRUNCATE %%I', part);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$$f$, current_schema());
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_app') THEN
        -- Migration 9's default privileges gave the app role DML on the new table; it needs only
        -- to insert and read replay keys, and to call the retirement.
        -- The partitions got the same default privileges: the app role writes only through the
        -- parent, so it keeps none on them (else it could DELETE live keys from a partition).
        REVOKE ALL ON device_replays FROM gpugate_app;
        FOR i IN 0..15 LOOP
            EXECUTE format('REVOKE ALL ON %I FROM gpugate_app', 'device_replays_' || lpad(i::text, 2, '0'));
        END LOOP;
        GRANT SELECT, INSERT ON device_replays TO gpugate_app;
    END IF;
    -- Functions are executable by PUBLIC by default: the retirement, which runs with its owner's
    -- rights, is the app role's alone (as gpugate_purge_audit is, migration 00007).
    REVOKE ALL ON FUNCTION gpugate_retire_replays() FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_app') THEN
        GRANT EXECUTE ON FUNCTION gpugate_retire_replays() TO gpugate_app;
    END IF;
END
$do$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION gpugate_notify_device_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'devices' THEN
        PERFORM pg_notify('gpugate_device_keys', NEW.id::text);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('gpugate_device_keys', OLD.device_id::text);
    ELSE
        PERFORM pg_notify('gpugate_device_keys', NEW.device_id::text);
        IF TG_OP = 'UPDATE' AND OLD.device_id <> NEW.device_id THEN
            PERFORM pg_notify('gpugate_device_keys', OLD.device_id::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER device_credentials_notify_keys
AFTER INSERT OR DELETE OR UPDATE OF revoked_at, public_key, device_id ON device_credentials
FOR EACH ROW EXECUTE FUNCTION gpugate_notify_device_keys();

-- A deleted device's keys go with it (ON DELETE CASCADE fires the trigger above).
CREATE TRIGGER devices_notify_keys
AFTER UPDATE OF removed_at ON devices
FOR EACH ROW WHEN (OLD.removed_at IS DISTINCT FROM NEW.removed_at)
EXECUTE FUNCTION gpugate_notify_device_keys();

-- +goose Down
DROP TRIGGER devices_notify_keys ON devices;
DROP TRIGGER device_credentials_notify_keys ON device_credentials;
DROP FUNCTION gpugate_notify_device_keys();
DROP FUNCTION gpugate_retire_replays();
DROP TABLE device_replays;
DROP FUNCTION gpugate_replay_slot(timestamptz);
