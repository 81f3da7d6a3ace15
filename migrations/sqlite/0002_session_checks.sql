-- Start-of-session safety checks (SAFE-1..3, CONN-2). A check is a record of what the
-- clinician confirmed and what the service answered; it is never changed afterwards.
CREATE TABLE session_checks (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,      -- the check as sent (location stored only as given)
    outcome          TEXT NOT NULL,      -- proceed | proceed_with_actions | do_not_proceed
    result           TEXT NOT NULL,      -- the computed outcome, actions and on_disconnect
    protocol_version INTEGER,            -- the safety protocol version used, if any
    plan_version     INTEGER,            -- the plan version used, if any
    created_at       TEXT NOT NULL,
    created_by       TEXT NOT NULL
);
CREATE INDEX session_checks_by_subject ON session_checks (tenant, subject, id);

CREATE TABLE session_disconnections (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    session_check_id BLOB NOT NULL REFERENCES session_checks (id),
    occurred_at      TEXT NOT NULL,
    recorded_by      TEXT NOT NULL,
    body             TEXT NOT NULL
);
CREATE INDEX session_disconnections_by_check ON session_disconnections (session_check_id, id);
