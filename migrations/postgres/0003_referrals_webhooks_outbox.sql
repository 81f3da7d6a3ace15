-- Face-to-face fallback referrals (F2F-1), versioned like plans. `status` and `due_by` are
-- columns so lists and the overdue sweeper filter in SQL; `overdue_emitted` makes the
-- `referral.overdue` event fire once however many instances sweep.
CREATE TABLE referrals (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    subject         text NOT NULL,
    version         bigint NOT NULL,
    body            jsonb NOT NULL,
    status          text NOT NULL,
    due_by          timestamptz NOT NULL,
    overdue_emitted boolean NOT NULL DEFAULT FALSE,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX referrals_by_tenant ON referrals (tenant, id);
CREATE INDEX referrals_by_subject ON referrals (tenant, subject, id);
CREATE INDEX referrals_open_by_due ON referrals (status, due_by);

CREATE TABLE referral_versions (
    record_id   uuid NOT NULL REFERENCES referrals (id),
    tenant      text NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Idempotency-Key: the primary key makes concurrent retries with one key create one thing;
-- the stored response is replayed. Rows older than 48 h are swept.
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    endpoint     text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, endpoint, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Plans: the review date a `plan.review_due` event was last sent for.
ALTER TABLE plans ADD COLUMN review_notified_for date;

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    url         text NOT NULL,
    events      text NOT NULL,          -- ',referral.created,plan.review_due,' for LIKE matching
    secret      text NOT NULL,          -- needed to sign; shown to the client once
    description text,
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    deleted_at  timestamptz                    -- soft delete keeps delivery history readable
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant, id);

-- Transactional outbox: written in the same transaction as the change that caused it.
CREATE TABLE outbox_events (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb NOT NULL
);

-- One row per (event, subscribed webhook), fanned out in the same transaction.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id),
    event_id        uuid NOT NULL REFERENCES outbox_events (id),
    status          text NOT NULL,      -- pending | delivered | dead | cancelled
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,               -- a worker's lease; expires if the worker dies
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    id          uuid PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id),
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    duration_ms bigint NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
