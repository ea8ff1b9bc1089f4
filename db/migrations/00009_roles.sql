-- +goose Up
-- Least-privilege database roles (docs/postgresql.md, "Database roles"):
--   the role running this migration owns every table (gpugate_owner in zero-config mode);
--   gpugate_app, the gateway, reads and writes rows but may only INSERT and SELECT audit rows;
--   gpugate_explorer, anonymous reads, may read only the views of schema explorer, which have the
--   names and columns of the public tables those reads use, with the owner-only columns replaced
--   by constants. Its connections put explorer first in search_path, so the gateway's SQL runs
--   unchanged on either pool; a read of the tables themselves is refused.
-- Everything here works whether or not the roles exist and whether or not the migrating role may
-- create roles: a role that is absent and cannot be created is skipped with a NOTICE, and the
-- operator runs the SQL of docs/postgresql.md after creating it.

-- +goose StatementBegin
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['gpugate_app', 'gpugate_explorer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                -- NOLOGIN: an operator gives it a password and LOGIN, or grants it to a login role.
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'gpugate: role % does not exist and this role may not create it; see docs/postgresql.md, "Database roles"', r;
            END;
        END IF;
    END LOOP;
END
$roles$;
-- +goose StatementEnd

-- IF NOT EXISTS: a schema public dropped and migrated again leaves it behind, empty.
CREATE SCHEMA IF NOT EXISTS explorer;
COMMENT ON SCHEMA explorer IS 'gpugate: the public columns of the tables anonymous reads use (docs/postgresql.md)';

-- Public columns as they are; owner-only ones as constants. A NULL where the gateway scans into a
-- Go type that holds one, otherwise the type's empty value (the nil UUID, '', false): a NULL there
-- would fail every row. updated_at is not public (owners' edits): it reads as created_at. Removed
-- devices are not here at all.
CREATE OR REPLACE VIEW explorer.devices AS
SELECT id,
       '00000000-0000-0000-0000-000000000000'::uuid AS owner_id,
       name, status, region, verification, gpu_model, gpu_count, last_seen_at, created_at,
       created_at AS updated_at,
       ''::text AS hostname,
       NULL::inet AS ip_address,
       NULL::text[] AS labels,
       NULL::timestamptz AS enrolled_at,
       false AS paused,
       NULL::timestamptz AS quarantined_at,
       ''::text AS quarantine_reason,
       NULL::jsonb AS enrollment_snapshot,
       NULL::jsonb AS heartbeat,
       NULL::timestamptz AS removed_at,
       verification_level, attested_gpus, verification_rank
FROM devices
WHERE removed_at IS NULL;

-- The board serial is not public. No filter on removed devices: the GPUs are read only by the
-- IDs of listed devices, and a join to devices here made the planner hash all of devices for a
-- page of GPUs (56 ms instead of 15 ms at 20,000 devices).
CREATE OR REPLACE VIEW explorer.gpus AS
SELECT device_id, idx, uuid, model, pci_device_id, memory_mib, architecture, compute_capability,
       NULL::text AS serial,
       verification_level
FROM gpus;

-- The grants, for each role that exists. Dynamic SQL: the roles may be missing, and the tables
-- live in the migrating role's current schema (public unless the operator chose another).
-- +goose StatementBegin
DO $grants$
DECLARE
    s text := current_schema();
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_app') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO gpugate_app', s);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO gpugate_app', s);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO gpugate_app', s);
        -- Every table a later migration creates (as this role) gets the same, automatically.
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gpugate_app', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO gpugate_app', s);
        -- The gateway only reads which migrations ran (/readyz); the owner records them.
        IF to_regclass(format('%I.goose_db_version', s)) IS NOT NULL THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I.goose_db_version FROM gpugate_app', s);
        END IF;
        -- Audit rows are append-only for the gateway: INSERT, and SELECT for auditEvents; old rows
        -- go only through gpugate_purge_audit, which runs with its owner's rights.
        IF to_regclass(format('%I.audit_events', s)) IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON %I.audit_events FROM gpugate_app', s);
            EXECUTE format('GRANT SELECT, INSERT ON %I.audit_events TO gpugate_app', s);
        END IF;
        IF to_regprocedure(format('%I.gpugate_purge_audit(timestamptz, integer)', s)) IS NOT NULL THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %I.gpugate_purge_audit(timestamptz, integer) TO gpugate_app', s);
        END IF;
        -- Anonymous reads on the app role's own connections (no explorer role configured) go
        -- through the same views.
        GRANT USAGE ON SCHEMA explorer TO gpugate_app;
        GRANT SELECT ON ALL TABLES IN SCHEMA explorer TO gpugate_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA explorer GRANT SELECT ON TABLES TO gpugate_app;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_explorer') THEN
        -- Nothing on the tables themselves, whatever was granted before.
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM gpugate_explorer', s);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM gpugate_explorer', s);
        GRANT USAGE ON SCHEMA explorer TO gpugate_explorer;
        GRANT SELECT ON ALL TABLES IN SCHEMA explorer TO gpugate_explorer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA explorer GRANT SELECT ON TABLES TO gpugate_explorer;
        -- The explorer's sessions resolve names in its views first, also in psql. The gateway
        -- sets search_path on its connections anyway; this needs CREATEROLE (or more) and is
        -- skipped without.
        BEGIN
            EXECUTE format('ALTER ROLE gpugate_explorer IN DATABASE %I SET search_path = explorer', current_database());
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'gpugate: may not set the search_path of gpugate_explorer; the gateway sets it per connection';
        END;
    END IF;
END
$grants$;
-- +goose StatementEnd

-- +goose Down
-- The roles stay (other databases of the cluster may use them); their privileges here go.
-- +goose StatementBegin
DO $down$
DECLARE
    s text := current_schema();
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_app') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM gpugate_app', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES FROM gpugate_app', s);
        ALTER DEFAULT PRIVILEGES IN SCHEMA explorer REVOKE ALL ON TABLES FROM gpugate_app;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_explorer') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA explorer REVOKE ALL ON TABLES FROM gpugate_explorer;
    END IF;
END
$down$;
-- +goose StatementEnd
DROP SCHEMA explorer CASCADE;
