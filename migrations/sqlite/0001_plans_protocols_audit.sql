-- Versioned records: the current version lives in the main table, every version (including the
-- current one) in the *_versions table, so history reads never touch the hot row.
-- Ids are UUIDv7 (time-ordered) stored as 16-byte BLOBs; instants are fixed-width RFC 3339 text
-- (`2026-11-28T17:43:20.123456Z`) so they compare correctly as strings; dates are `YYYY-MM-DD`.
-- Every row carries its tenant and every query filters by it.

CREATE TABLE plans (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,          -- the validated plan as JSON
    review_due  TEXT NOT NULL,          -- next_review_due, for review_due_before lists
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant, subject)            -- one plan per subject per tenant (409)
);
CREATE INDEX plans_by_review_due ON plans (tenant, review_due, id);

CREATE TABLE plan_versions (
    record_id   BLOB NOT NULL REFERENCES plans (id),
    tenant      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    review_due  TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,          -- the token's `sub`
    PRIMARY KEY (record_id, version)
);

CREATE TABLE safety_protocols (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    review_due  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant, subject)
);
CREATE INDEX safety_protocols_by_review_due ON safety_protocols (tenant, review_due, id);

CREATE TABLE safety_protocol_versions (
    record_id   BLOB NOT NULL REFERENCES safety_protocols (id),
    tenant      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    review_due  TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Append-only: the service never updates or deletes audit rows.
CREATE TABLE audit_events (
    id            BLOB PRIMARY KEY NOT NULL,   -- UUIDv7: the list order and the cursor
    tenant        TEXT NOT NULL,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   BLOB,
    subject       TEXT,
    request_id    TEXT NOT NULL,
    outcome       TEXT NOT NULL
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant, id);
CREATE INDEX audit_events_by_subject ON audit_events (tenant, subject, id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
