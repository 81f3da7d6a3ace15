-- /readyz and start-up write this one row (and commit) to prove the database can be written:
-- a read-only server or database (default_transaction_read_only, a standby) answers 503.
CREATE TABLE readiness_probe (
    id         integer PRIMARY KEY,
    checked_at timestamptz NOT NULL
);
