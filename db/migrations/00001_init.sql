-- +goose Up
-- pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- users are never exposed publicly: no public GraphQL type reaches this table.
CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text,
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    status       text NOT NULL DEFAULT 'DOWN' CHECK (status IN ('UP', 'DOWN', 'PAUSED')),
    region       text NOT NULL CHECK (char_length(region) BETWEEN 1 AND 64),
    verification text NOT NULL DEFAULT 'PENDING' CHECK (verification IN ('PENDING', 'VERIFIED', 'FLAGGED')),
    -- the model of the device's GPUs (hosts are homogeneous; a mixed host carries its most
    -- numerous model) and their count, kept here so every filter and order is one index scan.
    gpu_model    text NOT NULL DEFAULT '',
    gpu_count    integer NOT NULL DEFAULT 0 CHECK (gpu_count >= 0),
    last_seen_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gpus (
    device_id          uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    idx                integer NOT NULL CHECK (idx >= 0),
    uuid               text NOT NULL,
    model              text NOT NULL,
    pci_device_id      integer NOT NULL,
    memory_mib         bigint NOT NULL CHECK (memory_mib >= 0),
    architecture       text NOT NULL,
    compute_capability text NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, idx)
);

-- keyset orders: (key, id) in both directions, alone and after each equality filter.
CREATE INDEX devices_created_idx       ON devices (created_at, id);
CREATE INDEX devices_name_idx          ON devices (name, id);
CREATE INDEX devices_status_created    ON devices (status, created_at, id);
CREATE INDEX devices_status_name       ON devices (status, name, id);
CREATE INDEX devices_model_created     ON devices (gpu_model, created_at, id);
CREATE INDEX devices_region_created    ON devices (region, created_at, id);
CREATE INDEX devices_verif_created     ON devices (verification, created_at, id);
CREATE INDEX devices_owner_idx         ON devices (owner_id);
-- search by name: case-insensitive substring.
CREATE INDEX devices_name_trgm         ON devices USING gin (lower(name) gin_trgm_ops);
CREATE INDEX gpus_model_idx            ON gpus (model);

-- +goose Down
DROP TABLE gpus;
DROP TABLE devices;
DROP TABLE users;
