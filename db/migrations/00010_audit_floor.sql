-- +goose Up
-- The audit log's retention floor, set by the owner role only (docs/operations.md, "Audit log").
-- gpugate_purge_audit runs with its owner's rights and the gateway may call it; without a floor
-- of its own, a compromised gateway could erase every row older than a day. The floor lives in a
-- table the gateway can read but not write, so only whoever holds the owner role can lower it.
CREATE TABLE audit_policy (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    min_retention interval NOT NULL DEFAULT interval '30 days' CHECK (min_retention >= interval '1 day')
);
INSERT INTO audit_policy DEFAULT VALUES;

-- +goose StatementBegin
DO $do$
BEGIN
    -- Migration 9's default privileges give the app role DML on new tables: not on this one.
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gpugate_app') THEN
        REVOKE ALL ON audit_policy FROM gpugate_app;
        GRANT SELECT ON audit_policy TO gpugate_app;
    END IF;
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION gpugate_purge_audit(before timestamptz, max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = %I, pg_temp AS $$
    WITH doomed AS (
        SELECT id FROM audit_events
        WHERE at < least(before, now() - (SELECT min_retention FROM audit_policy))
        ORDER BY at, id LIMIT greatest(1, least(max_rows, 100000))
    ), gone AS (
        DELETE FROM audit_events a USING doomed WHERE a.id = doomed.id RETURNING 1
    )
    SELECT count(*) FROM gone
$$$f$, current_schema());
END
$do$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $do$
BEGIN
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION gpugate_purge_audit(before timestamptz, max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = %I, pg_temp AS $$
    WITH doomed AS (
        SELECT id FROM audit_events
        WHERE at < least(before, now() - interval '1 day')
        ORDER BY at, id LIMIT greatest(1, least(max_rows, 100000))
    ), gone AS (
        DELETE FROM audit_events a USING doomed WHERE a.id = doomed.id RETURNING 1
    )
    SELECT count(*) FROM gone
$$$f$, current_schema());
END
$do$;
-- +goose StatementEnd
DROP TABLE audit_policy;
