-- Start-of-session safety checks (SAFE-1..3, CONN-2). A check is a record of what the
-- clinician confirmed and what the service answered; it is never changed afterwards.
CREATE TABLE session_checks (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    subject          text NOT NULL,
    body             jsonb NOT NULL,     -- the check as sent (location stored only as given)
    outcome          text NOT NULL,      -- proceed | proceed_with_actions | do_not_proceed
    result           jsonb NOT NULL,     -- the computed outcome, actions and on_disconnect
    protocol_version bigint,             -- the safety protocol version used, if any
    plan_version     bigint,             -- the plan version used, if any
    created_at       timestamptz NOT NULL,
    created_by       text NOT NULL
);
CREATE INDEX session_checks_by_subject ON session_checks (tenant, subject, id);

CREATE TABLE session_disconnections (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    session_check_id uuid NOT NULL REFERENCES session_checks (id),
    occurred_at      timestamptz NOT NULL,
    recorded_by      text NOT NULL,
    body             jsonb NOT NULL
);
CREATE INDEX session_disconnections_by_check ON session_disconnections (session_check_id, id);
