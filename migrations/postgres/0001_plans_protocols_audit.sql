-- Versioned records: the current version lives in the main table, every version (including the
-- current one) in the *_versions table, so history reads never touch the hot row.
-- Ids are UUIDv7 (time-ordered). Every row carries its tenant and every query filters by it.

CREATE TABLE plans (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    subject     text NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,         -- the validated plan
    review_due  date NOT NULL,          -- next_review_due, for review_due_before lists
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (tenant, subject)            -- one plan per subject per tenant (409)
);
CREATE INDEX plans_by_review_due ON plans (tenant, review_due, id);

CREATE TABLE plan_versions (
    record_id   uuid NOT NULL REFERENCES plans (id),
    tenant      text NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,
    review_due  date NOT NULL,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL,          -- the token's `sub`
    PRIMARY KEY (record_id, version)
);

CREATE TABLE safety_protocols (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    subject     text NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,
    review_due  date NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (tenant, subject)
);
CREATE INDEX safety_protocols_by_review_due ON safety_protocols (tenant, review_due, id);

CREATE TABLE safety_protocol_versions (
    record_id   uuid NOT NULL REFERENCES safety_protocols (id),
    tenant      text NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,
    review_due  date NOT NULL,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Append-only: the service never updates or deletes audit rows.
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,     -- UUIDv7: the list order and the cursor
    tenant        text NOT NULL,
    at            timestamptz NOT NULL,
    actor         text NOT NULL,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   uuid,
    subject       text,
    request_id    text NOT NULL,
    outcome       text NOT NULL
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant, id);
CREATE INDEX audit_events_by_subject ON audit_events (tenant, subject, id);
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
