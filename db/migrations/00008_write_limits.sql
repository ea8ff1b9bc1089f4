-- +goose Up
-- Write limits keyed on identity and the kill switches (docs/operations.md, "Write limits" and
-- "Kill switches"). Both live in PostgreSQL so that every gateway replica shares them.

-- One GCRA bucket per limit key (an identity, a target device, an operation of a device): tat is
-- the bucket's theoretical arrival time. A request at t conforms when max(tat, t) - t is at most
-- (burst - 1) * every; it then moves tat to max(tat, t) + every. A row whose tat has passed is a
-- full bucket, the same as no row, so the purge job deletes those.
CREATE TABLE write_limits (
    key text PRIMARY KEY,
    tat timestamptz NOT NULL
);
CREATE INDEX write_limits_tat ON write_limits (tat);

-- The devices each identity wrote lately: a write to a device not touched within the window
-- takes a token from the identity's distinct-devices bucket.
CREATE TABLE write_touches (
    actor  text NOT NULL,
    target text NOT NULL,
    at     timestamptz NOT NULL,
    PRIMARY KEY (actor, target)
);
CREATE INDEX write_touches_at ON write_touches (at);

-- take_write_tokens takes one token from each bucket keys[i] (rate: one per every[i] seconds, a
-- burst of burst[i]) at at_now, all or none: when any bucket refuses, nothing changes and the
-- function returns that bucket's index (1-based) and the seconds until it would conform. With
-- touch_actor set, a write to touch_target that touch_actor did not touch within
-- touch_window seconds also takes a token from the bucket distinct_key (distinct_every,
-- distinct_burst); its refusal returns index 0. It returns (NULL, 0) when the write may go.
-- Rows are locked touch first, then buckets in key order, so concurrent callers cannot deadlock.
-- +goose StatementBegin
CREATE FUNCTION take_write_tokens(keys text[], every double precision[], burst int[], at_now timestamptz,
    touch_actor text, touch_target text, touch_window double precision,
    distinct_key text, distinct_every double precision, distinct_burst int,
    OUT refused int, OUT retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
    last_touch timestamptz;
    new_touch boolean := false;
    k text[] := keys;
    e double precision[] := every;
    b int[] := burst;
    idx int[];
    i int;
    t timestamptz;
    tats timestamptz[];
BEGIN
    refused := NULL;
    retry_after := 0;
    IF touch_actor IS NOT NULL THEN
        SELECT w.at INTO last_touch FROM write_touches w
         WHERE w.actor = touch_actor AND w.target = touch_target FOR UPDATE;
        new_touch := last_touch IS NULL OR last_touch <= at_now - make_interval(secs => touch_window);
        IF new_touch THEN
            k := k || distinct_key;
            e := e || distinct_every;
            b := b || distinct_burst;
        END IF;
    END IF;
    IF coalesce(array_length(k, 1), 0) > 0 THEN
        tats := array_fill(NULL::timestamptz, ARRAY[array_length(k, 1)]);
        -- A missing bucket is a full one: create it at at_now, then lock every bucket in key order.
        INSERT INTO write_limits (key, tat) SELECT x, at_now FROM unnest(k) AS x ORDER BY x ON CONFLICT (key) DO NOTHING;
        SELECT array_agg(o.n ORDER BY o.key) INTO idx FROM unnest(k) WITH ORDINALITY AS o(key, n);
        FOREACH i IN ARRAY idx LOOP
            SELECT greatest(l.tat, at_now) INTO t FROM write_limits l WHERE l.key = k[i] FOR UPDATE;
            IF t - at_now > make_interval(secs => e[i] * (b[i] - 1)) THEN
                refused := CASE WHEN i > coalesce(array_length(keys, 1), 0) THEN 0 ELSE i END;
                retry_after := extract(epoch FROM (t - at_now)) - e[i] * (b[i] - 1);
                RETURN;
            END IF;
            tats[i] := t + make_interval(secs => e[i]);
        END LOOP;
        FOREACH i IN ARRAY idx LOOP
            UPDATE write_limits SET tat = tats[i] WHERE key = k[i];
        END LOOP;
    END IF;
    IF new_touch THEN
        INSERT INTO write_touches (actor, target, at) VALUES (touch_actor, touch_target, at_now)
        ON CONFLICT (actor, target) DO UPDATE SET at = excluded.at;
    END IF;
END
$$;
-- +goose StatementEnd

-- The kill switches, one row per write class that was ever switched (a class without a row is
-- enabled). A change is announced on the channel gpugate_write_switches in its transaction.
CREATE TABLE write_switches (
    class      text PRIMARY KEY CHECK (class ~ '^[A-Z_]{1,40}$'),
    enabled    boolean NOT NULL,
    reason     text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE write_switches;
DROP FUNCTION take_write_tokens(text[], double precision[], int[], timestamptz, text, text, double precision, text, double precision, int);
DROP TABLE write_touches;
DROP TABLE write_limits;
