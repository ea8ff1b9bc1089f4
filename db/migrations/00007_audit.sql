-- +goose Up
-- The durable audit log (docs/operations.md, "Audit log"): one row per mutation attempt and per
-- denial, written in batches by every gateway replica. The gateway needs only INSERT and SELECT
-- here: rows are never updated (a trigger refuses it, whoever asks) and old rows are deleted
-- only through gpugate_purge_audit, which runs with its owner's rights and never deletes a row
-- younger than a day, so a compromised gateway cannot erase recent history.
CREATE TABLE audit_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL,
    principal      text NOT NULL CHECK (length(principal) <= 200),
    operation      text NOT NULL CHECK (length(operation) <= 100),
    target         text CHECK (length(target) <= 200),
    outcome        text NOT NULL CHECK (outcome IN ('SUCCEEDED', 'DENIED', 'FLAGGED', 'FAILED')),
    reason         text CHECK (length(reason) <= 500),
    request_id     text CHECK (length(request_id) <= 64),
    client_address inet,
    user_agent     text CHECK (length(user_agent) <= 256)
);
-- Newest first is (at DESC, id DESC); each filter has its own index with the same order, so a
-- filtered page reads only its rows. The time-only index also serves the purge.
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_principal ON audit_events (principal, at, id);
CREATE INDEX audit_events_target ON audit_events (target, at, id) WHERE target IS NOT NULL;
CREATE INDEX audit_events_operation ON audit_events (operation, at, id);
CREATE INDEX audit_events_outcome ON audit_events (outcome, at, id);

-- +goose StatementBegin
CREATE FUNCTION gpugate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION gpugate_audit_append_only();

-- gpugate_purge_audit(before, max_rows) deletes up to max_rows of the oldest rows older than
-- before (clamped to a day ago) and returns how many it deleted; the purge job calls it until it
-- returns less than max_rows. SECURITY DEFINER with a fixed search_path (the schema the table is
-- created in, then pg_temp last), as PostgreSQL's documentation for such functions advises.
-- +goose StatementBegin
DO $do$
BEGIN
    EXECUTE format($f$
CREATE FUNCTION gpugate_purge_audit(before timestamptz, max_rows integer DEFAULT 10000) RETURNS bigint
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
REVOKE ALL ON FUNCTION gpugate_purge_audit(timestamptz, integer) FROM PUBLIC;

-- +goose Down
DROP FUNCTION gpugate_purge_audit(timestamptz, integer);
DROP TABLE audit_events;
DROP FUNCTION gpugate_audit_append_only();
