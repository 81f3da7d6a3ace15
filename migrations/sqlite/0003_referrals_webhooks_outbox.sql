-- Face-to-face fallback referrals (F2F-1), versioned like plans. `status` and `due_by` are
-- columns so lists and the overdue sweeper filter in SQL; `overdue_emitted` makes the
-- `referral.overdue` event fire once however many instances sweep.
CREATE TABLE referrals (
    id              BLOB PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    due_by          TEXT NOT NULL,
    overdue_emitted BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX referrals_by_tenant ON referrals (tenant, id);
CREATE INDEX referrals_by_subject ON referrals (tenant, subject, id);
CREATE INDEX referrals_open_by_due ON referrals (status, due_by);

CREATE TABLE referral_versions (
    record_id   BLOB NOT NULL REFERENCES referrals (id),
    tenant      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Idempotency-Key: the primary key makes concurrent retries with one key create one thing;
-- the stored response is replayed. Rows older than 48 h are swept.
CREATE TABLE idempotency_keys (
    tenant       TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, endpoint, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Plans: the review date a `plan.review_due` event was last sent for.
ALTER TABLE plans ADD COLUMN review_notified_for TEXT;

CREATE TABLE webhooks (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,          -- ',referral.created,plan.review_due,' for LIKE matching
    secret      TEXT NOT NULL,          -- needed to sign; shown to the client once
    description TEXT,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    deleted_at  TEXT                    -- soft delete keeps delivery history readable
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant, id);

-- Transactional outbox: written in the same transaction as the change that caused it.
CREATE TABLE outbox_events (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    type        TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);

-- One row per (event, subscribed webhook), fanned out in the same transaction.
CREATE TABLE webhook_deliveries (
    id              BLOB PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL,
    webhook_id      BLOB NOT NULL REFERENCES webhooks (id),
    event_id        BLOB NOT NULL REFERENCES outbox_events (id),
    status          TEXT NOT NULL,      -- pending | delivered | dead | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    locked_until    TEXT,               -- a worker's lease; expires if the worker dies
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    id          BLOB PRIMARY KEY NOT NULL,
    delivery_id BLOB NOT NULL REFERENCES webhook_deliveries (id),
    at          TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
